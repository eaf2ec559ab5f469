"""`inboxcheck register`, `list` and `unregister` as a person runs them, against a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from subprocess import CompletedProcess

from redis.asyncio import Redis

from jobs.request import parse_request
from tests.servers.redis import RedisServer
from tests.worker.support import run_cli, scan_for
from worker.messages.sealing import Sealer, generate_key
from worker.rechecks.registry import Registry

PASSWORD = "Registry-Secret-77"


def inboxcheck(redis: RedisServer, key: str, *args: str) -> CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOXCHECK_")}
    env.update(
        {"INBOXCHECK_REDIS_URL": redis.url, "INBOXCHECK_SECRET_KEY": key, "INBOXCHECK_LOG_FORMAT": "json"}
    )
    return run_cli(*args, env=env)


def test_register_list_unregister(redis_server: RedisServer, tmp_path: Path) -> None:
    key = generate_key()
    request = tmp_path / "inbox.json"
    request.write_text(
        json.dumps(
            {
                "inbox_id": "inbox-7",
                "inbox_type": "GOOGLE_WORKSPACE",
                "email": "ann@corp.example",
                "smtp_password": PASSWORD,
            }
        )
    )

    registered = inboxcheck(redis_server, key, "register", "--request", str(request), "--every", "6h")
    assert registered.returncode == 0, registered.stderr
    assert "inbox-7" in registered.stdout and "21600" in registered.stdout

    listed = inboxcheck(redis_server, key, "list", "--json")
    rows = json.loads(listed.stdout)
    assert [(row["inbox_id"], row["health"]) for row in rows] == [("inbox-7", "pending")]
    table = inboxcheck(redis_server, key, "list")
    assert "inbox-7" in table.stdout and "pending" in table.stdout

    # Stored sealed: the password is nowhere in Redis, nor in anything the commands printed.
    assert scan_for(redis_server.client(), [PASSWORD.encode()]) == []
    for run in (registered, listed, table):
        assert PASSWORD not in run.stdout + run.stderr

    assert inboxcheck(redis_server, key, "unregister", "inbox-7").returncode == 0
    assert json.loads(inboxcheck(redis_server, key, "list", "--json").stdout) == []
    missing = inboxcheck(redis_server, key, "unregister", "inbox-7")
    assert missing.returncode != 0 and "not registered" in missing.stderr


def test_an_inbox_id_with_markup_is_listed_as_written(redis_server: RedisServer, tmp_path: Path) -> None:
    key = generate_key()
    request = tmp_path / "inbox.json"
    markup_id = "evil[/]"  # rich reads "[/]" as a closing tag
    request.write_text(
        json.dumps(
            {
                "inbox_id": markup_id,
                "inbox_type": "GOOGLE_WORKSPACE",
                "email": "ann@corp.example",
                "smtp_password": PASSWORD,
            }
        )
    )
    assert inboxcheck(redis_server, key, "register", "--request", str(request)).returncode == 0
    listed = inboxcheck(redis_server, key, "list")
    assert listed.returncode == 0, listed.stderr
    assert markup_id in listed.stdout


def test_list_pages_through_every_inbox(redis_server: RedisServer) -> None:
    key = generate_key()
    redis_server.client().flushdb()
    inboxes = 200  # past the size Redis keeps as one compact list: the pages are real

    async def register_all() -> None:
        async with Redis.from_url(redis_server.url) as redis:
            registry = Registry(redis, queue_name="q", sealer=Sealer(key))
            for n in range(inboxes):
                fields = {"inbox_id": f"page-{n}", "inbox_type": "GOOGLE_WORKSPACE"}
                request = parse_request({**fields, "email": "u@corp.example", "smtp_password": PASSWORD})
                await registry.register(request, 3_600, spread_s=0)

    asyncio.run(register_all())
    seen: list[str] = []
    args = ["list", "--json", "--page", "60"]
    pages = 0
    while pages < inboxes:
        pages += 1
        page = inboxcheck(redis_server, key, *args)
        assert page.returncode == 0, page.stderr
        seen += [row["inbox_id"] for row in json.loads(page.stdout)]
        if "next page:" not in page.stderr:
            break
        args = page.stderr.split("next page: inboxcheck ", 1)[1].split()
        args.insert(1, "--json")
    assert pages > 1
    assert sorted(seen) == sorted(f"page-{n}" for n in range(inboxes))
    refused = inboxcheck(redis_server, key, "list", "--page", "0")
    assert refused.returncode != 0 and "--page" in refused.stderr and "at least 1" in refused.stderr
