"""Hypothesis strategies for input from outside: JSON of any shape, hostile text, secrets."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Every generated secret starts with this, so a test can tell an echo of it from chance.
SECRET_MARK = "Sx9-"

# Control characters, line and paragraph separators, bidi overrides, a BOM, surrogates' neighbours,
# combining marks and emoji: what breaks terminals, CSV readers, header parsers and naive splits.
ODD_CHARACTERS = (
    "\x00\x01\x07\x08\t\n\x0b\x0c\r\x1b\x7f\x85\xa0\u2028\u2029\u202e\u200b\ufeff\ufffd\u0301é\U0001f600"
)


def hostile_text(max_size: int = 200) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(ODD_CHARACTERS) | st.characters(), max_size=max_size)


def secrets() -> st.SearchStrategy[str]:
    """Passwords and tokens as users have them: any characters at all after a marker."""
    return hostile_text(max_size=60).map(lambda tail: SECRET_MARK + tail)


def any_json(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Any JSON value: nested lists and objects of every scalar type."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**80), 2**80)
        | st.floats(allow_nan=False, allow_infinity=False)
        | hostile_text(max_size=40)
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=5) | st.dictionaries(hostile_text(max_size=20), children, max_size=5)
        ),
        max_leaves=max_leaves,
    )
