"""tests/claims.md maps each README section's statements about behaviour to the tests proving
them: every test it names must exist, and every README section must be in it, so renaming a
test or adding a section cannot leave the map silently wrong."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CLAIMS = ROOT / "tests" / "claims.md"

# The README's text before its first section has no heading of its own.
OPENING = "Before the first section"
NOT_BEHAVIOUR = "Not behaviour:"
# `tests/x/test_y.py::test_name`, or `...::test_name[param]` for one case of a parametrised test.
NODE_ID = re.compile(r"`(tests/[\w/]+\.py)::(\w+(?:::\w+)?)(?:\[[^`\]]*\])?`")
HEADING = re.compile(r"^#{2,3} (.+?)\s*$")


def headings(text: str) -> list[str]:
    """The `##` and `###` headings of a markdown text, outside fenced code."""
    found: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := HEADING.match(line)):
            found.append(match.group(1))
    return found


def claim_sections() -> dict[str, list[str]]:
    """The map's sections: heading -> its lines that are claims or a not-behaviour note."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in CLAIMS.read_text(encoding="utf-8").splitlines():
        if match := HEADING.match(line):
            current = sections.setdefault(match.group(1), [])
        elif current is not None and line.startswith(("- ", NOT_BEHAVIOUR)):
            current.append(line)
    return sections


@cache
def collected_tests(path: str) -> frozenset[str]:
    """The test functions pytest collects from a file: module level and in Test classes."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names.update(
                f"{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name.startswith("test")
            )
    return frozenset(names)


def test_every_readme_section_is_in_the_map() -> None:
    readme = headings(README.read_text(encoding="utf-8"))
    mapped = claim_sections()
    assert [name for name in readme if name not in mapped] == []
    assert [name for name in mapped if name not in readme and name != OPENING] == [], "renamed or removed"


def test_every_section_states_its_claims_or_that_it_has_none() -> None:
    empty = [name for name, lines in claim_sections().items() if not lines]
    assert empty == []
    for name, lines in claim_sections().items():
        notes = [line for line in lines if line.startswith(NOT_BEHAVIOUR)]
        assert not (notes and len(notes) < len(lines)), f"{name}: claims and a not-behaviour note"


def test_every_claim_names_a_test() -> None:
    untested = [
        f"{name}: {line}"
        for name, lines in claim_sections().items()
        for line in lines
        if line.startswith("- ") and not NODE_ID.search(line)
    ]
    assert untested == []


@pytest.mark.parametrize("section", sorted(claim_sections()))
def test_every_test_the_map_names_exists(section: str) -> None:
    missing = []
    for line in claim_sections()[section]:
        for path, name in NODE_ID.findall(line):
            if not (ROOT / path).is_file() or name not in collected_tests(path):
                missing.append(f"{path}::{name}")
    assert missing == []


def test_the_map_reads_test_files_as_pytest_collects_them(tmp_path: Path) -> None:
    """The checks above are only as good as this reading of a test file."""
    sample = ROOT / "tests" / "project" / "test_claims.py"
    assert "test_the_map_reads_test_files_as_pytest_collects_them" in collected_tests(
        str(sample.relative_to(ROOT))
    )
    assert "headings" not in collected_tests(str(sample.relative_to(ROOT)))
    line = "- x: `tests/jobs/test_pins.py::test_the_lowest_and_highest_ports_are_accepted[1]`, `tests/a.py::test_b`"
    assert NODE_ID.findall(line) == [
        ("tests/jobs/test_pins.py", "test_the_lowest_and_highest_ports_are_accepted"),
        ("tests/a.py", "test_b"),
    ]
    assert headings("## A\n```sh\n## not a heading\n```\n### B `--c`\n#### D") == ["A", "B `--c`"]
