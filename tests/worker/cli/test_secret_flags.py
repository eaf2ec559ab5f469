"""No command takes a secret as an argument: a password, token, client secret or key on the
command line would sit in the shell's history and in every process listing. The only such flags
name a file (or a URL) instead."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from worker.cli.main import build_parser

SECRET_WORDS = ("pass", "secret", "token", "key")
# Flags whose names hold one of those words but whose value is where a secret is, not the secret.
NOT_A_SECRET_VALUE = {"FILE", "URL"}


def options(parser: argparse.ArgumentParser, command: str = "") -> Iterator[tuple[str, str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from options(sub, f"{command} {name}".strip())
        else:
            for flag in action.option_strings:
                yield command, flag, action


def test_no_command_takes_a_secret_on_its_command_line() -> None:
    every = list(options(build_parser()))
    assert any(command == "validate" for command, _, _ in every)  # the walk reaches the commands
    secret_flags = [
        f"{command} {flag} {action.metavar}"
        for command, flag, action in every
        if any(word in flag for word in SECRET_WORDS) and action.metavar not in NOT_A_SECRET_VALUE
    ]
    assert secret_flags == []
