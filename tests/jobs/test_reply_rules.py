"""How one row of the reply table matches a reply, and the wait a verdict carries."""

from __future__ import annotations

from jobs.errors import Reason, Reply
from jobs.replies import judge, suggested_backoff_s
from jobs.reply_rules import ReplyRule
from jobs.steps import Step


def _rule(code: str | None = None, text: str | None = None) -> ReplyRule:
    return ReplyRule(
        protocol="imap",
        reason=Reason.TOO_MANY_ATTEMPTS,
        retryable=True,
        example="",
        seen="",
        code=code,
        text=text,
    )


def _matches(rule: ReplyRule, code: str, text: str) -> bool:
    return rule.matches("imap", Step.LOGIN, None, code, None, text)


def test_a_code_matches_whole_and_in_any_case() -> None:
    rule = _rule(code="NO|BAD")
    assert _matches(rule, "NO", "")
    assert _matches(rule, "bad", "")
    assert not _matches(rule, "NOT", "")
    assert not _matches(rule, "BYE", "")


def test_a_phrase_is_found_in_any_case_and_across_lines() -> None:
    rule = _rule(text=r"too many.*connections")
    assert _matches(rule, "NO", "[LIMIT] Too many\r\nsimultaneous CONNECTIONS")
    assert not _matches(rule, "NO", "too few connections")


def test_a_rule_without_code_or_phrase_matches_any_reply() -> None:
    assert _matches(_rule(), "BYE", "anything at all")
    assert _matches(_rule(), "", "")


def test_a_wait_is_read_only_where_the_row_says_the_reply_names_one() -> None:
    text = "Too many simultaneous connections. Suggested Backoff Time: 5000 milliseconds"
    assert judge("imap", Step.LOGIN, Reply(status="NO", text=text), Reason.INVALID_CREDENTIALS) == (
        Reason.TOO_MANY_CONNECTIONS,
        None,
    )


def test_a_suggested_wait_under_a_second_is_kept() -> None:
    assert suggested_backoff_s("Suggested Backoff Time: 500 milliseconds") == 0.5
    assert suggested_backoff_s("Suggested Backoff Time: 0 milliseconds") is None
