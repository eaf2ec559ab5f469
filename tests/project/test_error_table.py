"""The README's error table names every reason a check can give, with its error code."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.errors import ERROR_CLASS_BY_REASON, Reason

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
TABLE = README.split("| error_code | reason | what leads to it |", 1)[1].split("\n\n", 1)[0]


@pytest.mark.parametrize("reason", list(ERROR_CLASS_BY_REASON), ids=str)
def test_every_reason_is_in_the_error_table_under_its_code(reason: Reason) -> None:
    rows = TABLE.splitlines()
    row = next((i for i, line in enumerate(rows) if f"`{reason}`" in line), None)
    assert row is not None, f"{reason} is not in the README's error table"
    # The code is written on the first row of its group.
    code = next(
        line.split("|")[1].strip() for line in reversed(rows[: row + 1]) if line.split("|")[1].strip()
    )
    assert code == f"`{ERROR_CLASS_BY_REASON[reason].code}`"
