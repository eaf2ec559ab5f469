"""Proton Mail Bridge is told by its ports only on this machine."""

from __future__ import annotations

import pytest

from jobs.presets import InboxType
from jobs.providers import PROTON_BRIDGE_PORTS, Provider, identify, provider_of_host


@pytest.mark.parametrize("port", sorted(PROTON_BRIDGE_PORTS))
def test_bridges_ports_mean_proton_only_on_loopback(port: int) -> None:
    assert provider_of_host("::1", port) is Provider.PROTON
    assert provider_of_host("mail.example.net", port) is None
    assert provider_of_host("192.0.2.1", port) is None


def test_an_inbox_behind_bridge_is_protons_whatever_its_type() -> None:
    assert identify(InboxType.CUSTOM_SMTP, [("127.0.0.1", 1143), ("127.0.0.1", 1025)]) is Provider.PROTON
