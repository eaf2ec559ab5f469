"""Every row of the reply table, its example served over a real socket at the row's step.

The example reaches the check the way a provider's reply would: over implicit TLS, from a
server whose certificate names the provider's host, which --resolve (CheckOptions.pins) points
at loopback. So a provider's row is proven at that provider's host name, and the verdict, the
retry advice and the kept reply are the ones a user would see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from jobs.errors import Reply
from jobs.replies import matching_rule
from jobs.reply_rules import RULES, ReplyRule
from tests.jobs.served import PASSWORD, provider_cert, provider_host, serve_reply
from tests.servers.certs import ServerCert
from tests.servers.fakes import FakeServer

__all__ = ["provider_cert"]  # a fixture, used by name


def _ids(rules: tuple[ReplyRule, ...]) -> Iterator[str]:
    for number, rule in enumerate(rules):
        yield f"{number:02d}-{rule.protocol}-{rule.reason}"


@pytest.mark.parametrize("rule", RULES, ids=list(_ids(RULES)))
async def test_each_rule_holds_over_a_real_socket(
    fake_server: Callable[..., FakeServer], provider_cert: ServerCert, ca_file: str, rule: ReplyRule
) -> None:
    host = provider_host(rule.provider, rule.protocol)
    result, script = await serve_reply(
        fake_server, provider_cert, ca_file, rule.protocol, rule.served_at, rule.example, host
    )
    assert (result.status, result.reason, result.failed_step) == ("failed", rule.reason, rule.served_at)
    assert result.retryable is rule.retryable
    assert (result.retry_after_s is not None) is rule.backoff
    # The server's words are kept for the user, without the password or its encodings.
    assert result.reply_text and PASSWORD not in result.model_dump_json()
    assert any(rule.served_at.upper() in command.upper() for command in script.commands)


@pytest.mark.parametrize("rule", RULES, ids=list(_ids(RULES)))
def test_each_rule_is_the_one_its_example_reaches(rule: ReplyRule) -> None:
    """No earlier row shadows a row: each example is decided by its own row."""
    lines = rule.example.replace("{command}", "AUTH PLAIN").splitlines()
    if rule.protocol == "smtp":
        code = int(lines[0][:3])
        reply = Reply(code=code, text="\n".join(line[4:] for line in lines))
    else:
        last = lines[-1]
        status = "BYE" if last.startswith("* BYE") else last.split(" ", 1)[0]
        reply = Reply(status=status, text=" ".join(lines))
    assert matching_rule(rule.protocol, rule.served_at, reply, rule.provider) is rule


def test_every_row_says_where_such_a_reply_was_seen() -> None:
    assert all(rule.seen.strip() and rule.example.strip() for rule in RULES)
