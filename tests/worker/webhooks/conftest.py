"""Fixtures of the webhook tests: receivers on loopback, stopped after each test."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator

import pytest

from tests.servers.webhook_receiver import WebhookReceiver


@pytest.fixture
def receiver() -> Iterator[Callable[..., WebhookReceiver]]:
    started: list[WebhookReceiver] = []

    def start(secret: str | None = None, ssl_context: ssl.SSLContext | None = None) -> WebhookReceiver:
        server = WebhookReceiver(secret, ssl_context=ssl_context)
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.stop()
