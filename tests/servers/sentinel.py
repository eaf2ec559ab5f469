"""A Redis master, its replica and Redis Sentinels watching them: real redis-server processes on
127.0.0.1 (a sentinel is `redis-server sentinel.conf --sentinel`), with short failure detection so
a failover takes about a second."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import redis as redis_py

from tests.servers.certs import PKI
from tests.servers.lifecycle import StartStop
from tests.servers.ports import LOOPBACK
from tests.servers.redis import RedisServer
from tests.servers.wait import NotReady, wait_until

MASTER_NAME = "inboxcheck-test"
# A master that does not answer for this long is down to a sentinel (the default is 30 s).
DOWN_AFTER_MS = 500
# Also how long before the same master may be failed over again (twice this).
FAILOVER_TIMEOUT_MS = 2_000
READY_TIMEOUT_S = 15.0
FAILOVER_DEADLINE_S = 20.0


class ReplicaServer(RedisServer):
    """redis-server replicating `master`."""

    def __init__(self, workdir: Path, master: RedisServer) -> None:
        super().__init__(workdir)
        self.master = master

    def _options(self) -> dict[str, str]:
        return {**super()._options(), "--replicaof": f"{self.master.host} {self.master.port}"}


class SentinelServer(RedisServer):
    """A Redis Sentinel monitoring `master` under MASTER_NAME (it rewrites its config file); with
    `pki`, speaking only TLS (the test CA's valid certificate) and reaching the master over TLS."""

    def __init__(
        self, workdir: Path, master: RedisServer, password: str | None = None, pki: PKI | None = None
    ) -> None:
        super().__init__(workdir)
        self.master = master
        self.password = password
        self.pki = pki

    def client(self, **options: Any) -> redis_py.Redis:
        if self.pki is not None:
            options = {"ssl": True, "ssl_ca_certs": str(self.pki.ca_file), **options}
        return redis_py.Redis(host=self.host, port=self.port, password=self.password, **options)

    def _listen(self) -> list[str]:
        if self.pki is None:
            return [f"port {self.port}"]
        return [
            "port 0",
            f"tls-port {self.port}",
            f"tls-cert-file {self.pki.valid.cert_file}",
            f"tls-key-file {self.pki.valid.key_file}",
            f"tls-ca-cert-file {self.pki.ca_file}",
            "tls-auth-clients no",
            "tls-replication yes",  # the master too is reached over TLS
        ]

    def _spawn(self, binary: str) -> None:
        config = self.workdir / "sentinel.conf"
        lines = [
            *self._listen(),
            f"bind {self.host}",
            f"dir {self.workdir}",
            f"logfile {self.log_file}",
            "daemonize no",
            f"sentinel monitor {MASTER_NAME} {self.master.host} {self.master.port} 1",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
        ]
        if self.password:
            lines.append(f"requirepass {self.password}")
        config.write_text("\n".join(lines) + "\n")
        self.log_file.unlink(missing_ok=True)
        self._proc = subprocess.Popen(
            [binary, str(config), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )


class SentinelSet(StartStop):
    """One master, one replica and `sentinels` sentinels; `url` is inboxcheck's Sentinel URL."""

    def __init__(self, workdir: Path, sentinels: int = 1, sentinel_password: str | None = None) -> None:
        self.master = RedisServer(workdir / "master")
        self.replica = ReplicaServer(workdir / "replica", self.master)
        self.sentinels = [
            SentinelServer(workdir / f"sentinel-{n}", self.master, sentinel_password)
            for n in range(sentinels)
        ]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{LOOPBACK}:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def start(self) -> SentinelSet:
        self.master.start()
        self.replica.start()
        wait_until(self._replica_online, timeout=READY_TIMEOUT_S, what="the replica's link to the master")
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until(self._replica_known, timeout=READY_TIMEOUT_S, what="the sentinels knowing the replica")
        return self

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.master):
            server.stop()

    def master_port(self, sentinel: SentinelServer | None = None) -> int:
        """The master's port as `sentinel` (by default the first) names it now."""
        client = (sentinel or self.sentinels[0]).client(socket_timeout=1)
        try:
            _host, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
            return int(port)
        finally:
            client.close()

    def server(self, port: int) -> RedisServer:
        return next(server for server in (self.master, self.replica) if server.port == port)

    def current_master(self) -> RedisServer:
        return self.server(self.master_port())

    def start_failover(self) -> RedisServer:
        """Ask the first sentinel to fail the master over now; returns the server that was master."""
        old = self.current_master()
        client = self.sentinels[0].client(socket_timeout=1)
        try:
            client.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        finally:
            client.close()
        return old

    def wait_for_new_master(self, old: RedisServer, timeout: float = FAILOVER_DEADLINE_S) -> RedisServer:
        """Once every sentinel names the other server and it says it is master, that server."""

        def switched() -> bool:
            if any(self.master_port(sentinel) == old.port for sentinel in self.sentinels):
                return False
            return role(self.current_master()) == "master"

        wait_until(switched, timeout=timeout, what="the failover")
        return self.current_master()

    def wait_replicated(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until the replica has everything the master has written (WAIT 1)."""
        client = self.current_master().client(socket_timeout=timeout)
        try:
            deadline = time.monotonic() + timeout
            while client.execute_command("WAIT", 1, int(timeout * 1000)) < 1:
                if time.monotonic() > deadline:
                    raise TimeoutError("the replica did not catch up")
        finally:
            client.close()

    def _replica_online(self) -> bool:
        client = self.replica.client(socket_timeout=1)
        try:
            return client.info("replication").get("master_link_status") == "up"
        finally:
            client.close()

    def _replica_known(self) -> bool:
        for sentinel in self.sentinels:
            client = sentinel.client(socket_timeout=1)
            try:
                replicas = client.sentinel_slaves(MASTER_NAME)
            except redis_py.RedisError as exc:
                raise NotReady(str(exc)) from exc
            finally:
                client.close()
            if not any(
                r["port"] == self.replica.port and r.get("master-link-status") == "ok" for r in replicas
            ):
                return False
        return True


def role(server: RedisServer) -> str:
    client = server.client(socket_timeout=1)
    try:
        return str(client.info("replication")["role"])
    finally:
        client.close()
