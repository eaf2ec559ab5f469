"""The exception tree drawn in jobs.errors is the one the code defines, not an old picture of it."""

from __future__ import annotations

import importlib

import pytest

import jobs.errors
from jobs.errors import CheckError, InboxcheckError

# What the command line and the worker run, so every error class they can raise is defined.
for _module in ("worker.cli.main", "worker.runtime.job"):
    importlib.import_module(_module)

TREE = jobs.errors.__doc__ or ""


def _descendants(base: type[BaseException]) -> list[type[BaseException]]:
    found = []
    for sub in base.__subclasses__():
        if not sub.__module__.startswith("tests."):
            found += [sub, *_descendants(sub)]
    return found


def _line_of(cls: type[BaseException]) -> str:
    lines = [line for line in TREE.splitlines() if f"── {cls.__name__} " in line]
    assert len(lines) == 1, f"{cls.__name__} is not drawn (once) in jobs.errors' docstring"
    return lines[0]


@pytest.mark.parametrize("cls", _descendants(CheckError), ids=lambda c: c.__name__)
def test_every_check_error_is_drawn_with_its_builtin_and_code(cls: type[CheckError]) -> None:
    line = _line_of(cls)
    assert cls.code.value in line
    for builtin in (b for b in cls.__bases__ if b.__module__ == "builtins"):
        assert builtin.__name__ in line


@pytest.mark.parametrize("cls", _descendants(InboxcheckError), ids=lambda c: c.__name__)
def test_every_user_facing_error_is_drawn_with_its_builtin_and_module(cls: type[InboxcheckError]) -> None:
    line = _line_of(cls)
    assert cls.__module__ in line
    for builtin in (b for b in cls.__bases__ if b.__module__ == "builtins"):
        assert builtin.__name__ in line
