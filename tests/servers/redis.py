"""A throwaway redis-server on 127.0.0.1 that can be stopped and restarted on its port."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import redis as redis_py

from tests.servers.certs import PKI, ServerCert
from tests.servers.lifecycle import StartStop
from tests.servers.ports import LOOPBACK, free_port
from tests.servers.wait import NotReady, wait_until

SETUP_HINT = (
    "redis-server is needed by these tests but was not found. Run the project's "
    "setup, `./dev setup` (or run the tests with `./dev test`), which installs the "
    "Debian package redis-server; or point REDIS_SERVER_BIN at a redis-server binary."
)
_START_ATTEMPTS = 3  # the first port is picked before redis binds it: retry a lost race


class RedisNotInstalled(RuntimeError):
    """No redis-server binary: the environment was not set up."""


class RedisStartError(RuntimeError):
    """redis-server did not come up; the message carries its log tail."""


def find_redis_server() -> str:
    """Path of redis-server (``$REDIS_SERVER_BIN``, PATH, or /usr/bin)."""
    for candidate in (
        os.environ.get("REDIS_SERVER_BIN"),
        shutil.which("redis-server"),
        "/usr/bin/redis-server",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RedisNotInstalled(SETUP_HINT)


class RedisServer(StartStop):
    """redis-server on 127.0.0.1; ``stop()`` then ``start()`` reuses the same port.

    The port is chosen on the first start and kept, so clients holding ``url``
    reconnect to the restarted server (what worker-resilience tests need).
    Data is lost on restart unless ``persistent=True`` (append-only file,
    fsync on every write), for tests where queued jobs must survive it.
    """

    host: str = LOOPBACK

    def __init__(self, workdir: Path, *, persistent: bool = False, binary: str | None = None) -> None:
        self.workdir = workdir
        self.persistent = persistent
        self.log_file = workdir / "redis.log"
        self._binary = binary
        self.port: int = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (valid once started)."""
        if not self.port:
            raise RuntimeError("RedisServer has no port before its first start()")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self, **options: Any) -> redis_py.Redis:
        """A sync redis-py client for ``url`` (options go to ``Redis.from_url``)."""
        return redis_py.Redis.from_url(self.url, **options)

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start (or restart, on the same port) and return once it answers PING."""
        if self.running:
            raise RuntimeError("redis-server already running")
        binary = self._binary or find_redis_server()
        self.workdir.mkdir(parents=True, exist_ok=True)
        port_is_fixed = bool(self.port)
        for attempt in range(1, _START_ATTEMPTS + 1):
            if not port_is_fixed:
                self.port = free_port()
            self._spawn(binary)
            try:
                wait_until(
                    self._answers_ping,
                    timeout=timeout,
                    what=f"redis-server on {self.host}:{self.port}",
                    details=self._log_tail,
                )
                return self
            except _RedisExited:
                port_taken = "Address already in use" in self._log_tail()
                self.stop()
                if port_is_fixed or not port_taken or attempt == _START_ATTEMPTS:
                    raise RedisStartError(
                        f"redis-server exited during start-up\n{self._log_tail()}"
                    ) from None
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate redis-server and wait for it; the port is kept for start()."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)

    def _spawn(self, binary: str) -> None:
        self.log_file.unlink(missing_ok=True)
        self._proc = subprocess.Popen(
            [binary, *itertools.chain.from_iterable(self._options().items())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

    def _options(self) -> dict[str, str]:
        return {
            "--bind": self.host,
            "--port": str(self.port),
            "--save": "",  # no RDB snapshots
            "--appendonly": "yes" if self.persistent else "no",
            "--appendfsync": "always",
            "--dir": str(self.workdir),
            "--logfile": str(self.log_file),
            "--daemonize": "no",
            # A replica's first sync starts at once, not after the default 5 s wait for others.
            "--repl-diskless-sync-delay": "0",
            "--protected-mode": "yes",
        }

    def _answers_ping(self) -> bool:
        if self._proc is None or self._proc.poll() is not None:
            raise _RedisExited
        client = self.client(socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis_py.exceptions.RedisError as exc:  # e.g. still loading
            raise NotReady(str(exc)) from exc
        finally:
            client.close()

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return f"--- {self.log_file} (tail) ---\n" + "\n".join(text.splitlines()[-lines:])


class _RedisExited(Exception):
    pass


class TlsRedisServer(RedisServer):
    """redis-server answering only TLS on its port (``rediss://localhost:PORT/0``), with a
    certificate from the test PKI (by default the one for localhost and 127.0.0.1); clients need
    no certificate."""

    def __init__(self, workdir: Path, pki: PKI, cert: ServerCert | None = None) -> None:
        super().__init__(workdir)
        self.pki = pki
        self.cert = cert or pki.valid

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("TlsRedisServer has no port before its first start()")
        return f"rediss://localhost:{self.port}/0"

    def client(self, **options: Any) -> redis_py.Redis:
        return redis_py.Redis.from_url(self.url, ssl_ca_certs=str(self.pki.ca_file), **options)

    def _options(self) -> dict[str, str]:
        return {
            **super()._options(),
            "--port": "0",  # no plaintext port
            "--tls-port": str(self.port),
            "--tls-cert-file": str(self.cert.cert_file),
            "--tls-key-file": str(self.cert.key_file),
            "--tls-ca-cert-file": str(self.pki.ca_file),
            "--tls-auth-clients": "no",
        }
