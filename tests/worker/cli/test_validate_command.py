"""`inboxcheck validate` as a person runs it: the JSON event, bad input, passwords from the
environment, and a silent server, with nothing secret anywhere in the output."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

from jobs.bounds import IMAP_MAX_RESPONSE_LINES
from jobs.options import GOODBYE_TIMEOUT_S
from tests.jobs.checks import CLOSED_PORT, LOOPBACK, TIMEOUT_SLACK_S
from tests.servers.certs import PKI
from tests.servers.dovecot import Account, Dovecot
from tests.servers.fakes import FakeServer, ImapScript, SmtpScript, silent
from tests.servers.oauth import OAuthAccount, TokenEndpoint
from tests.servers.smtp import SmtpServer
from tests.worker.support import run_cli as inboxcheck

# A generous bound on starting Python and importing the CLI on a loaded 2-core machine.
INTERPRETER_START_S = 4.0


# Every log line at DEBUG, as JSON: the leak checks read all of them.
VERBOSE = {"INBOXCHECK_LOG_FORMAT": "json", "INBOXCHECK_LOG_LEVEL": "DEBUG"}


def run_cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> CompletedProcess[str]:
    return inboxcheck(*args, stdin=stdin, env={**os.environ, **VERBOSE, **(env or {})})


def mail_flags(fields: dict[str, Any]) -> list[str]:
    """Request fields as validate's flags: {"smtp_port": 25} is --smtp-port 25."""
    return [part for name, value in fields.items() for part in ("--" + name.replace("_", "-"), str(value))]


def write_request(tmp_path: Path, **fields: object) -> str:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(fields))
    return str(path)


def test_cli_json_is_one_event_and_no_secret_anywhere(
    smtp_server: Callable[..., SmtpServer], dovecot: Dovecot, imap_user: Account, ca_file: str, tmp_path: Path
) -> None:
    smtp = smtp_server(users={imap_user.email: imap_user.password})
    fields = {
        "inbox_type": "CUSTOM_SMTP",
        "email": imap_user.email,
        "smtp_password": imap_user.password,
        "smtp_host": LOOPBACK,
        "smtp_port": smtp.port,
        "smtp_security": "starttls",
        "imap_host": LOOPBACK,
        "imap_port": dovecot.imaps_port,
    }
    valid = run_cli(
        "validate", "--request", write_request(tmp_path, **fields), "--json", "--ca-file", ca_file
    )
    assert valid.returncode == 0, valid.stderr
    event = json.loads(valid.stdout)  # exactly one JSON object: json.loads refuses trailing data
    assert event["type"] == "inbox.validation.completed" and event["specversion"] == "1.0"
    assert event["data"]["status"] == "valid" and event["subject"] == imap_user.email

    wrong = {**fields, "smtp_password": "Wr0ng-but-secret", "imap_password": "Wr0ng-but-secret"}
    invalid = run_cli(
        "validate", "--request", write_request(tmp_path, **wrong), "--json", "--ca-file", ca_file
    )
    readable = run_cli("validate", "--request", "-", "--ca-file", ca_file, stdin=json.dumps(wrong))
    assert (invalid.returncode, readable.returncode) == (1, 1)
    assert json.loads(invalid.stdout)["data"]["error_code"] == "AUTH_FAILED"
    assert "INVALID" in readable.stdout and "What to do" in readable.stdout
    for run, secret in (
        (valid, imap_user.password),
        (invalid, "Wr0ng-but-secret"),
        (readable, "Wr0ng-but-secret"),
    ):
        assert secret not in run.stdout + run.stderr
    assert '"inbox_id"' in invalid.stderr  # the debug log really ran, and still held no secret


def test_cli_bad_request_exit_2_names_fields(tmp_path: Path) -> None:
    bad = run_cli(
        "validate",
        "--request",
        write_request(
            tmp_path, inbox_type="CUSTOM_SMTP", email="x@y.test", smtp_port=70000, smtp_password="p4ss-word"
        ),
    )
    assert bad.returncode == 2
    assert "smtp_port" in bad.stderr and "smtp_host" in bad.stderr and "Traceback" not in bad.stderr
    assert "p4ss-word" not in bad.stderr
    not_json = run_cli("validate", "--request", "-", stdin="{oops")
    assert not_json.returncode == 2 and "not valid JSON" in not_json.stderr
    no_password = run_cli("validate", "--inbox-type", "GOOGLE_WORKSPACE", "--email", "a@b.test", stdin="")
    assert no_password.returncode == 2 and "INBOXCHECK_SMTP_PASSWORD" in no_password.stderr


def test_cli_flags_take_password_from_environment(
    smtp_server: Callable[..., SmtpServer], dovecot: Dovecot, imap_user: Account, ca_file: str
) -> None:
    smtp = smtp_server(users={imap_user.email: imap_user.password})
    run = run_cli(
        "validate",
        "--inbox-type",
        "CUSTOM_SMTP",
        "--email",
        imap_user.email,
        "--smtp-host",
        LOOPBACK,
        "--smtp-port",
        str(smtp.port),
        "--smtp-security",
        "starttls",
        "--imap-host",
        LOOPBACK,
        "--imap-port",
        str(dovecot.imap_port),
        "--imap-starttls",
        "--ca-file",
        ca_file,
        "--json",
        env={"INBOXCHECK_SMTP_PASSWORD": imap_user.password},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert imap_user.password not in run.stdout + run.stderr


def test_cli_silent_server_is_timeout_within_limit_plus_one_second(
    fake_server: Callable[..., FakeServer], ca_file: str, tmp_path: Path
) -> None:
    server = fake_server(silent)
    fields = {
        "inbox_type": "CUSTOM_SMTP",
        "email": "a@b.test",
        "smtp_password": "pw",
        "smtp_host": LOOPBACK,
        "smtp_port": server.port,
        "imap_host": LOOPBACK,
        "imap_port": server.port,
    }
    limit = 1.0
    started = time.monotonic()
    run = run_cli(
        "validate", "--request", write_request(tmp_path, **fields), "--json", "--timeout", str(limit)
    )
    elapsed = time.monotonic() - started
    assert run.returncode == 1
    data = json.loads(run.stdout)["data"]
    assert (data["error_code"], data["reason"]) == ("TIMEOUT", "NO_GREETING")
    # The interpreter's start-up is inside this figure too, so it is a fair upper bound.
    assert elapsed < limit + TIMEOUT_SLACK_S + INTERPRETER_START_S
    assert data["smtp"]["duration_ms"] < (limit + TIMEOUT_SLACK_S) * 1000


# As many as an answer may have (jobs.bounds): junk arriving after LOGIN went out counts towards
# its answer, and more would end the check as a PROTOCOL_ERROR (tests/jobs/test_bounds.py).
JUNK_LINES = IMAP_MAX_RESPONSE_LINES - 10


async def _imap_flooding_untagged_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Junk after each tagged answer, when the client has no command pending: lines it ignores.
    junk = b"* junk the client does not expect\r\n" * JUNK_LINES
    writer.write(b"* OK IMAP4rev1 ready\r\n")
    await writer.drain()
    while line := await reader.readline():
        tag = line.split(b" ", 1)[0]
        if b"CAPABILITY" in line.upper():
            writer.write(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n" + junk)
        else:
            writer.write(tag + b" NO [AUTHENTICATIONFAILED] no\r\n" + junk)
        await writer.drain()


def test_a_server_flooding_the_client_cannot_flood_the_log(
    fake_server: Callable[..., FakeServer], pki: PKI, ca_file: str, tmp_path: Path
) -> None:
    imap = fake_server(_imap_flooding_untagged_lines, ssl_context=pki.valid.ssl_context)
    fields = {
        "inbox_type": "CUSTOM_SMTP",
        "email": "ann@example.com",
        "smtp_password": "pw-never-logged",
        "smtp_host": LOOPBACK,
        "smtp_port": CLOSED_PORT,
        "imap_host": LOOPBACK,
        "imap_port": imap.port,
    }
    result = run_cli(
        "validate",
        "--request",
        write_request(tmp_path, **fields),
        "--json",
        "--ca-file",
        ca_file,
        env={"INBOXCHECK_LOG_LEVEL": "INFO"},
    )
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["data"]["imap"]["reason"] == "INVALID_CREDENTIALS"
    lines = result.stderr.splitlines()
    assert len(lines) < JUNK_LINES // 100
    assert all(json.loads(line) for line in lines)  # every line structured, none a library's raw text


def test_the_report_shows_a_servers_escape_sequences_without_obeying_them(
    fake_server: Callable[..., FakeServer], pki: PKI, ca_file: str, tmp_path: Path
) -> None:
    hostile = "535 5.7.8 \x1b]0;owned\x07\x1b[2J bad credentials"
    smtp = fake_server(SmtpScript(starttls_context=pki.valid.ssl_context, auth_reply=hostile))
    fields = {
        "inbox_type": "CUSTOM_SMTP",
        "email": "ann@example.com",
        "smtp_password": "pw",
        "smtp_host": LOOPBACK,
        "smtp_port": smtp.port,
        "smtp_security": "starttls",
        "imap_host": LOOPBACK,
        "imap_port": CLOSED_PORT,
    }
    result = run_cli("validate", "--request", write_request(tmp_path, **fields), "--ca-file", ca_file)
    assert result.returncode == 1, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "\\x1b]0;owned\\x07" in result.stdout


def _smtp_request(tmp_path: Path, port: int) -> str:
    return write_request(
        tmp_path,
        inbox_type="CUSTOM_SMTP",
        email="ann@inboxcheck.test",
        smtp_password="not-the-password",
        smtp_host=LOOPBACK,
        smtp_port=port,
        smtp_security="starttls",
        imap_host=LOOPBACK,
        imap_port=CLOSED_PORT,
    )


def test_validate_reaches_loopback_without_flags_and_refuses_it_with_public_only(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    # A person checking their own server from their own machine: no setting needed.
    server = fake_server(SmtpScript(ehlo_extensions=["AUTH PLAIN"]))
    path = _smtp_request(tmp_path, server.port)
    reached = run_cli("validate", "--request", path, "--json")
    assert reached.returncode == 1, reached.stderr
    assert json.loads(reached.stdout)["data"]["smtp"]["reason"] == "STARTTLS_UNAVAILABLE"
    assert server.connections >= 1

    seen = server.connections
    refused = run_cli("validate", "--request", path, "--json", "--public-only")
    assert refused.returncode == 1, refused.stderr
    data = json.loads(refused.stdout)["data"]
    assert (data["smtp"]["reason"], data["imap"]["reason"]) == ("DESTINATION_REFUSED", "DESTINATION_REFUSED")
    assert server.connections == seen


def test_a_bad_allowed_network_is_exit_2_naming_the_variable(tmp_path: Path) -> None:
    result = run_cli(
        "validate",
        "--request",
        _smtp_request(tmp_path, CLOSED_PORT),
        env={"INBOXCHECK_ALLOW_NETWORKS": "127.0.0.0/8,not-a-network"},
    )
    assert result.returncode == 2
    assert "INBOXCHECK_ALLOW_NETWORKS" in result.stderr and "CIDR" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_flags_take_an_oauth2_token_from_the_environment(
    oauth_mail: dict[str, Any],
    oauth_provider: TokenEndpoint,
    oauth_user: OAuthAccount,
    ca_file: str,
) -> None:
    token = oauth_provider.issue_access_token(oauth_user.email, size=2_800)
    args = [
        "validate",
        "--inbox-type", "CUSTOM_SMTP",
        "--email", oauth_user.email,
        "--auth", "oauth2",
        *mail_flags(oauth_mail),
        "--ca-file", ca_file,
        "--json",
    ]  # fmt: skip
    run = run_cli(*args, env={"INBOXCHECK_OAUTH2_ACCESS_TOKEN": token})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["data"]["status"] == "valid"
    assert token not in run.stdout + run.stderr
    missing = run_cli(*args, env={"INBOXCHECK_OAUTH2_ACCESS_TOKEN": ""}, stdin="")
    assert missing.returncode == 2 and "INBOXCHECK_OAUTH2_ACCESS_TOKEN" in missing.stderr


def test_cli_refreshes_a_token_and_keeps_the_rotated_refresh_token_in_a_private_file(
    tmp_path: Path,
    oauth_mail: dict[str, Any],
    oauth_provider: TokenEndpoint,
    oauth_user: OAuthAccount,
    ca_file: str,
) -> None:
    saved = tmp_path / "refresh-token"
    args = [
        "validate",
        "--inbox-type", "CUSTOM_SMTP",
        "--email", oauth_user.email,
        "--auth", "oauth2",
        "--oauth2-client-id", oauth_user.client_id,
        "--oauth2-token-url", oauth_provider.token_url,
        "--save-refresh-token", str(saved),
        *mail_flags(oauth_mail),
        "--ca-file", ca_file,
        "--json",
    ]  # fmt: skip
    env = {
        "INBOXCHECK_OAUTH2_REFRESH_TOKEN": oauth_user.refresh_token,
        "INBOXCHECK_OAUTH2_CLIENT_SECRET": oauth_user.client_secret,
    }
    # A file that cannot be written is refused before the refresh that would rotate the token.
    nowhere = [tmp_path / "no-such-dir" / "refresh-token" if a == str(saved) else a for a in args]
    refused = run_cli(*map(str, nowhere), env=env)
    assert refused.returncode == 2 and "--save-refresh-token: cannot write" in refused.stderr
    assert [r for r in oauth_provider.token_requests if r.client_id == oauth_user.client_id] == []
    run = run_cli(*args, env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["data"]["status"] == "valid"
    rotated = saved.read_text().strip()
    assert rotated and rotated != oauth_user.refresh_token and saved.stat().st_mode & 0o777 == 0o600
    output = run.stdout + run.stderr
    for secret in (
        oauth_user.refresh_token,
        oauth_user.client_secret,
        rotated,
        *oauth_provider.issued_access_tokens,
    ):
        assert secret not in output
    # The one given was rotated away: it is dead now, and the verdict says who must act.
    again = run_cli(*args[:-1], env=env)
    assert again.returncode == 1 and "OAUTH_REAUTH_REQUIRED" in again.stdout


def test_cli_checks_app_only_access_with_the_client_secret_from_the_environment(
    oauth_mail: dict[str, Any],
    oauth_provider: TokenEndpoint,
    oauth_user: OAuthAccount,
    ca_file: str,
) -> None:
    app_id, app_secret = f"cli-app-{oauth_user.client_id}", "cli-app-secret-value"
    oauth_provider.add_client(app_id, app_secret, app_mailbox=oauth_user.email)
    args = [
        "validate",
        "--inbox-type", "CUSTOM_SMTP",
        "--email", oauth_user.email,
        "--auth", "oauth2",
        "--oauth2-grant", "client_credentials",
        "--oauth2-client-id", app_id,
        "--oauth2-token-url", oauth_provider.token_url,
        "--oauth2-scopes", "mail.default",
        *mail_flags(oauth_mail),
        "--ca-file", ca_file,
        "--json",
    ]  # fmt: skip
    run = run_cli(*args, env={"INBOXCHECK_OAUTH2_CLIENT_SECRET": app_secret})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["data"]["status"] == "valid"
    assert app_secret not in run.stdout + run.stderr


def test_validate_exits_cleanly_when_the_servers_never_answer_quit_or_logout(
    fake_server: Callable[..., FakeServer], pki: PKI, ca_file: str, tmp_path: Path
) -> None:
    # The verdict does not wait for the goodbyes; the process waits for them (cut off at their
    # bound) before it exits, so nothing is torn down half closed with the event loop.
    smtp = SmtpScript(auth_reply="235 2.7.0 Authentication successful", silent_after_quit=True)
    imap = ImapScript(login_reply="OK Logged in", silent_after_logout=True)
    fields = {
        "inbox_type": "CUSTOM_SMTP",
        "email": "a@b.test",
        "smtp_password": "pw",
        "smtp_host": LOOPBACK,
        "smtp_port": fake_server(smtp, ssl_context=pki.valid.ssl_context).port,
        "smtp_security": "ssl",
        "imap_host": LOOPBACK,
        "imap_port": fake_server(imap, ssl_context=pki.valid.ssl_context).port,
    }
    bound = min(1.0, GOODBYE_TIMEOUT_S)  # the step limit given below
    run = run_cli(
        "validate",
        *("--request", write_request(tmp_path, **fields), "--json", "--timeout", "1", "--ca-file", ca_file),
        env={"PYTHONWARNINGS": "always::ResourceWarning"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads(run.stdout)["data"]
    assert data["status"] == "valid"
    assert data["smtp"]["duration_ms"] < bound * 1000 and data["imap"]["duration_ms"] < bound * 1000
    assert smtp.quit_received.is_set() and imap.logout_received.is_set()
    assert smtp.gone.wait(TIMEOUT_SLACK_S) and imap.gone.wait(TIMEOUT_SLACK_S)
    # The process exited once each goodbye had run into its bound (the servers would have held
    # on for ever), not by tearing them down with the loop.
    cut_short = [
        (line["protocol"], line["bound_s"])
        for line in (json.loads(raw) for raw in run.stderr.splitlines() if raw.startswith("{"))
        if line.get("event") == "goodbye_cut_short"
    ]
    assert sorted(cut_short) == [("imap", bound), ("smtp", bound)], run.stderr
    for noise in ("Task was destroyed", "unclosed", "ResourceWarning", "Traceback"):
        assert noise not in run.stderr, run.stderr
