"""Server replies fed to the classifier (hypothesis): any bytes a server sends give a bounded,
scrubbed text and a reason, quickly, and a suggested wait that is none or a sane one."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from jobs.bounds import MAX_REPLY_TEXT_CHARS
from jobs.errors import Reason, Reply
from jobs.providers import Provider
from jobs.replies import (
    MAX_BACKOFF_S,
    classify_imap_login,
    classify_smtp_auth,
    enhanced_code,
    judge,
    suggested_backoff_s,
)
from jobs.reply_text import capped, text_of_lines
from jobs.steps import Step
from tests.strategies import SECRET_MARK, hostile_text, secrets

# Pieces of real provider replies, so the rules' patterns are reached, glued to anything.
PHRASES = st.sampled_from(
    [
        "5.7.8 Username and Password not accepted",
        "534-5.7.9 Application-specific password required",
        "[AUTHENTICATIONFAILED]",
        "[ALERT] Please log in via your web browser",
        "LOGIN failed.",
        "Request is throttled. Suggested Backoff Time: ",
        "#AUTH005",
        "454 4.7.0 Too many login attempts",
        "5.7.139 Authentication unsuccessful",
        "9" * 400,
    ]
)
REPLY_TEXT = st.lists(PHRASES | hostile_text(max_size=100), max_size=8).map(" ".join)
LINES = st.lists(st.binary(max_size=300) | REPLY_TEXT.map(str.encode), max_size=12)


@given(LINES, st.lists(secrets(), max_size=3))
def test_any_imap_lines_give_a_bounded_scrubbed_text_and_a_reason(
    lines: list[bytes], kept: list[str]
) -> None:
    echoed = [*lines, *(s.encode() for s in kept)]  # a server echoing the password back
    text = text_of_lines(echoed, kept)
    assert SECRET_MARK not in text
    assert len(text) <= MAX_REPLY_TEXT_CHARS + 40  # the cap and its "… [n more characters]"
    assert isinstance(classify_imap_login(Reply(status="NO", text=text)), Reason)
    wait = suggested_backoff_s(text)
    assert wait is None or (0 < wait <= MAX_BACKOFF_S and math.isfinite(wait))


@given(st.integers(-(2**31), 2**31) | st.none(), REPLY_TEXT, st.lists(secrets(), max_size=2))
def test_any_smtp_reply_gives_a_reason(code: int | None, text: str, kept: list[str]) -> None:
    shown = capped(text + " " + " ".join(kept), kept)
    assert SECRET_MARK not in shown
    assert isinstance(
        classify_smtp_auth(Reply(code=code, text=shown, enhanced_code=enhanced_code(shown))), Reason
    )


@given(
    st.sampled_from(["smtp", "imap"]),
    st.sampled_from(list(Step)),
    st.integers(-(2**31), 2**31) | st.none(),
    st.sampled_from(["NO", "BAD", "BYE", "OK", ""]) | st.none(),
    REPLY_TEXT,
    st.sampled_from(list(Provider)) | st.none(),
)
def test_the_reply_table_judges_any_reply_at_any_step(
    protocol: str, step: Step, code: int | None, status: str | None, text: str, provider: Provider | None
) -> None:
    shown = capped(text, ())
    reply = Reply(code=code, status=status, text=shown, enhanced_code=enhanced_code(shown))
    reason, wait = judge(protocol, step, reply, Reason.PROTOCOL_ERROR, provider)  # type: ignore[arg-type]
    assert isinstance(reason, Reason)
    assert wait is None or (0 < wait <= MAX_BACKOFF_S and math.isfinite(wait))
