"""`jvpn-xdp gateway up` when a gateway thread ends: the command stops the
gateway and exits 1 with one line (issue 10 item 2), so that the lease
lapses and the service manager restarts it. The daemon is faked; its
supervisor is tested in tests/unit/test_daemon_robust.py."""

from __future__ import annotations

import os
from types import SimpleNamespace

from click.testing import CliRunner

import jvpn.config
import jvpn.gateway.build
from jvpn_cli.main import cli

LINE = "gateway thread 'udp' ended (EIO: Input/output error): stopping"


class DyingGateway:
    """Starts, and at once one of its threads ends."""

    def __init__(self):
        self.fatal = None
        self.stopped = False
        self.store = self.events = SimpleNamespace(close=lambda: None)

    def start(self, on_fatal):
        self.fatal = LINE
        on_fatal(LINE)

    def stop(self):
        self.stopped = True


def test_a_dead_gateway_thread_exits_1_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    cfg = SimpleNamespace(listen_port=51820, address="10.99.0.1/24", xdp_interface=None,
                          events_file=tmp_path / "events.jsonl")
    monkeypatch.setattr(jvpn.config, "load_gateway_config", lambda _path: cfg)
    gw = DyingGateway()
    monkeypatch.setattr(jvpn.gateway.build, "build_gateway", lambda _cfg, **_kw: gw)
    result = CliRunner().invoke(cli, ["gateway", "up", "--config", str(tmp_path / "gw.conf")])
    assert result.exit_code == 1 and gw.stopped
    assert result.output.strip().splitlines()[-1] == f"error: {LINE}"
