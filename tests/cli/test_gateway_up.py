"""`jvpn-xdp gateway up`:

- it takes its instance lock before it opens anything (issue 10 item 15): a
  second gateway on the same state directory or the same UDP port is refused
  with one line naming the holder, and touches nothing of it;
- when the gateway must end (a gateway thread ended, issue 10 item 2; the
  gate is gone, item 13) the command stops it and exits 1 with one line, so
  that the lease lapses and the service manager restarts it. The daemon is
  faked here; its supervisor is tested in tests/unit/test_daemon_robust.py,
  the gate watch in tests/netns/test_threat_unguarded_paths.py."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import jvpn.config
import jvpn.gateway.build
from jvpn import keys
from jvpn.config import load_gateway_config
from jvpn.gate.paths import GatePaths
from jvpn.gateway.build import claim_instance
from jvpn.lab.running import write_secret
from jvpn_cli.main import cli

LINE = "gateway thread 'udp' ended (EIO: Input/output error): stopping"


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
    # the run directory the CLI uses (JVPN_RUN_DIR): the port's lock lives there
    with claim_instance(first, conf["a"], GatePaths(run_dir=tmp_path / "run")):
        result = CliRunner().invoke(cli, ["gateway", "up", "--config", str(conf[second]),
                                          "--tun", "jvt-second"])
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: another gateway holds") and what in line
    assert f"pid {os.getpid()}" in line and str(conf["a"]) in line
    for state in ("state-a", "state-b"):  # nothing was opened: no store, no events
        assert not (tmp_path / state / "sessions.db").exists()
        assert not (tmp_path / state / "events.jsonl").exists()


class DyingGateway:
    """Starts, and at once it must end (one of its threads ended)."""

    def __init__(self):
        self.fatal = None
        self.stopped = False
        self.store = self.events = SimpleNamespace(close=lambda: None)

    def start(self, on_fatal):
        self.fatal = LINE
        on_fatal(LINE)

    def stop(self):
        self.stopped = True


def test_a_gateway_that_must_end_exits_1_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("JVPN_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    cfg = SimpleNamespace(listen_port=51820, address="10.99.0.1/24", xdp_interface=None,
                          state_dir=tmp_path / "state", events_file=tmp_path / "events.jsonl",
                          metrics_listen=None)
    monkeypatch.setattr(jvpn.config, "load_gateway_config", lambda _path: cfg)
    gw = DyingGateway()
    monkeypatch.setattr(jvpn.gateway.build, "build_gateway", lambda _cfg, **_kw: gw)
    result = CliRunner().invoke(cli, ["gateway", "up", "--config", str(tmp_path / "gw.conf")])
    assert result.exit_code == 1 and gw.stopped
    assert result.stderr.strip().splitlines()[-1] == f"error: {LINE}"
    # the instance lock went with it: a restart may take it at once
    with claim_instance(cfg, tmp_path / "gw.conf", GatePaths(run_dir=tmp_path / "run")):
        pass
