"""The README's Webhooks section works as written: its commands parse, and its receiver, run as
it is, accepts what `inboxcheck webhook test` sends with the secret `webhook add` printed, and
refuses it with another secret."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
from pathlib import Path

from jobs.options import CheckOptions
from tests.jobs.checks import ALLOW_LOOPBACK, LOOPBACK_NETWORKS
from tests.servers.ports import LOOPBACK, free_port
from tests.servers.redis import RedisServer
from tests.servers.wait import wait_until
from tests.worker.support import REPO, cli_env, run_cli
from tests.worker.webhooks.support import webhook_settings
from worker.cli.main import build_parser
from worker.webhooks import delivery
from worker.webhooks.endpoints import Endpoint
from worker.webhooks.signing import SigningSecret

README = (REPO / "README.md").read_text(encoding="utf-8")
SECTION = README.split("\n## Webhooks\n", 1)[1].split("\n## ", 1)[0]


def block(language: str) -> str:
    return SECTION.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_every_command_of_the_section_parses() -> None:
    lines = [line.split("#")[0].strip() for line in block("sh").strip().splitlines()]
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == "inboxcheck"
        assert build_parser().parse_args(argv[1:]).command in ("webhook", "webhooks", "health"), line


def start(script: Path, port: int, secret: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env={"WEBHOOK_SECRET": secret, "PORT": str(port), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError("the README's receiver exited")
        socket.create_connection((LOOPBACK, port), timeout=1).close()
        return True

    wait_until(listening, timeout=10, what="the README's receiver")
    return proc


async def test_the_readme_receiver_verifies_what_webhook_test_sends(
    shared_redis: RedisServer, tmp_path: Path
) -> None:
    script = tmp_path / "receiver.py"
    script.write_text(block("python"))
    port = free_port()
    env = {**cli_env(webhook_settings(shared_redis)), "INBOXCHECK_ALLOW_NETWORKS": LOOPBACK_NETWORKS}
    added = run_cli("webhook", "add", f"http://127.0.0.1:{port}/", "--json", env=env)
    endpoint = json.loads(added.stdout)
    proc = start(script, port, endpoint["secret"])
    try:
        sent = run_cli("webhook", "test", endpoint["id"], env=env)
        forged = Endpoint("ep_forged", endpoint["url"], (), 0.0, "", (SigningSecret.generate(),))
        async with delivery.client(
            CheckOptions(destinations=ALLOW_LOOPBACK), timeout_s=5, max_connections=1
        ) as client:
            refused = await delivery.post(client, forged, "evt-forged", b"{}", 5)
    finally:
        proc.terminate()
        printed, _ = proc.communicate(timeout=5)
    assert sent.returncode == 0 and "HTTP 204" in sent.stdout, sent.stdout + sent.stderr
    assert refused.status == 401
    [line] = printed.splitlines()  # the forged one was not accepted
    assert line.startswith("inboxcheck.webhook.test ")
