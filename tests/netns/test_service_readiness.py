"""`gateway up` and `client up` as systemd runs them (contrib/systemd/), in
the lab: readiness on a real datagram $NOTIFY_SOCKET, the journal's
priority prefix, SIGUSR1 reopening the events file, a reload (SIGHUP)
between RELOADING=1 and READY=1 that reopens it too, STOPPING=1 at stop.

The gate is attached, and the gateway and the client run, with only the
capabilities of their unit's CapabilityBoundingSet (`setpriv
--bounding-set`): what the units allow is enough for XDP, the pinned maps,
the ring buffer, the TUN and the routes. (The units' other sandboxing, e.g.
ProtectSystem, needs systemd as PID 1 and is not exercised here.)
"""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from jvpn.lab.addresses import CLIENT_INNER, PORT
from jvpn.lab.running import read_jsonl
from jvpn.lab.tunnel import TunnelLab

pytestmark = pytest.mark.kernel

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"


def bounding_set(unit: str) -> list[str]:
    """``setpriv`` keeping only the unit's CapabilityBoundingSet."""
    line = re.search(r"^CapabilityBoundingSet=(.*)$", (UNITS / unit).read_text(), re.M)
    caps = ",".join("+" + c.removeprefix("CAP_").lower() for c in line.group(1).split())
    return ["setpriv", f"--bounding-set=-all,{caps}", "--"]


def capabilities(pid: int) -> set[str]:
    """The effective capabilities of a process, as the units name them."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(re.search(r"^CapEff:\s*([0-9a-f]+)$", status, re.M).group(1), 16)
    out = subprocess.run(["capsh", f"--decode={mask:x}"], capture_output=True, text=True,
                         check=True).stdout
    return {c.upper() for c in out.strip().split("=", 1)[1].split(",")}


def unit_caps(unit: str) -> set[str]:
    line = re.search(r"^CapabilityBoundingSet=(.*)$", (UNITS / unit).read_text(), re.M)
    return set(line.group(1).split())


class Notified:
    """A datagram socket as systemd's $NOTIFY_SOCKET: what arrives, in order."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def next(self, timeout: float) -> list[str]:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode().split("\n")

    def close(self) -> None:
        self.sock.close()


class ServiceLab(TunnelLab):
    """The tunnel lab with its processes run as the units run them."""

    def __init__(self, tmp: Path):
        super().__init__(tmp)
        self.gw_notify = Notified(tmp / "gw.notify")
        self.cl_notify = Notified(tmp / "cl.notify")
        self.client_wrap = tuple(bounding_set("jvpn-client@.service"))

    def jvpn_in(self, role, env, *args, timeout: float = 60):
        if args and args[0] in ("attach", "detach"):  # as jvpn-gate@ runs them
            cmd = self.lab.cmd(role, *bounding_set("jvpn-gate@.service"),
                               *self.lab.jvpn_cmd(*args))
            return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        return super().jvpn_in(role, env, *args, timeout=timeout)

    def start_gateway(self) -> None:
        log = self.tmp / "gateway.log"
        log.touch()
        st = log.stat()  # the gateway's stderr is this file: "the journal" for this test
        env = {**self.env, "NOTIFY_SOCKET": self.gw_notify.path,
               "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        self.gateway = self.lab.spawn(
            "gw", *bounding_set("jvpn-gateway.service"),
            *self.lab.jvpn_cmd("gateway", "up", "--config", str(self.tmp / "gateway.conf")),
            log=log, env=env)
        self.ready = self.gw_notify.next(timeout=90)
        self.at_ready = self.gateway_state()

    def gateway_state(self) -> dict:
        """What is true of the gateway right now."""
        probe = self.lab.socket("gw", socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            probe.bind(("::", PORT))
            bound = False
        except OSError as e:
            bound = e.errno == errno.EADDRINUSE
        finally:
            probe.close()
        return {"udp_bound": bound,
                "started": any(e["event_type"] == "GatewayStarted"
                               for e in read_jsonl(self.events_file)),
                "operator_socket": (self.tmp / "run" / "gateway.sock").exists(),
                "alive": self.gateway.poll() is None,
                "caps": capabilities(self.gateway.pid)}

    def client_env(self) -> dict:
        return {**self.env, "NOTIFY_SOCKET": self.cl_notify.path}

    def down(self) -> None:
        try:
            super().down()
        finally:
            self.gw_notify.close()
            self.cl_notify.close()


def test_ready_only_once_serving_then_reopen_and_stopping(tmp_path):
    lab = ServiceLab(tmp_path)
    lab.up()
    try:
        assert lab.ready[0] == "READY=1" and lab.ready[1].startswith("STATUS=up on :"), lab.ready
        assert lab.at_ready == {"udp_bound": True, "started": True, "operator_socket": True,
                                "alive": True,
                                "caps": unit_caps("jvpn-gateway.service")}, lab.logs()
        assert capabilities(lab.client.pid) == unit_caps("jvpn-client@.service")
        [started] = [e for e in read_jsonl(lab.events_file) if e["event_type"] == "GatewayStarted"]
        assert started["listen"] == f"[::]:{PORT}"  # the dual-stack socket, not a tuple's repr
        # a second gateway on the same StateDir and port is refused: it never says READY
        second = Notified(tmp_path / "second.notify")
        try:
            refused = subprocess.run(
                lab.lab.cmd("gw", *lab.lab.jvpn_cmd("gateway", "up", "--config",
                                                    str(tmp_path / "gateway.conf"))),
                env={**lab.env, "NOTIFY_SOCKET": second.path}, capture_output=True, text=True,
                timeout=60)
            assert refused.returncode == 1 and "another gateway holds" in refused.stderr
            with pytest.raises(TimeoutError):
                second.next(timeout=0.5)
        finally:
            second.close()
        # the client (up by now: its inner address is set) said READY once its session was up
        cl_ready = lab.cl_notify.next(timeout=10)
        assert cl_ready[0] == "READY=1" and cl_ready[1].startswith("STATUS=session "), cl_ready
        assert CLIENT_INNER in lab.lab.run("cl", "ip", "-4", "addr", "show").stdout
        # the log lines carry the journal's priority: info = <6>
        assert re.search(r"^<6>jvpn gateway up on :\d+", (tmp_path / "gateway.log").read_text(),
                         re.M), lab.logs()

        events = lab.events_file
        events.rename(events.with_name("events.jsonl.rotated"))  # logrotate
        os.kill(lab.gateway.pid, signal.SIGUSR1)
        lab.wait(events.exists, "the events file reopened", proc=lab.gateway)

        # systemctl reload: RELOADING=1 (with the time) ... READY=1, then the file reopened
        events.rename(events.with_name("events.jsonl.rotated2"))
        os.kill(lab.gateway.pid, signal.SIGHUP)
        reloading = lab.gw_notify.next(timeout=30)
        assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC="), (
            reloading)
        assert lab.gw_notify.next(timeout=30)[0] == "READY=1"
        lab.wait(events.exists, "the events file reopened by the reload", proc=lab.gateway)
        assert "GatewayReloaded" in events.with_name("events.jsonl.rotated2").read_text()

        lab.client.send_signal(signal.SIGTERM)
        assert lab.cl_notify.next(timeout=30)[0] == "STOPPING=1"
        assert lab.client.wait(timeout=30) == 0
        lab.gateway.send_signal(signal.SIGTERM)
        assert lab.gw_notify.next(timeout=30) == ["STOPPING=1", "STATUS=stopping"]
        assert lab.gateway.wait(timeout=30) == 0, lab.logs()
        # after the reopen, lines go to the new file at the path, none to the renamed one
        assert [e["event_type"] for e in read_jsonl(events)][-1] == "GatewayStopped"
        assert "GatewayStopped" not in events.with_name("events.jsonl.rotated").read_text()
    finally:
        lab.down()
