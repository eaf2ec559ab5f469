"""Redis replies as text, whether the client decodes responses or not."""

from __future__ import annotations


def text_or_none(value: bytes | str | None) -> str | None:
    """A Redis reply as text; None (no such key or field) stays None."""
    return value.decode() if isinstance(value, bytes) else value


def as_text(value: bytes | str | None) -> str:
    """A Redis reply as text; nothing is ""."""
    return text_or_none(value) or ""
