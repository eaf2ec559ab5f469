"""Reading many requests from one file: JSON lines, or a CSV with the request's field names (the
oauth2 object's as oauth2.<name> columns)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.oauth2_request import OAuth2Credentials
from jobs.request import RequestError, ValidationRequest, parse_request
from worker.messages.payload import OAUTH2_SECRETS

CSV_SUFFIXES = {".csv"}
HEADER_LINE = 1
# The oauth2 object's fields are columns of their own: oauth2.client_id, oauth2.refresh_token, ...
OAUTH2_PREFIX = "oauth2."
OAUTH2_COLUMNS = frozenset(OAUTH2_PREFIX + name for name in OAuth2Credentials.model_fields)
REQUEST_FIELDS = frozenset(ValidationRequest.model_fields) - {"oauth2"} | OAUTH2_COLUMNS
SECRET_COLUMNS = frozenset({"smtp_password", "imap_password"}) | {
    OAUTH2_PREFIX + name for name in OAUTH2_SECRETS
}


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    problems: list[str]

    def __str__(self) -> str:
        return f"line {self.line}: " + "; ".join(self.problems)


@dataclass(frozen=True, slots=True)
class Rows:
    requests: list[tuple[int, ValidationRequest]]
    bad: list[BadRow]


def _looks_like_json_lines(text: str) -> bool:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first.startswith("{")


def _parse(line: int, raw: str | dict[str, Any], rows: Rows) -> None:
    try:
        rows.requests.append((line, parse_request(raw)))
    except RequestError as exc:
        rows.bad.append(BadRow(line, [str(p) for p in exc.problems]))


def read_rows(path: Path, text: str) -> Rows:
    rows = Rows([], [])
    if path.suffix.lower() not in CSV_SUFFIXES and _looks_like_json_lines(text):
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                _parse(number, line, rows)
        return rows
    reader = csv.DictReader(io.StringIO(text))
    header_problems = _header_problems(reader.fieldnames or [])
    if header_problems:
        # Without a usable header every row would be misread; its cells may be passwords, so
        # columns are named by position, never by what the first line holds.
        rows.bad.append(BadRow(HEADER_LINE, header_problems))
        return rows
    for record in reader:
        # Empty cells mean "not given" (the preset or default applies), not an empty string.
        fields = {
            name.strip(): _cell(name.strip(), value)
            for name, value in record.items()
            if name and value is not None and value.strip()
        }
        extra = record.get(None)
        if extra:
            rows.bad.append(BadRow(reader.line_num, ["row: has more cells than the header"]))
            continue
        if fields:
            _parse(reader.line_num, _nested(fields), rows)
    return rows


def _nested(fields: dict[str, str]) -> dict[str, Any]:
    """The oauth2.* columns as the request's oauth2 object (its scopes space-separated)."""
    request: dict[str, Any] = {k: v for k, v in fields.items() if not k.startswith(OAUTH2_PREFIX)}
    oauth2: dict[str, Any] = {
        k.removeprefix(OAUTH2_PREFIX): v for k, v in fields.items() if k.startswith(OAUTH2_PREFIX)
    }
    if "scopes" in oauth2:
        oauth2["scopes"] = oauth2["scopes"].split()
    if oauth2:
        request["oauth2"] = oauth2
    return request


def _cell(name: str, value: str) -> str:
    # A password is taken exactly as written: spaces may be part of it, and a trimmed one would
    # cost a failed login at the provider.
    return value if name in SECRET_COLUMNS else value.strip()


def _header_problems(names: Sequence[str]) -> list[str]:
    known = [name.strip() in REQUEST_FIELDS for name in names]
    if not any(known):
        return [
            "header: the first line names no request field; it must name the columns "
            "(inbox_type, email, smtp_password, ...)"
        ]
    return [f"column {number}: is not a request field" for number, ok in enumerate(known, start=1) if not ok]
