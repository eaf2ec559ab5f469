"""INBOXCHECK_DNS_SERVERS for every command: `inboxcheck validate` asks the named server, and a
bad value is refused naming the variable."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from tests.servers.dns import DnsServer
from tests.worker.support import run_cli

MISSING_HOST = "no-such-host.invalid"


def test_validate_asks_the_named_dns_server(dns_server: Callable[..., DnsServer]) -> None:
    dns = dns_server()
    host, port = dns.address
    run = run_cli(
        "validate",
        "--inbox-type",
        "CUSTOM_SMTP",
        "--email",
        "ann@inboxcheck.test",
        "--smtp-host",
        MISSING_HOST,
        "--smtp-port",
        "587",
        "--imap-host",
        MISSING_HOST,
        "--imap-port",
        "993",
        "--json",
        env={**os.environ, "INBOXCHECK_DNS_SERVERS": f"{host}:{port}", "INBOXCHECK_SMTP_PASSWORD": "pw"},
    )
    assert run.returncode == 1, run.stderr
    data = json.loads(run.stdout)["data"]
    assert (data["error_code"], data["smtp"]["reason"], data["imap"]["reason"]) == (
        "HOST_NOT_FOUND",
        "NO_SUCH_HOST",
        "NO_SUCH_HOST",
    )
    assert (MISSING_HOST, "A") in dns.questions


def test_a_bad_dns_server_is_exit_2_naming_the_variable() -> None:
    run = run_cli(
        "validate",
        "--inbox-type",
        "CUSTOM_SMTP",
        env={**os.environ, "INBOXCHECK_DNS_SERVERS": "127.0.0.1,dns.example"},
    )
    assert run.returncode == 2
    assert "INBOXCHECK_DNS_SERVERS" in run.stderr and "'dns.example'" in run.stderr
    assert "Traceback" not in run.stderr
