"""Capping a server's reply text: the head kept, the cut marked, no part of a secret left behind."""

from __future__ import annotations

import base64

import pytest

from jobs.reply_text import MAX_REPLY_TEXT_CHARS, capped, text_of_lines
from tests.jobs.checks import leaked_part, split_marker

SECRET = "Leak-Me-Not-42"


def test_a_short_reply_is_only_scrubbed() -> None:
    assert capped(f"535 5.7.8 rejected {SECRET}", [SECRET]) == "535 5.7.8 rejected ***"


def test_a_long_reply_keeps_its_head_and_says_how_much_was_left_off() -> None:
    text = "[AUTHENTICATIONFAILED] Invalid credentials " + "x" * 10_000
    head, left_off = split_marker(capped(text, []))
    assert head == text[:MAX_REPLY_TEXT_CHARS]
    assert left_off == len(text) - MAX_REPLY_TEXT_CHARS


QUOTED_SECRET = 'Leak"Me\\Not'  # sent in LOGIN as the IMAP quoted string "Leak\"Me\\Not"


@pytest.mark.parametrize(
    ("secret", "form"),
    [
        (SECRET, SECRET),
        (SECRET, base64.b64encode(SECRET.encode()).decode()),
        (QUOTED_SECRET, 'Leak\\"Me\\\\Not'),
    ],
    ids=["plain", "base64", "imap-quoted"],
)
@pytest.mark.parametrize("offset", [1, 5, 10], ids=lambda n: f"{n}-before-the-cut")
def test_a_secret_across_the_cut_leaves_no_part_behind(secret: str, form: str, offset: int) -> None:
    text = "." * (MAX_REPLY_TEXT_CHARS - offset) + form + "." * 5_000
    head, left_off = split_marker(capped(text, [secret]))
    assert head == "." * (MAX_REPLY_TEXT_CHARS - offset)  # cut where the secret starts
    assert left_off == len(text) - len(head)
    assert leaked_part(head, form) is None


def test_a_reply_that_repeats_the_secret_leaves_no_part_behind() -> None:
    # Scrubbing a window past the cap and then cutting would fail here: each mask is shorter than
    # the secret it replaces, pulling the part of a secret at the window's end inside the cap.
    text = "NO " + SECRET * 2_000
    head, left_off = split_marker(capped(text, [SECRET]))
    assert left_off is not None and head.startswith("NO ***")
    assert set(head[3:]) == {"*"} and leaked_part(head, SECRET) is None


def test_overlapping_occurrences_of_a_secret_leave_no_part_behind() -> None:
    secret = "abab"
    head, _ = split_marker(capped("ab" * 5_000, [secret]))
    assert "aba" not in head and "bab" not in head


def test_lines_are_joined_by_spaces_skipping_empty_ones() -> None:
    assert text_of_lines([b"[WEBALERT https://x.test/] Web login required", b"", b"Failure"], []) == (
        "[WEBALERT https://x.test/] Web login required Failure"
    )


def test_a_huge_line_is_cut_without_decoding_it_whole() -> None:
    lines = [b"[AUTHENTICATIONFAILED] Invalid credentials", b"x" * (16 * 1024 * 1024)]
    head, left_off = split_marker(text_of_lines(lines, [SECRET]))
    assert head.startswith("[AUTHENTICATIONFAILED] Invalid credentials x")
    assert len(head) == MAX_REPLY_TEXT_CHARS
    assert left_off == sum(map(len, lines)) + 1 - MAX_REPLY_TEXT_CHARS  # ASCII: bytes are characters


def test_a_secret_beyond_the_decoded_part_still_cannot_leak() -> None:
    # The decoded part ends inside a secret; the cut stays clear of what was not decoded.
    lines = [b"NO", SECRET.encode() * (1024 * 1024)]
    head, _ = split_marker(text_of_lines(lines, [SECRET]))
    assert head.startswith("NO ***") and leaked_part(head, SECRET) is None


def test_multibyte_text_is_cut_on_whole_characters() -> None:
    head, left_off = split_marker(text_of_lines(["€".encode() * 100_000], []))
    assert head == "€" * MAX_REPLY_TEXT_CHARS and left_off
