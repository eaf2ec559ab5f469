"""What `inboxcheck enqueue --wait` tells a person about each kind of event: the exit code, the
outcome label of the bulk summary, and the human lines."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from tests.worker import event_samples as samples
from worker.cli import client
from worker.cli.enqueue import _print_event_human, _summary
from worker.messages import events

WRONG_PASSWORD = samples.completed(
    "invalid", error_code="AUTH_FAILED", reason="INVALID_CREDENTIALS", resolution="Check the password."
)


def printed(event: events.TerminalEvent) -> str:
    out = io.StringIO()
    _print_event_human(event, Console(file=out, width=200, color_system=None))
    return out.getvalue()


@pytest.mark.parametrize(
    "event,code,label",
    [
        (samples.completed(), client.EXIT_VALID, "valid"),
        (WRONG_PASSWORD, client.EXIT_INVALID, "AUTH_FAILED / INVALID_CREDENTIALS"),
        (samples.failed(), client.EXIT_INVALID, "INTERNAL_ERROR / RuntimeError"),
        (samples.rejected(), client.EXIT_USAGE, "INVALID_REQUEST / SEALED_CREDENTIALS"),
    ],
)
def test_exit_code_and_outcome_label(event: events.TerminalEvent, code: int, label: str) -> None:
    assert (client.exit_code(event), client.outcome(event)) == (code, label)


def test_human_lines_name_the_verdict_and_what_to_do() -> None:
    assert printed(samples.completed()) == "VALID inbox-0: recommended daily limit 20\n"
    assert printed(WRONG_PASSWORD) == (
        "INVALID inbox-0: AUTH_FAILED / INVALID_CREDENTIALS (after 1 attempt(s))\n"
        "What to do: Check the password.\n"
    )
    rejection = events.Rejection(
        inbox_id="inbox-9",
        reason="MALFORMED_PAYLOAD",
        resolution="Fix the producer.",
        problems=["email: bad"],
    )
    assert printed(events.rejected(rejection)) == (
        "REJECTED inbox-9: INVALID_REQUEST / MALFORMED_PAYLOAD (after 1 attempt(s))\n"
        "What to do: Fix the producer.\n"
        "  email: bad\n"
    )
    assert "(after 3 attempt(s))" in printed(samples.failed())


def test_bulk_summary_counts_outcomes() -> None:
    done = {"a": samples.completed(), "b": WRONG_PASSWORD, "c": samples.completed(inbox_id="c")}
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(_summary(done, pending=1, bad=0))
    text = out.getvalue()
    assert "AUTH_FAILED / INVALID_CREDENTIALS" in text and "no event yet" in text
    assert [line.split("│")[2].strip() for line in text.splitlines() if "│ valid" in line] == ["2"]
