"""INBOXCHECK_EHLO_HOSTNAME is the name the SMTP check introduces itself with, over a real socket."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from jobs.smtp_check import check_smtp
from tests.jobs.checks import LOOPBACK_NETWORKS, request
from tests.servers.fakes import FakeServer, SmtpScript
from worker.settings import Settings

# Not "localhost", which is both the engine's own fallback and this machine's FQDN on many hosts.
CHOSEN_NAME = "checker.inboxcheck.test"


async def test_the_ehlo_hostname_setting_is_the_name_sent_in_ehlo(
    fake_server: Callable[..., FakeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INBOXCHECK_ALLOW_NETWORKS", LOOPBACK_NETWORKS)
    monkeypatch.setenv("INBOXCHECK_EHLO_HOSTNAME", CHOSEN_NAME)
    script = SmtpScript(auth_reply="235 2.7.0 Authentication successful")
    server = fake_server(script)
    checked = request(smtp_port=server.port, smtp_security="none", allow_insecure_auth=True)
    result = await check_smtp(checked, Settings().check_options())
    assert result.status == "ok", result.detail
    assert [line for line in script.commands if line.upper().startswith("EHLO")] == [f"EHLO {CHOSEN_NAME}"]
