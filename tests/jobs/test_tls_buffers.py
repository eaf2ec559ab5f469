"""The TLS read buffer the worker and the CLI shrink at start: cut to TLS_READ_BUFFER when
asyncio's is larger, left as it is when it is already smaller. In-process, with asyncio's value
restored after each test (tests/worker/runtime/test_patched_internals.py proves it in a fresh
interpreter)."""

from __future__ import annotations

import asyncio.sslproto

import pytest

from jobs.tls import TLS_READ_BUFFER, use_small_tls_read_buffers


@pytest.mark.parametrize(
    ("before", "after"), [(256 * 1024, TLS_READ_BUFFER), (TLS_READ_BUFFER // 2, TLS_READ_BUFFER // 2)]
)
def test_the_read_buffer_is_cut_to_the_largest_tls_record_never_raised(
    monkeypatch: pytest.MonkeyPatch, before: int, after: int
) -> None:
    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "max_size", before)
    use_small_tls_read_buffers()
    assert asyncio.sslproto.SSLProtocol.max_size == after
