"""End to end through arq (scenarios 3 and 5). TODO: wired to worker/ once it is usable."""

from __future__ import annotations


class NotAvailable(Exception):
    pass


def run(**kwargs) -> dict:
    raise NotAvailable("worker/ (arq producer + WorkerSettings) not wired into bench yet")
