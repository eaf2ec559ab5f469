"""`inboxcheck keygen`: a new INBOXCHECK_SECRET_KEY (a Fernet key) for producers and workers."""

from __future__ import annotations

import argparse
from typing import Any

from worker.messages.sealing import generate_key


def run(_args: argparse.Namespace, _settings: Any) -> int:
    print(generate_key())
    return 0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("keygen", help="print a new secret key for sealing credentials")
    parser.set_defaults(handler=run, needs_settings=False)
