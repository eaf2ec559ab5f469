"""The bulk reader against any file (hypothesis): each line is a request or a bad row naming its
line and fields, never an exception, never a password in what is reported."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import SECRET_MARK, any_json, hostile_text, secrets
from worker.cli.bulk_file import REQUEST_FIELDS, read_rows

CSV = Path("inboxes.csv")
JSON_LINES = Path("inboxes.jsonl")
COLUMNS = sorted(REQUEST_FIELDS)


def assert_reported_safely(text: str, path: Path) -> None:
    rows = read_rows(path, text)
    lines = text.count("\n") + 1
    for bad in rows.bad:
        assert 1 <= bad.line <= max(lines, 1) + 1 and bad.problems
        assert SECRET_MARK not in str(bad)
    for line, request in rows.requests:
        assert line >= 1
        assert SECRET_MARK not in repr(request)


@given(st.lists(st.one_of(hostile_text(max_size=80), any_json().map(json.dumps)), max_size=8))
def test_any_json_lines_file_is_read_line_by_line(lines: list[str]) -> None:
    assert_reported_safely("\n".join(["{", *lines]), JSON_LINES)


@given(
    st.lists(st.sampled_from(COLUMNS) | hostile_text(max_size=15), min_size=1, max_size=6),
    st.lists(st.lists(secrets() | hostile_text(max_size=30), max_size=8), max_size=6),
)
def test_any_csv_file_is_read_row_by_row(header: list[str], records: list[list[str]]) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(records)
    assert_reported_safely(out.getvalue(), CSV)


@given(hostile_text(max_size=400))
def test_any_text_as_csv_is_read_or_refused(text: str) -> None:
    assert_reported_safely(text, CSV)


@given(secrets(), st.sampled_from(["smtp_password", "imap_password"]))
def test_a_password_in_a_bad_row_is_never_reported(password: str, column: str) -> None:
    row: dict[str, Any] = {"inbox_type": "CUSTOM_SMTP", "email": "not-an-email", column: password}
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(row))
    writer.writeheader()
    writer.writerow(row)
    for text, path in ((out.getvalue(), CSV), (json.dumps(row), JSON_LINES)):
        rows = read_rows(path, text)
        assert rows.bad and not rows.requests
        assert all(password not in str(bad) for bad in rows.bad)
