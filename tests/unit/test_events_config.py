"""The events file's bounds come from the gateway config (issue 10 item 4):
EventsMaxBytes, EventsKeep, EventsSummaryInterval, with defaults."""

from __future__ import annotations

import os

import pytest

from jvpn import keys
from jvpn.config import ConfigError, load_gateway_config
from jvpn.events import DEFAULT_KEEP, DEFAULT_MAX_BYTES, DEFAULT_SUMMARY_INTERVAL_MS

PEER = keys.public_from_private(keys.generate_private())


@pytest.fixture
def write_config(tmp_path):
    old = os.umask(0o077)  # the config holds an inline key: 0600 or it is refused
    (tmp_path / "peers.conf").write_text(
        f"[Peer]\nPublicKey = {keys.encode(PEER)}\nAllowedIP = 10.99.0.2/32\n")

    def write(extra: str = ""):
        path = tmp_path / "gw.conf"
        path.write_text(f"[Interface]\nPrivateKey = {keys.encode(keys.generate_private())}\n"
                        f"Address = 10.99.0.1/24\nPeersFile = peers.conf\n"
                        f"StateDir = {tmp_path / 'state'}\n{extra}")
        return path

    yield write
    os.umask(old)


def test_events_bounds_default(write_config):
    cfg = load_gateway_config(write_config())
    assert cfg.events_max_bytes == DEFAULT_MAX_BYTES == 64 * 1024 * 1024
    assert cfg.events_keep == DEFAULT_KEEP == 2
    assert cfg.events_summary_interval_s * 1000 == DEFAULT_SUMMARY_INTERVAL_MS


def test_events_bounds_from_the_config(write_config):
    cfg = load_gateway_config(write_config(
        "EventsMaxBytes = 16M\nEventsKeep = 5\nEventsSummaryInterval = 60\n"))
    assert (cfg.events_max_bytes, cfg.events_keep, cfg.events_summary_interval_s) == (
        16 * 1024 * 1024, 5, 60)
    assert load_gateway_config(write_config("EventsMaxBytes = 100000\n")).events_max_bytes == (
        100_000)


@pytest.mark.parametrize("line, message", [
    ("EventsMaxBytes = 1000", "EventsMaxBytes: 1000 is out of range"),
    ("EventsMaxBytes = lots", "EventsMaxBytes: not a size"),
    ("EventsKeep = 0", "EventsKeep: 0 is out of range"),
    ("EventsSummaryInterval = 0", "EventsSummaryInterval: 0 is out of range"),
])
def test_events_bounds_refused_with_one_line(write_config, line, message):
    with pytest.raises(ConfigError, match=message):
        load_gateway_config(write_config(line + "\n"))
