"""Reading many requests from one file: JSON lines, or a CSV with the request's field names."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.request import RequestError, ValidationRequest, parse_request

CSV_SUFFIXES = {".csv"}
HEADER_LINE = 1
REQUEST_FIELDS = frozenset(ValidationRequest.model_fields)
SECRET_COLUMNS = frozenset({"smtp_password", "imap_password"})


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


def _lines(text: str) -> list[str]:
    # Newlines only: str.splitlines() also splits at U+2028, U+0085 and other separators, which
    # JSON allows raw inside a string (a password may hold one) and editors do not count as lines.
    return text.split("\n")


def _looks_like_json_lines(text: str) -> bool:
    first = next((line.strip() for line in _lines(text) if line.strip()), "")
    return first.startswith("{")


def _parse(line: int, raw: str | dict[str, Any], rows: Rows) -> None:
    try:
        rows.requests.append((line, parse_request(raw)))
    except RequestError as exc:
        rows.bad.append(BadRow(line, [str(p) for p in exc.problems]))


def read_rows(path: Path, text: str) -> Rows:
    rows = Rows([], [])
    if path.suffix.lower() not in CSV_SUFFIXES and _looks_like_json_lines(text):
        for number, line in enumerate(_lines(text), start=1):
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
            _parse(reader.line_num, fields, rows)
    return rows


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
