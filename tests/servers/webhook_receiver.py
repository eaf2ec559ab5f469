"""A webhook receiver on 127.0.0.1 (the standard library's HTTP server, in threads) that checks
each request's signature with the `standardwebhooks` library, as a real receiver would.

Each request takes the next planned Answer (`plan(...)`), or the default one: a status with
headers, a body of any size (`body_bytes`, or endless with `endless=True`), or held until a
`release` event is set (a slow receiver; `hang()` holds until stopped: no answer at all).
"""

from __future__ import annotations

import http.server
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from tests.servers.lifecycle import StartStop
from tests.servers.ports import LOOPBACK
from tests.servers.wait import wait_until

CHUNK = 64 * 1024
# How soon stop() is noticed.
POLL_S = 0.02
# Holding a request never lasts longer than this (so a forgotten hold cannot hang the suite).
HOLD_LIMIT_S = 30.0


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body_bytes: int = 0
    endless: bool = False
    release: threading.Event | None = None


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int | None = None  # the status sent, once it was sent

    @property
    def event_id(self) -> str:
        return self.headers.get("webhook-id", "")


class WebhookReceiver(StartStop):
    def __init__(
        self, secret: str | None = None, path: str = "/hook", ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.secret = secret
        self.ssl_context = ssl_context
        self.path = path
        self.default = Answer()
        self.received: list[Received] = []
        self.sent_body_bytes = 0
        self._plan: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{LOOPBACK}:{self._server.server_address[1]}{self.path}"

    def plan(self, *answers: Answer) -> None:
        with self._lock:
            self._plan.extend(answers)

    def hang(self) -> Answer:
        """An answer that never comes (until the receiver stops)."""
        return Answer(release=self._stopped)

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        if self.ssl_context is not None:
            self._server.socket = self.ssl_context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(
            target=self._server.serve_forever, args=(POLL_S,), name="webhook-receiver", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _next(self) -> Answer:
        with self._lock:
            return self._plan.popleft() if self._plan else self.default

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("content-length", 0)))
        headers = {k.lower(): v for k, v in handler.headers.items()}
        verified = False
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                pass
        record = Received(time.monotonic(), headers, body, verified)
        answer = self._next()
        with self._lock:
            self.received.append(record)
        if answer.release is not None:
            answer.release.wait(HOLD_LIMIT_S)
            if self._stopped.is_set() and answer.release is self._stopped:
                return
        try:
            handler.send_response(answer.status)
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            if answer.endless:
                handler.send_header("transfer-encoding", "chunked")
            else:
                handler.send_header("content-length", str(answer.body_bytes))
            handler.end_headers()
            record.answered = answer.status
            if answer.endless:
                chunk = b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n"
                while not self._stopped.is_set():
                    handler.wfile.write(chunk)
                    self.sent_body_bytes += CHUNK
            elif answer.body_bytes:
                handler.wfile.write(b"x" * answer.body_bytes)
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True

    # What arrived
    def verified_ids(self, status: int = 200) -> set[str]:
        """Ids of the events delivered: signature verified and answered with `status`."""
        with self._lock:
            return {r.event_id for r in self.received if r.verified and r.answered == status}

    def requests_for(self, event_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.event_id == event_id]

    def wait_for(self, count: int, timeout: float = 10.0, status: int = 200) -> set[str]:
        wait_until(
            lambda: len(self.verified_ids(status)) >= count, timeout=timeout, what=f"{count} deliveries"
        )
        return self.verified_ids(status)

    def wait_requests(self, count: int, timeout: float = 10.0) -> None:
        wait_until(lambda: len(self.received) >= count, timeout=timeout, what=f"{count} requests")
