"""The queue's commands as a person runs them: schema, keygen, enqueue, events and health."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.errors import InboxcheckError, Reason
from jobs.request import FieldProblem, RequestError
from tests.worker.support import (
    PASSWORD,
    burst,
    cli_env,
    closed_port,
    in_process_worker,
    make_settings,
    request_fields,
    run_cli,
)
from worker.cli import main as cli
from worker.cli.client import ClientError
from worker.messages import keys
from worker.messages.envelope import ResultError
from worker.messages.payload import PayloadRejected, PlaintextRefused
from worker.messages.sealing import Sealer, SealError, SecretKeyError
from worker.rechecks.registry import RegistryError
from worker.settings import SettingsError


def test_schema_and_keygen(capsys: pytest.CaptureFixture[str]) -> None:
    # In-process: these commands read no settings and touch nothing outside; the subprocess CLI
    # (`python -m worker`) is exercised by the enqueue and events tests below.
    for which in ("request", "event", "payload"):
        assert cli.main(["schema", which]) == 0
        assert json.loads(capsys.readouterr().out)["type"] == "object"
    assert cli.main(["keygen"]) == 0
    Sealer(capsys.readouterr().out.strip())  # a usable key
    with pytest.raises(SystemExit) as usage:
        cli.main(["schema", "nope"])
    assert usage.value.code == 2


async def test_enqueue_bulk_csv_reports_bad_rows_and_enqueues_good(
    shared_redis, aredis, tmp_path: Path
) -> None:
    settings = make_settings(shared_redis, max_tries=1)
    port = closed_port()
    csv_file = tmp_path / "inboxes.csv"
    csv_file.write_text(
        "inbox_id,inbox_type,email,smtp_host,smtp_port,imap_host,imap_port,smtp_password\n"
        f"a,CUSTOM_SMTP,a@example.com,127.0.0.1,{port},127.0.0.1,{port},{PASSWORD}\n"
        f"b,CUSTOM_SMTP,not-an-email,127.0.0.1,{port},127.0.0.1,{port},{PASSWORD}\n"
        f"c,CUSTOM_SMTP,c@example.com,127.0.0.1,{port},127.0.0.1,{port},{PASSWORD}\n"
    )
    result = run_cli("enqueue", "--requests", str(csv_file), "--wait", "0", env=cli_env(settings))
    assert result.returncode == 2
    assert "line 3: email:" in result.stderr and PASSWORD not in result.stderr + result.stdout
    assert await aredis.zcard(settings.queue_name) == 2
    await burst(settings)
    jsonl = tmp_path / "inboxes.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps(request_fields(i, port, email=f"{i}@example.com")) for i in ("a", "c")) + "\n"
    )
    result = run_cli("enqueue", "--requests", str(jsonl), "--json", "--wait", "10", env=cli_env(settings))
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(e["subject"] for e in lines) == ["a", "c"]


async def test_enqueue_wait_and_events_group_resume(shared_redis, aredis, tmp_path: Path) -> None:
    settings = make_settings(shared_redis, max_tries=1)
    req = tmp_path / "req.json"
    req.write_text(json.dumps(request_fields("w1")))
    env = cli_env(settings)
    queued = run_cli("enqueue", "--request", str(req), "--json", env=env)
    assert queued.returncode == 0 and "job_id" in json.loads(queued.stdout)
    pending = run_cli("enqueue", "--request", str(req), "--wait", "0.2", env=env)
    assert pending.returncode == 3 and "still queued" in pending.stderr
    await burst(settings)
    waited = run_cli("enqueue", "--request", str(req), "--wait", "5", "--json", env=env)
    assert waited.returncode == 1 and json.loads(waited.stdout)["data"]["error_code"] == "CONNECTION_FAILED"
    first = run_cli("events", "--group", "g", "--consumer", "c1", env=env)
    assert first.returncode == 0 and len(first.stdout.splitlines()) == 1
    again = run_cli("events", "--group", "g", "--consumer", "c1", env=env)
    assert again.stdout == ""  # acknowledged: a restarted consumer does not see it again
    assert len(run_cli("events", env=env).stdout.splitlines()) == 1
    bad = run_cli("enqueue", "--request", str(tmp_path / "missing.json"), env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


async def test_enqueue_without_key_exits_2_naming_it(shared_redis, aredis, tmp_path: Path) -> None:
    settings = make_settings(shared_redis)
    req = tmp_path / "req.json"
    req.write_text(json.dumps(request_fields("nokey")))
    env = {k: v for k, v in cli_env(settings).items() if k != "INBOXCHECK_SECRET_KEY"}
    result = run_cli("enqueue", "--request", str(req), env=env)
    assert result.returncode == 2 and "INBOXCHECK_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr and PASSWORD not in result.stderr
    assert not await aredis.zcard(settings.queue_name)
    bad_key = run_cli("enqueue", "--request", str(req), env={**env, "INBOXCHECK_SECRET_KEY": "nope"})
    assert bad_key.returncode == 2 and "INBOXCHECK_SECRET_KEY: is not a Fernet key" in bad_key.stderr


class NewUserError(InboxcheckError):
    """Stands for any user-facing error added later: deriving from the base is all it takes."""


USER_FACING_ERRORS = [
    RequestError([FieldProblem("email", "must be an email address such as name@example.com")]),
    SettingsError("invalid settings: INBOXCHECK_JOB_TIMEOUT: must be greater than 0"),
    ClientError("cannot reach Redis at 127.0.0.1:1 (INBOXCHECK_REDIS_URL)"),
    PlaintextRefused("INBOXCHECK_SECRET_KEY is not set"),
    RegistryError("INBOXCHECK_SECRET_KEY is not set (registry)"),
    PayloadRejected(Reason.MALFORMED_PAYLOAD, "the job payload is not a JSON object"),
    SecretKeyError("INBOXCHECK_SECRET_KEY: is empty"),
    SealError("the sealed credentials cannot be opened with this worker's key"),
    ResultError("a job result in Redis is not JSON"),
    NewUserError("something a person can fix"),
]


@pytest.mark.parametrize("error", USER_FACING_ERRORS, ids=lambda e: type(e).__name__)
def test_a_user_facing_error_exits_2_with_its_message_only(
    error: InboxcheckError, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert isinstance(error, InboxcheckError)

    def fails(_args: Any, _settings: Any) -> int:
        raise error

    monkeypatch.setattr("worker.cli.keygen.run", fails)
    assert cli.main(["keygen"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"inboxcheck: {error}\n" and captured.out == ""


def test_an_unexpected_value_error_prints_no_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pydantic import BaseModel

    class Strict(BaseModel):
        port: int

    def leaky(_args: Any, _settings: Any) -> int:
        Strict(port=PASSWORD)  # a pydantic ValidationError: a ValueError whose text holds the input
        return 0

    monkeypatch.setattr("worker.cli.keygen.run", leaky)
    assert cli.main(["keygen"]) == 2
    err = capsys.readouterr().err
    assert PASSWORD not in err and "ValidationError" in err


async def test_health_checks_this_hosts_own_worker(shared_redis, aredis) -> None:
    import asyncio
    import os
    import socket

    from worker.cli import liveness

    settings = make_settings(shared_redis, health_check_interval=5)
    assert await liveness.alive(settings) is None  # no worker yet
    worker = await in_process_worker(settings)
    main = asyncio.ensure_future(worker.main())
    key = keys.worker_alive_key(socket.gethostname(), os.getpid())
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not await aredis.exists(key):
            assert asyncio.get_running_loop().time() < deadline and not main.done(), "no liveness key"
            await asyncio.sleep(0.02)
        assert await aredis.get(key) == settings.queue_name.encode()
        assert 10_000 < await aredis.pttl(key) <= 15_000  # three intervals
        assert await liveness.alive(settings) == key
        # another pod's worker does not make this one healthy; the fleet-wide check says alive
        assert await liveness.alive(settings, hostname="other-pod") is None
        assert await liveness.alive(settings.model_copy(update={"queue_name": "q:other"})) is None
        assert "j_complete=" in await liveness.alive(settings, any_worker=True)
        await aredis.delete(key)  # as when this worker hangs: its key expires
        assert await liveness.alive(settings) is None
        assert await liveness.alive(settings, any_worker=True) is not None
    finally:
        await worker.close()
        main.cancel()
    assert not await aredis.exists(key)


@pytest.mark.parametrize(
    "header, problem",
    [
        ("", "line 1: header: the first line names no request field"),  # no header row at all
        ("inbox_id,inbox_type,email,smtp_host,smtp_port,imap_host,imap_port,pasword\n", "line 1: column 8:"),
    ],
    ids=["headerless", "misspelt-column"],
)
async def test_a_csv_without_a_usable_header_is_refused_naming_columns_by_position(
    shared_redis, aredis, tmp_path: Path, header: str, problem: str
) -> None:
    settings = make_settings(shared_redis)
    port = closed_port()
    csv_file = tmp_path / "inboxes.csv"
    csv_file.write_text(
        header + f"a,CUSTOM_SMTP,a@example.com,127.0.0.1,{port},127.0.0.1,{port},{PASSWORD}\n"
    )
    result = run_cli("enqueue", "--requests", str(csv_file), "--wait", "0", env=cli_env(settings))
    assert result.returncode == 2
    assert problem in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    assert await aredis.zcard(settings.queue_name) == 0
