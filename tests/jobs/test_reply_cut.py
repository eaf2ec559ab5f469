"""The edges of capping a reply: a secret ending one character past the cap, a partial text
(more of the reply unread) whose tail may start a secret, and a text of exactly the cap."""

from __future__ import annotations

from jobs.reply_text import MAX_REPLY_TEXT_CHARS, capped, text_of_lines

SECRET = "hunter2"  # its longest form, base64 "aHVudGVyMg==", has 12 characters
LONGEST_FORM = 12


def _marker(left_off: int) -> str:
    return f"… [{left_off} more characters]"


def test_a_reply_of_exactly_the_cap_is_kept_whole() -> None:
    assert capped("a" * MAX_REPLY_TEXT_CHARS, []) == "a" * MAX_REPLY_TEXT_CHARS


def test_a_reply_just_over_the_cap_is_cut_at_the_cap() -> None:
    text = "a" * (MAX_REPLY_TEXT_CHARS + 4)
    assert capped(text, [SECRET]) == "a" * MAX_REPLY_TEXT_CHARS + _marker(4)


def test_a_secret_that_runs_one_character_past_the_cap_is_left_off_whole() -> None:
    head = "x" * (MAX_REPLY_TEXT_CHARS - len(SECRET) + 1)
    assert capped(head + SECRET + "y" * 100, [SECRET]) == head + _marker(len(SECRET) + 100)


def test_a_partial_text_keeps_all_it_has_when_no_secret_can_start_in_its_tail() -> None:
    assert capped("a" * 100, [], unread=5) == "a" * 100 + _marker(5)


def test_a_partial_text_stops_where_a_secret_could_still_begin() -> None:
    # The last characters may start a secret that goes on in the unread part: they are left off.
    text = "a" * 100 + "hunt"
    kept = len(text) - (LONGEST_FORM - 1)
    assert capped(text, [SECRET], unread=50) == "a" * kept + _marker(len(text) - kept + 50)


def test_a_secret_at_the_start_of_a_short_partial_text_is_left_off_whole() -> None:
    # 15 characters: the cut falls 4 characters in, inside the secret that starts the text.
    text = SECRET + "x" * 8
    assert capped(text, [SECRET], unread=100) == _marker(len(text) + 100)
    assert capped("hu", [SECRET], unread=10) == _marker(12)


def test_a_long_multibyte_line_keeps_the_cap_in_characters() -> None:
    # Four bytes a character: the most of the line that is decoded must still fill the cap.
    line = ("\U0001f600" * 5000).encode()
    kept = text_of_lines([line], [SECRET])
    assert kept.startswith("\U0001f600" * MAX_REPLY_TEXT_CHARS + "… [")
