"""The README's configuration sections name every key the loaders accept,
and the defaults they show are the loaders' defaults (a config that sets
nothing optional, loaded here)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from jvpn import keys
from jvpn.config import _CLIENT, _GATEWAY, load_client_config, load_gateway_config

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def gateway_block() -> str:
    start = README.index("Gateway (`jvpn-xdp gateway up --config gw.conf`):")
    return README[start:README.index("\nRelative paths", start)]


@pytest.fixture
def defaults(tmp_path):
    old = os.umask(0o077)
    peer = keys.encode(keys.public_from_private(keys.generate_private()))
    (tmp_path / "peers.conf").write_text(f"[Peer]\nPublicKey = {peer}\nAllowedIPs = "
                                         "10.99.0.2/32\n")
    (tmp_path / "gw.conf").write_text(
        f"[Interface]\nPrivateKey = {keys.encode(keys.generate_private())}\n"
        "Address = 10.99.0.1/24\nPeersFile = peers.conf\n")
    (tmp_path / "c.conf").write_text(
        f"[Interface]\nPrivateKey = {keys.encode(keys.generate_private())}\n[Peer]\n"
        f"PublicKey = {peer}\nEndpoint = 192.0.2.1:51900\n")
    yield load_gateway_config(tmp_path / "gw.conf"), load_client_config(tmp_path / "c.conf")
    os.umask(old)


def test_every_gateway_key_is_in_the_readme():
    block = gateway_block()
    for key in _GATEWAY["Interface"]:
        assert re.search(rf"\b{key} = ", block), f"README's gateway block lacks {key}"


def test_the_gateway_block_shows_the_defaults(defaults):
    gw, _ = defaults
    block = gateway_block()
    shown = {k: v for k, v in re.findall(r"^\s+#? ?(\w+) = (\S+)", block, re.M)}
    assert int(shown["ListenPort"]) == gw.listen_port
    assert int(shown["EventsKeep"]) == gw.events_keep
    assert int(shown["EventsSummaryInterval"]) == gw.events_summary_interval_s
    assert int(shown["HandshakesPerSecond"]) == gw.handshakes_per_second
    assert int(shown["PathMTU"]) == gw.path_mtu
    assert int(shown["LeaseTTL"]) == gw.lease_ttl_s
    assert shown["EventsMaxBytes"] == f"{gw.events_max_bytes >> 20}M"
    assert shown["StateDir"] == str(gw.state_dir) and shown["Store"] == "sqlite"


def test_every_client_key_is_in_the_readme_table(defaults):
    _, c = defaults
    rows = dict(re.findall(r"^\| (?:Interface|Peer) \| (`[^|]+`) \| ([^|]+) \|", README, re.M))
    named = " ".join(rows)
    for key in {*_CLIENT["Interface"], *_CLIENT["Peer"]} - {"PersistentKeepalive"}:
        assert f"`{key}`" in named, f"README's client table lacks {key}"
    assert rows["`Name`"].strip() == f"`{c.tun_name}`"
    assert rows["`MTU`"].strip() == f"`{c.tun_mtu}`"
    assert rows["`KeepaliveInterval`"].strip().startswith(f"`{c.keepalive_ms / 1000}`")
    assert rows["`Table`"].strip().startswith(f"`{c.table}`")
