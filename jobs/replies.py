"""What real providers answer when a login fails, and what each answer means.

Rules match the stable parts of a reply (codes, bracketed IMAP response codes, key phrases),
never whole lines: providers reword their texts, not their codes. First match wins, so the
specific rules stand before the generic ones.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from jobs.errors import Reason, Reply
from jobs.presets import InboxType, provider_of
from jobs.time_units import MS_PER_S, SECONDS_PER_DAY


@dataclass(frozen=True, slots=True)
class Rule:
    pattern: re.Pattern[str]
    reason: Reason


def _rule(pattern: str, reason: Reason) -> Rule:
    return Rule(re.compile(pattern, re.IGNORECASE | re.DOTALL), reason)


# Matched against "<code> <enhanced code> <text>" of an SMTP AUTH reply.
SMTP_AUTH_RULES: tuple[Rule, ...] = (
    _rule(r"\b5\.7\.9\b|application-specific password", Reason.APP_PASSWORD_REQUIRED),
    _rule(r"SmtpClientAuthentication is disabled", Reason.SMTP_AUTH_DISABLED),
    _rule(r"basic authentication is disabled", Reason.BASIC_AUTH_DISABLED),
    # Exchange Online once password SMTP AUTH is off for the tenant (from the end of 2026).
    _rule(r"\b5\.7\.30\b|basic authentication is not supported", Reason.BASIC_AUTH_DISABLED),
    # Yahoo says "too many bad attempts" but means the account needs an app password.
    _rule(r"#AUTH005", Reason.APP_PASSWORD_REQUIRED),
    _rule(r"too many (login|authentication) attempts|^454 4\.7\.0", Reason.TOO_MANY_ATTEMPTS),
    _rule(r"^50[34]\b|unrecognized authentication type|mechanism", Reason.AUTH_MECHANISM_UNSUPPORTED),
    _rule(r"^4\d\d\b", Reason.TEMPORARY_AUTH_FAILURE),
    _rule(r"^5\d\d\b", Reason.INVALID_CREDENTIALS),
)

# Matched against the text of a failed IMAP LOGIN, untagged lines included.
IMAP_LOGIN_RULES: tuple[Rule, ...] = (
    _rule(r"application-specific password", Reason.APP_PASSWORD_REQUIRED),
    _rule(r"\[WEBALERT|web login required|log in via your web browser", Reason.WEB_LOGIN_REQUIRED),
    _rule(r"not enabled for IMAP use|IMAP access is disabled", Reason.IMAP_DISABLED),
    _rule(r"basic authentication is disabled", Reason.BASIC_AUTH_DISABLED),
    _rule(r"too many simultaneous connections|maximum number of connections", Reason.TOO_MANY_CONNECTIONS),
    _rule(r"request is throttled|too many login attempts", Reason.TOO_MANY_ATTEMPTS),
    _rule(r"\[UNAVAILABLE\]|\[INUSE\]|temporary", Reason.TEMPORARY_AUTH_FAILURE),
)

_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
# Microsoft states it in milliseconds, the only unit this reply uses; the unit is not required, so
# a number long enough to run past the capped reply text still reads (as a very long wait).
_BACKOFF = re.compile(r"Suggested Backoff Time:\s*(\d+)", re.IGNORECASE)
# The longest wait a server's suggestion is taken at, here and wherever it is acted on: the reply
# is the server's to write, and a wait past Redis's range (a PX) fails the write that pauses the
# host, while anything between a day and that would silence a host for years.
MAX_BACKOFF_S = float(SECONDS_PER_DAY)


def enhanced_code(text: str) -> str | None:
    """The RFC 3463 enhanced status code in an SMTP reply text, if any."""
    match = _ENHANCED.search(text)
    return match.group(1) if match else None


def bounded_backoff_s(seconds: float | None) -> float | None:
    """A suggested wait fit to act on: at most MAX_BACKOFF_S; None for no wait, or for one that
    is no positive finite number."""
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        return None
    return min(seconds, MAX_BACKOFF_S)


def suggested_backoff_s(text: str) -> float | None:
    """Microsoft's IMAP throttling reply names how long to wait (bounded_backoff_s)."""
    match = _BACKOFF.search(text)
    if match is None:
        return None
    # float, not int: any run of digits parses (to inf past float's range, which is a long wait
    # and bounded as one), where int refuses more than 4,300 digits and int / 1000 overflows.
    return bounded_backoff_s(min(float(match.group(1)) / MS_PER_S, MAX_BACKOFF_S))


def classify_smtp_auth(reply: Reply) -> Reason:
    subject = f"{reply.code} {reply.text}"
    for rule in SMTP_AUTH_RULES:
        if rule.pattern.search(subject):
            return rule.reason
    return Reason.INVALID_CREDENTIALS


def password_login_reason(reason: Reason, host: str) -> Reason:
    """A refused password LOGIN at Microsoft 365's IMAP host says nothing of the password:
    Microsoft turned password sign-in for IMAP off in every tenant (2022-23), and answers
    `LOGIN failed.` whatever the password."""
    if reason is Reason.INVALID_CREDENTIALS and provider_of(host) is InboxType.OUTLOOK_365:
        return Reason.BASIC_AUTH_DISABLED
    return reason


def classify_imap_login(reply: Reply) -> Reason:
    for rule in IMAP_LOGIN_RULES:
        if rule.pattern.search(reply.text):
            return rule.reason
    return Reason.INVALID_CREDENTIALS
