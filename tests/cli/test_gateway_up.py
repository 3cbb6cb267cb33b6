"""`gateway up` takes its instance lock before it opens anything (issue 10
item 15): a second gateway on the same state directory or the same UDP port
is refused with one line naming the holder, and touches nothing of it."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from jvpn import keys
from jvpn.config import load_gateway_config
from jvpn.gateway.build import claim_instance
from jvpn.lab.running import write_secret
from jvpn_cli.main import cli


@pytest.fixture
def conf(tmp_path, monkeypatch):
    """Two configs: ``a`` and ``b`` (other StateDir, same port), ``c``
    (same StateDir as ``a``, another port)."""
    monkeypatch.setenv("JVPN_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    peer = keys.public_from_private(keys.generate_private())
    (tmp_path / "peers.conf").write_text(f"[Peer]\nPublicKey = {keys.encode(peer)}\n"
                                         "AllowedIP = 10.99.0.2/32\n")

    def write(name: str, state: str, port: int):
        path = tmp_path / f"{name}.conf"
        write_secret(path, f"[Interface]\nPrivateKey = {keys.encode(keys.generate_private())}\n"
                           f"ListenPort = {port}\nAddress = 10.99.0.1/24\n"
                           f"PeersFile = peers.conf\nStateDir = {tmp_path / state}\n"
                           f"NodeId = {name}\n")
        return path

    return {"a": write("a", "state-a", 51901), "b": write("b", "state-b", 51901),
            "c": write("c", "state-a", 51902)}


@pytest.mark.parametrize("second, what", [("b", "UDP port 51901"),
                                           ("c", "the state directory")])
def test_a_second_gateway_up_is_refused_naming_the_holder(conf, tmp_path, second, what):
    first = load_gateway_config(conf["a"])
    with claim_instance(first, conf["a"]):
        result = CliRunner().invoke(cli, ["gateway", "up", "--config", str(conf[second]),
                                          "--tun", "jvt-second"])
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: another gateway holds") and what in line
    assert f"pid {os.getpid()}" in line and str(conf["a"]) in line
    for state in ("state-a", "state-b"):  # nothing was opened: no store, no events
        assert not (tmp_path / state / "sessions.db").exists()
        assert not (tmp_path / state / "events.jsonl").exists()
