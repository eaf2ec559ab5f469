"""`inboxcheck validate --resolve` and INBOXCHECK_RESOLVE: a provider's host names reach a local
server, and the verdict is the provider's."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from jobs.steps import Step
from tests.jobs.checks import CLOSED_PORT, LOOPBACK
from tests.jobs.served import provider_cert
from tests.servers.certs import ServerCert
from tests.servers.fakes import FakeServer, SmtpScript
from tests.servers.replies import ReplyAt
from tests.worker.support import run_cli
from worker.settings import Settings

__all__ = ["provider_cert"]  # a fixture, used by name


def test_validate_pins_a_providers_hosts_from_the_flag_and_the_environment(
    fake_server: Callable[..., FakeServer], provider_cert: ServerCert, ca_file: str, tmp_path: Path
) -> None:
    smtp = fake_server(
        ReplyAt("smtp", Step.AUTH, "534 5.7.9 Please use a stronger mechanism"),
        ssl_context=provider_cert.ssl_context,
    )
    imap = fake_server(
        ReplyAt("imap", Step.LOGIN, "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"),
        ssl_context=provider_cert.ssl_context,
    )
    request = tmp_path / "r.json"
    request.write_text(
        json.dumps(
            {
                "inbox_type": "CUSTOM_SMTP",
                "email": "ann@gmail.com",
                "smtp_password": "not-the-password",
                "smtp_host": "smtp.gmail.com",
                "smtp_port": smtp.port,
                "smtp_security": "ssl",
                "imap_host": "imap.gmail.com",
                "imap_port": imap.port,
            }
        )
    )
    args = ["validate", "--request", str(request), "--ca-file", ca_file]
    args += ["--resolve", f"imap.gmail.com:{imap.port}:{LOOPBACK}"]
    env = {**os.environ, "INBOXCHECK_RESOLVE": f"smtp.gmail.com:{smtp.port}:{LOOPBACK}"}
    run = run_cli(*args, "--json", env=env)
    assert run.returncode == 1, run.stderr
    data = json.loads(run.stdout)["data"]
    # Gmail's bare 534 5.7.9 is its app-password reply; elsewhere it would mean "mechanism too weak".
    assert (data["provider"], data["reason"]) == ("GOOGLE", "APP_PASSWORD_REQUIRED")
    assert "App passwords" in data["resolution"]
    assert (data["smtp"]["host"], data["imap"]["reason"]) == ("smtp.gmail.com", "INVALID_CREDENTIALS")
    readable = run_cli(*args, env=env)
    assert readable.returncode == 1 and "Provider: GOOGLE" in readable.stdout


def test_a_bad_pin_is_exit_2_naming_the_flag_or_the_variable(tmp_path: Path) -> None:
    flag = run_cli("validate", "--inbox-type", "CUSTOM_SMTP", "--resolve", "imap.gmail.com:993")
    assert flag.returncode == 2 and "--resolve" in flag.stderr and "HOST:PORT:ADDRESS" in flag.stderr
    variable = run_cli(
        "validate",
        "--inbox-type",
        "CUSTOM_SMTP",
        env={**os.environ, "INBOXCHECK_RESOLVE": "imap.gmail.com:993:nope"},
    )
    assert variable.returncode == 2 and "INBOXCHECK_RESOLVE" in variable.stderr
    assert "Traceback" not in flag.stderr + variable.stderr


def test_the_worker_takes_its_pins_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "INBOXCHECK_RESOLVE", "imap.gmail.com:993:192.0.2.7, smtp.gmail.com:465:[2001:db8::25]"
    )
    pins = Settings().check_options().pins
    assert dict(pins) == {("imap.gmail.com", 993): ("192.0.2.7",), ("smtp.gmail.com", 465): ("2001:db8::25",)}


def test_a_flags_entry_replaces_the_variables_for_its_host_and_port(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    # The variable's address reaches the server; the flag's, 127.0.0.2, has nothing listening.
    # Merged, the check would fall through to the variable's and log in; replaced, it is refused.
    script = SmtpScript()
    smtp = fake_server(script)
    request = tmp_path / "r.json"
    request.write_text(
        json.dumps(
            {
                "inbox_type": "CUSTOM_SMTP",
                "email": "ann@pinned.invalid",
                "smtp_password": "not-the-password",
                "smtp_host": "smtp.pinned.invalid",
                "smtp_port": smtp.port,
                "smtp_security": "none",
                "allow_insecure_auth": True,
                "imap_host": LOOPBACK,
                "imap_port": CLOSED_PORT,
            }
        )
    )
    entry = f"smtp.pinned.invalid:{smtp.port}"
    env = {**os.environ, "INBOXCHECK_RESOLVE": f"{entry}:{LOOPBACK}"}
    args = ["validate", "--request", str(request), "--json"]
    from_variable = run_cli(*args, env=env)
    assert from_variable.returncode == 1, from_variable.stderr
    assert json.loads(from_variable.stdout)["data"]["smtp"]["reason"] == "INVALID_CREDENTIALS"
    assert script.auth_attempts == 1
    replaced = run_cli(*args, "--resolve", f"{entry}:127.0.0.2", env=env)
    assert replaced.returncode == 1, replaced.stderr
    smtp_section = json.loads(replaced.stdout)["data"]["smtp"]
    assert (smtp_section["reason"], smtp_section["host"]) == ("CONNECTION_REFUSED", "smtp.pinned.invalid")
    assert script.auth_attempts == 1
