"""The commands as a person at a terminal meets them: real subprocesses, some on a pseudo-terminal
(the bulk progress bar, the password prompt), a real redis-server, aiosmtpd and Dovecot, and a real
arq worker (burst mode) to answer."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from redis.asyncio import Redis

from tests.jobs.checks import LOOPBACK
from tests.servers.dovecot import Account, Dovecot
from tests.servers.redis import RedisServer
from tests.servers.smtp import SmtpServer
from tests.worker.support import (
    PASSWORD,
    POLL_S,
    REPO,
    burst,
    cli_env,
    closed_port,
    make_settings,
    request,
    request_fields,
    run_cli,
)
from worker.messages.producer import enqueue_validation
from worker.settings import Settings

DEADLINE_S = 20.0
READ_CHUNK = 4096
TERMINAL = {"TERM": "xterm-256color", "COLUMNS": "100"}


def inboxcheck(*args: str) -> list[str]:
    return [sys.executable, "-m", "worker", *args]


async def wait_queued(aredis: Redis, settings: Settings, count: int) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while await aredis.zcard(settings.queue_name) < count:
        assert time.monotonic() < deadline, "the command enqueued nothing"
        await asyncio.sleep(POLL_S)


def read_all(fd: int, deadline: float) -> bytes:
    """What a pseudo-terminal's program writes until it exits (EIO once the slave side is gone)."""
    out = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        if not ready:
            break
        try:
            chunk = os.read(fd, READ_CHUNK)
        except OSError:  # EIO: the program closed the terminal
            break
        if not chunk:
            break
        out += chunk
    return out


async def test_bulk_enqueue_shows_progress_on_a_terminal_and_ends_with_a_summary(
    shared_redis: RedisServer, aredis: Redis, tmp_path: Path
) -> None:
    settings = make_settings(shared_redis, max_tries=1)
    port = closed_port()
    rows = tmp_path / "inboxes.csv"
    rows.write_text(
        "inbox_id,inbox_type,email,smtp_host,smtp_port,imap_host,imap_port,smtp_password\n"
        f"a,CUSTOM_SMTP,a@example.com,{LOOPBACK},{port},{LOOPBACK},{port},{PASSWORD}\n"
        f"b,CUSTOM_SMTP,b@example.com,{LOOPBACK},{port},{LOOPBACK},{port},{PASSWORD}\n"
        f"c,CUSTOM_SMTP,not-an-email,{LOOPBACK},{port},{LOOPBACK},{port},{PASSWORD}\n"
    )
    master, slave = pty.openpty()
    try:
        command = await asyncio.create_subprocess_exec(
            *inboxcheck("enqueue", "--requests", str(rows), "--wait", str(DEADLINE_S)),
            stdout=subprocess.PIPE,
            stderr=slave,  # the progress bar's side: a terminal
            env={**cli_env(settings), **TERMINAL},
            cwd=REPO,
        )
        os.close(slave)
        # Read as it is written: a terminal's buffer is small, and a full one would stall the bar.
        shown = asyncio.ensure_future(asyncio.to_thread(read_all, master, time.monotonic() + DEADLINE_S))
        await wait_queued(aredis, settings, 2)
        await burst(settings)
        stdout, _ = await asyncio.wait_for(command.communicate(), DEADLINE_S)
        terminal = (await shown).decode()
    finally:
        os.close(master)
    assert command.returncode == 2  # a bad row: usage, though the good rows ran
    assert "line 4: email:" in terminal
    assert "checking inboxes" in terminal and "2/2" in terminal  # the progress bar, finished
    summary = stdout.decode()
    assert "outcomes" in summary
    assert any(
        "CONNECTION_FAILED / CONNECTION_REFUSED" in line and "2" in line for line in summary.splitlines()
    )
    assert any("bad rows (not enqueued)" in line and "1" in line for line in summary.splitlines())
    assert PASSWORD not in terminal + summary


class Follower:
    """`inboxcheck events --follow --group` as a subprocess; its lines, read as they come."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            inboxcheck("events", "--follow", "--group", "billing", "--consumer", "c1"),
            stdout=subprocess.PIPE,
            env=env,
            cwd=REPO,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)

    def subjects(self, count: int) -> list[str]:
        return [json.loads(self.lines.get(timeout=DEADLINE_S))["subject"] for _ in range(count)]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(DEADLINE_S)


async def test_events_follow_resumes_after_a_restart(shared_redis: RedisServer, aredis: Redis) -> None:
    settings = make_settings(shared_redis, max_tries=1)

    async def event_of(inbox_id: str) -> None:
        await enqueue_validation(aredis, request(inbox_id), settings=settings)
        await burst(settings)

    await event_of("first")
    follower = Follower(cli_env(settings))
    try:
        assert follower.subjects(1) == ["first"]
        deadline = time.monotonic() + DEADLINE_S
        while (await aredis.xpending(settings.events_stream, "billing"))["pending"]:
            assert time.monotonic() < deadline, "the event was never acknowledged"
            await asyncio.sleep(POLL_S)
    finally:
        follower.stop()
    await event_of("while-stopped-1")
    await event_of("while-stopped-2")
    follower = Follower(cli_env(settings))
    try:
        assert follower.subjects(2) == ["while-stopped-1", "while-stopped-2"]
        await event_of("after-restart")
        assert follower.subjects(1) == ["after-restart"]  # and "first" never came again
    finally:
        follower.stop()


def validate_flags(smtp: SmtpServer, dovecot: Dovecot, email: str, ca_file: str) -> list[str]:
    return [
        "validate",
        "--inbox-type",
        "CUSTOM_SMTP",
        "--email",
        email,
        "--smtp-host",
        LOOPBACK,
        "--smtp-port",
        str(smtp.port),
        "--smtp-security",
        "starttls",
        "--imap-host",
        LOOPBACK,
        "--imap-port",
        str(dovecot.imaps_port),
        "--ca-file",
        ca_file,
        "--json",
    ]


def test_imap_password_comes_from_its_own_variable(
    smtp_server: Callable[..., SmtpServer], dovecot: Dovecot, imap_user: Account, ca_file: str
) -> None:
    smtp_password = "Smtp-only-" + imap_user.password  # the two servers want different passwords
    smtp = smtp_server(users={imap_user.email: smtp_password})
    env = {
        **os.environ,
        "INBOXCHECK_SMTP_PASSWORD": smtp_password,
        "INBOXCHECK_IMAP_PASSWORD": imap_user.password,
    }
    ran = run_cli(*validate_flags(smtp, dovecot, imap_user.email, ca_file), env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    data = json.loads(ran.stdout)["data"]
    assert (data["smtp"]["status"], data["imap"]["status"]) == ("ok", "ok")
    assert imap_user.password not in ran.stdout + ran.stderr


def test_without_a_variable_the_password_is_asked_for_at_the_terminal(
    smtp_server: Callable[..., SmtpServer], dovecot: Dovecot, imap_user: Account, ca_file: str
) -> None:
    smtp = smtp_server(users={imap_user.email: imap_user.password})
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOXCHECK_")}
    argv = inboxcheck(*validate_flags(smtp, dovecot, imap_user.email, ca_file))
    pid, terminal = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pseudo-terminal
        try:
            os.chdir(REPO)
            os.execve(sys.executable, argv, {**env, **TERMINAL})
        finally:
            os._exit(127)  # never back into pytest in a forked copy
    try:
        deadline = time.monotonic() + DEADLINE_S
        seen = b""
        while b"SMTP password:" not in seen:
            assert time.monotonic() < deadline, f"no prompt: {seen!r}"
            ready, _, _ = select.select([terminal], [], [], deadline - time.monotonic())
            if ready:
                try:
                    seen += os.read(terminal, READ_CHUNK)
                except OSError:  # EIO: it exited without asking
                    raise AssertionError(f"no prompt: {seen!r}") from None
        os.write(terminal, imap_user.password.encode() + b"\n")
        rest = read_all(terminal, deadline).decode(errors="replace")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 0, rest
    assert '"status":"valid"' in rest.replace(" ", "")
    assert imap_user.password not in rest  # typed without echo, never printed


def test_log_lines_are_for_people_on_a_terminal_and_json_elsewhere(tmp_path: Path) -> None:
    # INBOXCHECK_LOG_FORMAT's default, auto. Logs go to stderr; the closed port makes a short check.
    req = tmp_path / "req.json"
    req.write_text(json.dumps(request_fields("logs")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOXCHECK_")}
    env["INBOXCHECK_LOG_LEVEL"] = "INFO"  # a one-off command logs warnings only, unless asked
    argv = inboxcheck("validate", "--request", str(req), "--json")
    piped = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=DEADLINE_S)
    logged = next(line for line in piped.stderr.splitlines() if "protocol_checked" in line)
    assert json.loads(logged)["event"] == "protocol_checked"
    master, slave = pty.openpty()
    try:
        on_terminal = subprocess.run(
            argv, env={**env, **TERMINAL}, cwd=REPO, stdout=subprocess.PIPE, stderr=slave, timeout=DEADLINE_S
        )
        os.close(slave)
        shown = read_all(master, time.monotonic() + DEADLINE_S).decode(errors="replace")
    finally:
        os.close(master)
    assert (piped.returncode, on_terminal.returncode) == (1, 1)
    line = next(line for line in shown.splitlines() if "protocol_checked" in line)
    assert not line.lstrip().startswith("{")  # a console line, not JSON
