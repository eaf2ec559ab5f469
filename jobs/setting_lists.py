"""How operators write lists and ports, in environment variables and flags alike."""

from __future__ import annotations

from collections.abc import Iterable

MAX_PORT = 65_535


def entries(value: object, expected: str) -> Iterable[object]:
    """The entries of "a, b, c" (as an environment variable holds them) or of a list; ValueError
    saying what was `expected` for anything else."""
    if isinstance(value, str):
        return value.split(",")
    if isinstance(value, Iterable):
        return value
    raise ValueError(expected)


def parse_port(text: str, entry: str) -> int:
    """A port of `entry`; ValueError naming the entry otherwise (ASCII digits only: "²" is a
    digit to str.isdigit, not to int)."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PORT:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to {MAX_PORT}")
    return int(text)
