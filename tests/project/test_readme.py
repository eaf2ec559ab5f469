"""The README is the operator's manual: every setting the code reads must be in it."""

from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest

from worker.runtime.heartbeat import heartbeat_path
from worker.runtime.local_redis import data_dir
from worker.settings import ENV_PREFIX, Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    assert f"`{ENV_PREFIX}{name.upper()}`" in README


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == [
        "./dev worker",
        "./dev test",
    ]


# A row of the Settings table: | `INBOXCHECK_X` | default | meaning |
SETTING_ROW = re.compile(r"^\| `(INBOXCHECK_\w+)` \| (.+?) \| .+\|$", re.MULTILINE)
LITERAL = re.compile(r"^`([^`]+)`$")
# Defaults the table says in words: what the code must then have, or end up using.
NO_VALUE = "none"
WORDED_DEFAULTS: dict[str, Any] = {
    "EHLO_HOSTNAME": lambda settings: settings.ehlo_hostname == socket.getfqdn(),
    "DNS_SERVERS": lambda settings: settings.dns_servers == (),
    "HEARTBEAT_FILE": lambda settings: (
        heartbeat_path(settings)
        == Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
        / f"inboxcheck-worker-{os.getuid()}.heartbeat"
    ),
    "WEBHOOK_HEARTBEAT_FILE": lambda settings: (
        heartbeat_path(settings, "webhooks")
        == Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
        / f"inboxcheck-webhooks-{os.getuid()}.heartbeat"
    ),
    # The setting is empty; the folder used is the one the table names.
    "LOCAL_REDIS_DIR": lambda settings: (
        settings.local_redis_dir is None
        and data_dir(None) == Path("~/.local/state/inboxcheck/redis").expanduser()
    ),
}


def documented_defaults() -> dict[str, str]:
    section = README.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    return {name.removeprefix(ENV_PREFIX): default for name, default in SETTING_ROW.findall(section)}


def test_the_settings_table_is_read_whole() -> None:
    assert set(documented_defaults()) == {name.upper() for name in Settings.model_fields}


@pytest.mark.parametrize("name", sorted(documented_defaults()))
def test_every_documented_default_is_the_codes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default the README gives, written into the variable, changes nothing."""
    for variable in [key for key in os.environ if key.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(variable)
    default = Settings()
    field = name.lower()
    documented = documented_defaults()[name]
    if name in WORDED_DEFAULTS:
        assert WORDED_DEFAULTS[name](default), documented
    elif documented == NO_VALUE:
        assert not getattr(default, field)
    else:
        literal = LITERAL.match(documented)
        assert literal, f"{name}: {documented!r} is neither one `value` nor {NO_VALUE!r}"
        monkeypatch.setenv(ENV_PREFIX + name, literal.group(1))
        assert getattr(Settings(), field) == getattr(default, field)
