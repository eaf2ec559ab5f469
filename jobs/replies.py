"""What a server's refusal means: the reply table (jobs.reply_rules) applied, and the waits a
reply suggests.

Rules match the stable parts of a reply (codes, bracketed IMAP response codes, key phrases),
never whole lines: providers reword their texts, not their codes. First match wins, so the
specific rules stand before the generic ones.
"""

from __future__ import annotations

import math
import re

from jobs.errors import Reason, Reply
from jobs.providers import Provider, provider_of_host
from jobs.reply_rules import RULES, Protocol, ReplyRule
from jobs.steps import Step
from jobs.time_units import MS_PER_S, SECONDS_PER_DAY

# A multi-line SMTP reply repeats its enhanced code on each line; a phrase may run across them.
_REPEATED_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\s+")
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


def _one_line(text: str) -> str:
    """An SMTP reply's lines joined as one, each continuation without its repeated enhanced code
    (linear in the text: a server chooses its length, up to the cap)."""
    first, *rest = text.split("\n")
    return " ".join([first.strip(), *(_REPEATED_ENHANCED.sub("", line.strip(), count=1) for line in rest)])


def matching_rule(
    protocol: Protocol, step: Step, reply: Reply, provider: Provider | None = None
) -> ReplyRule | None:
    """The first row of the reply table that `reply`, received at `step`, matches."""
    text = reply.text
    if reply.code is not None:
        code, enhanced = str(reply.code), reply.enhanced_code or enhanced_code(text)
        text = _one_line(text)
    else:
        code, enhanced = reply.status or "", None
    for rule in RULES:
        if rule.matches(protocol, step, provider, code, enhanced, text):
            return rule
    return None


def reason_for(
    protocol: Protocol, step: Step, reply: Reply, fallback: Reason, provider: Provider | None = None
) -> Reason:
    """The matching row's reason, else `fallback`: what a refusal at this step means when its
    words prove nothing more."""
    rule = matching_rule(protocol, step, reply, provider)
    return rule.reason if rule is not None else fallback


def judge(
    protocol: Protocol, step: Step, reply: Reply, fallback: Reason, provider: Provider | None = None
) -> tuple[Reason, float | None]:
    """reason_for(), and the wait the reply suggests when its row reads one (bounded)."""
    rule = matching_rule(protocol, step, reply, provider)
    if rule is None:
        return fallback, None
    return rule.reason, suggested_backoff_s(reply.text) if rule.backoff else None


def classify_smtp_auth(reply: Reply, provider: Provider | None = None) -> Reason:
    return reason_for("smtp", Step.AUTH, reply, Reason.INVALID_CREDENTIALS, provider)


def classify_imap_login(reply: Reply, provider: Provider | None = None) -> Reason:
    return reason_for("imap", Step.LOGIN, reply, Reason.INVALID_CREDENTIALS, provider)


def password_login_reason(reason: Reason, host: str) -> Reason:
    """A refused password LOGIN at Microsoft 365's IMAP host says nothing of the password:
    Microsoft turned password sign-in for IMAP off in every tenant (2022-23), and answers
    `LOGIN failed.` whatever the password."""
    if reason is Reason.INVALID_CREDENTIALS and provider_of_host(host) is Provider.MICROSOFT:
        return Reason.BASIC_AUTH_DISABLED
    return reason
