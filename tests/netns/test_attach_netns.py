"""The gate on a real link: two network namespaces of this test's own joined
by a veth pair, `jvpn-xdp attach` run inside the gateway namespace, real UDP
and ICMP sent from the client namespace, and the results read back through
the CLI (`stats --json`, `status --json`, `sessions --json`).

Nothing leaves the namespaces: the addresses (jvpn/lab/addresses.py, ATTACH_*)
exist only on the veth pair.

The CLI runs in the gateway namespace through `nsenter --net=/run/netns/NS`,
not `ip netns exec`: the latter also remounts /sys for the namespace, which
hides the bpf filesystem at /sys/fs/bpf (test_ip_netns_exec_explains_hidden_bpffs
checks that the CLI says so in one line).

The namespaces, the veth pair and the sockets inside a namespace come from
the one lab harness (jvpn/lab/netns.py); a socket stays in the namespace it
was made in.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jvpn import wire
from jvpn.gate import abi, pins
from jvpn.gate import attach as gate_attach
from jvpn.lab.addresses import (
    ATTACH_BOUND_PORT,
    ATTACH_CL_IP,
    ATTACH_GW_IP,
    ATTACH_OTHER_PORT,
    ATTACH_PORT,
    ATTACH_STRANGER_PORT,
    LAN_PREFIX,
)
from jvpn.lab.netns import Lab
from jvpn_cli.views import IDENTITY

pytestmark = pytest.mark.kernel

GW_IF, CL_IF = "jvgw0", "jvcl0"  # names inside the namespaces only
GW_IP, CL_IP = ATTACH_GW_IP, ATTACH_CL_IP
PORT, OTHER_PORT = ATTACH_PORT, ATTACH_OTHER_PORT
BOUND_PORT, STRANGER_PORT = ATTACH_BOUND_PORT, ATTACH_STRANGER_PORT
KEY = bytes(range(16))
ETH_IP_UDP = 14 + 20 + 8  # frame bytes before the UDP payload (IPv4, no options)
QUIET = 0.3  # seconds to wait for a datagram that must not arrive



def _cli_command() -> list[str]:
    script = Path(sys.executable).with_name("jvpn-xdp")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "jvpn_cli.main"]


# ---------------------------------------------------------------- the lab


class AttachLab:
    """Two namespaces of the one lab harness (:class:`jvpn.lab.netns.Lab`,
    roles "gw" and "cl") joined by a veth pair, and a pin root and run dir of
    this test's own; the harness removes a crashed run's leftovers."""

    gw, cl = "gw", "cl"  # the roles

    def __init__(self):
        self.net = Lab((self.gw, self.cl))
        self.pin_root = self.net.pin_root()
        self.run_dir = self.net.run_dir("run")
        self.env = {**os.environ, "JVPN_PIN_ROOT": str(self.pin_root),
                    "JVPN_RUN_DIR": str(self.run_dir)}
        self._sockets: list[socket.socket] = []

    @property
    def pin_dir(self) -> Path:
        return self.pin_root / GW_IF

    def setup(self) -> None:
        self.net.up()
        self.net.veth(self.gw, GW_IF, f"{GW_IP}/{LAN_PREFIX}", self.cl, CL_IF,
                      f"{CL_IP}/{LAN_PREFIX}")

    def destroy(self) -> None:
        for s in self._sockets:  # a socket keeps its namespace alive
            s.close()
        self._sockets.clear()
        self.net.down()
        shutil.rmtree(self.pin_root, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- the CLI, inside the gateway namespace --
    def cli(self, *args: str, netns_exec: bool = False) -> subprocess.CompletedProcess:
        cmd = _cli_command() + list(args)
        enter = (["ip", "netns", "exec", self.net.ns(self.gw), *cmd] if netns_exec
                 else self.net.cmd(self.gw, *cmd))
        return subprocess.run(enter, check=False, env=self.env, capture_output=True, text=True,
                              timeout=300)

    def cli_ok(self, *args: str) -> str:
        r = self.cli(*args)
        assert r.returncode == 0, f"jvpn-xdp {' '.join(args)}: rc {r.returncode}\n{r.stderr}"
        assert "Traceback" not in r.stderr
        return r.stdout

    def cli_json(self, *args: str):
        return json.loads(self.cli_ok(*args, "--json"))

    def cli_error(self, *args: str) -> str:
        r = self.cli(*args)
        assert r.returncode == 1, r
        assert "Traceback" not in r.stderr
        assert r.stdout == ""
        line, = r.stderr.strip().splitlines()
        assert line.startswith("error: ")
        return line

    def counters(self) -> dict:
        return self.cli_json("stats", GW_IF)[GW_IF]

    # -- sockets made inside a namespace (a socket stays in it) --
    def udp(self, role: str, addr: str, port: int = 0) -> socket.socket:
        s = self.net.socket(role, socket.AF_INET, socket.SOCK_DGRAM)
        self._sockets.append(s)
        s.bind((addr, port))
        s.settimeout(2.0)
        return s

    def icmp(self, role: str) -> socket.socket:
        s = self.net.socket(role, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self._sockets.append(s)
        s.settimeout(2.0)
        return s

    def prog_id(self):
        with self.net.inside(self.gw):
            return gate_attach.xdp_prog_id(GW_IF)


@pytest.fixture
def lab():
    lab = AttachLab()
    try:
        lab.setup()
        yield lab
    finally:
        lab.destroy()


@pytest.fixture
def gate(lab):
    """The lab with the gate attached to the gateway's veth, on PORT."""
    out = lab.cli_ok("attach", GW_IF, "--port", str(PORT))
    assert GW_IF in out and f"{PORT} (UDP)" in out and str(lab.pin_dir) in out
    assert "mode:    native" in out  # veth has native XDP: no fallback note
    assert "note:" not in out
    return lab


# ---------------------------------------------------------------- traffic


def recv_all(sock: socket.socket, timeout: float = QUIET) -> list[tuple[bytes, tuple]]:
    got, old = [], sock.gettimeout()
    sock.settimeout(timeout)
    try:
        while True:
            got.append(sock.recvfrom(65535))
    except (TimeoutError, BlockingIOError):
        pass
    finally:
        sock.settimeout(old)
    return got


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(sock: socket.socket, dst: str, seq: int) -> bool:
    ident, payload = os.getpid() & 0xFFFF, b"jvpn netns test ping"
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    csum = _checksum(hdr + payload)
    sock.sendto(struct.pack("!BBHHH", 8, 0, csum, ident, seq) + payload, (dst, 0))
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            data, _ = sock.recvfrom(2048)
        except TimeoutError:
            return False
        icmp = data[(data[0] & 0x0F) * 4:]
        if icmp[0] == 0 and struct.unpack("!HH", icmp[4:8]) == (ident, seq):
            return True
    return False


class Traffic:
    """The client's sockets and the gateway's listeners of one test."""

    def __init__(self, lab: AttachLab):
        self.lab = lab
        self.jvpn_listener = lab.udp(lab.gw, GW_IP, PORT)
        self.other_listener = lab.udp(lab.gw, GW_IP, OTHER_PORT)
        self.client = lab.udp(lab.cl, CL_IP)
        self._sentinels = 0

    def settle(self) -> None:
        """Send a datagram to the other port and wait for it: the veth queue
        is in order, so every packet sent before it has been through XDP."""
        self._sentinels += 1
        mark = f"sentinel {self._sentinels}".encode()
        self.client.sendto(mark, (GW_IP, OTHER_PORT))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            data, _ = self.other_listener.recvfrom(65535)
            if data == mark:
                return
        raise AssertionError("the sentinel datagram did not arrive")


def data_msg(sid: int, counter: int, payload: bytes = b"p" * 48) -> bytes:
    return wire.message(wire.Header(type=abi.MSG_DATA, session_id=sid, counter=counter),
                        KEY, payload)


# ---------------------------------------------------------------- tests


def test_gate_passes_other_traffic_and_drops_unknown_and_malformed(gate):
    lab = gate
    t = Traffic(lab)

    # (a) not for jvpn: UDP to another port and ICMP must pass
    others = [f"other {i}".encode() for i in range(3)]
    for m in others:
        t.client.sendto(m, (GW_IP, OTHER_PORT))
    got = [d for d, _ in recv_all(t.other_listener, 1.0)]
    assert got == others
    assert ping(lab.icmp(lab.cl), GW_IP, 1), "ping through the gate got no reply"

    # (b) jvpn-shaped DATA naming sessions the gate does not know
    unknown = [data_msg(0xDEAD_0000 + i, i + 1) for i in range(5)]
    for m in unknown:
        t.client.sendto(m, (GW_IP, PORT))
    # (c) shorter than the 32-byte header
    truncated = [b"short", unknown[0][:31]]
    for m in truncated:
        t.client.sendto(m, (GW_IP, PORT))
    t.settle()

    assert recv_all(t.jvpn_listener) == [], "a dropped datagram reached the jvpn port"

    c = lab.counters()
    assert set(c) == set(abi.COUNTER_NAMES.values())
    assert c["drop_unknown_session"] == {
        "packets": len(unknown), "bytes": sum(ETH_IP_UDP + len(m) for m in unknown)}
    assert c["drop_malformed"] == {
        "packets": len(truncated), "bytes": sum(ETH_IP_UDP + len(m) for m in truncated)}
    # 3 datagrams, 1 echo request, 1 sentinel; ARP and IPv6 ND come on top
    assert c["pass_other"]["packets"] >= len(others) + 2
    for name in ("pass_data", "pass_keepalive", "pass_control", "pass_handshake",
                 "drop_replay", "drop_wrong_binding", "drop_bad_tag", "drop_state"):
        assert c[name]["packets"] == 0, name

    # the table shows non-zero counters only, unless --all
    text = lab.cli_ok("stats", GW_IF)
    assert "drop_unknown_session" in text and "drop_malformed" in text
    assert "pass_data" not in text
    assert "pass_data" in lab.cli_ok("stats", "--all")

    status = lab.cli_json("status")
    assert len(status) == 1
    s = status[0]
    assert s["ifname"] == GW_IF and s["mode"] == "native" and s["ports"] == [PORT]
    assert s["pin_dir"] == str(lab.pin_dir) and s["pinned"] is True
    assert s["prog_id"] == lab.prog_id() and s["prog_id"]
    assert s["sessions"] == 0 and s["sessions_error"] is None
    assert s["attached_at"] <= time.time()


def test_session_binding_and_replay(gate):
    lab = gate
    t = Traffic(lab)
    bound = lab.udp(lab.cl, CL_IP, BOUND_PORT)
    stranger = lab.udp(lab.cl, CL_IP, STRANGER_PORT)
    sid = 0x1234_5678_9ABC_DEF0

    replay_bits = lab.cli_json("status")[0]["replay_bits"]
    with pins.GateMaps(lab.pin_dir, replay_bits) as gm:
        gm.put_session(sid, abi.Session(
            tag_key=wire.key_words(KEY), key_phases=abi.key_phase_bit(0),
            state=abi.STATE_ATTACHED, version=3, fence=2,
            bind_addr=abi.addr_words(CL_IP), bind_port=abi.port_word(BOUND_PORT),
            bind_family=abi.AF_INET))

    first = data_msg(sid, 1)
    bound.sendto(first, (GW_IP, PORT))
    got = recv_all(t.jvpn_listener, 2.0)
    assert got == [(first, (CL_IP, BOUND_PORT))]

    bound.sendto(first, (GW_IP, PORT))  # the same packet again: a replay
    stranger.sendto(data_msg(sid, 2), (GW_IP, PORT))  # authentic, but not from the binding
    t.settle()
    assert recv_all(t.jvpn_listener) == []

    c = lab.counters()
    assert c["pass_data"] == {"packets": 1, "bytes": ETH_IP_UDP + len(first)}
    assert c["drop_replay"]["packets"] == 1
    assert c["drop_wrong_binding"]["packets"] == 1
    assert c["drop_unknown_session"]["packets"] == 0
    assert c["drop_bad_tag"]["packets"] == 0

    out = lab.cli_json("sessions", GW_IF)
    assert list(out) == [GW_IF]
    row, = out[GW_IF]
    assert row == {
        "session_id": f"{sid:016x}", "state": "ATTACHED", "version": 3, "fence": 2,
        "owner": None,  # no gateway daemon has described these maps
        "bound": f"{CL_IP}:{BOUND_PORT}", "bind_addr": CL_IP, "bind_port": BOUND_PORT,
        "rx_packets": 1, "rx_bytes": len(first), "highest_counter": 1,
        **dict.fromkeys(IDENTITY),  # no gateway daemon: no peer, no key, nothing sent
    }
    assert lab.cli_json("sessions") == out  # every attachment: the one we have
    text = lab.cli_ok("sessions")
    assert f"{sid:016x}"[:8] + "…" in text and f"{CL_IP}:{BOUND_PORT}" in text
    assert f"{sid:016x}" in lab.cli_ok("sessions", "--wide")
    assert lab.cli_json("status")[0]["sessions"] == 1


def test_unbound_session_shows_dashes(gate):
    lab = gate
    replay_bits = lab.cli_json("status")[0]["replay_bits"]
    with pins.GateMaps(lab.pin_dir, replay_bits) as gm:
        gm.put_session(7, abi.Session(tag_key=wire.key_words(KEY), state=abi.STATE_BIRTH))
    row, = lab.cli_json("sessions")[GW_IF]
    assert row["session_id"] == "0000000000000007" and row["state"] == "BIRTH"
    assert row["bound"] == "-" and row["bind_addr"] is None
    assert row["rx_packets"] is None and row["highest_counter"] is None
    assert "00000000…" in lab.cli_ok("sessions", GW_IF)


def test_detach_removes_program_pins_and_record(gate):
    lab = gate
    assert lab.prog_id()
    assert lab.pin_dir.is_dir() and (lab.pin_dir / "prog").exists()
    assert (lab.run_dir / f"{GW_IF}.json").exists()
    assert "already attached" in lab.cli_error("attach", GW_IF, "--port", str(PORT))

    out = lab.cli_ok("detach", GW_IF)
    assert "detached" in out and GW_IF in out

    assert lab.prog_id() is None
    link, = json.loads(lab.net.run(lab.gw, "ip", "-j", "link", "show", "dev", GW_IF).stdout)
    assert "xdp" not in link
    assert not lab.pin_dir.exists()
    assert not (lab.run_dir / f"{GW_IF}.json").exists()
    assert lab.cli_json("status") == []
    assert "not attached" in lab.cli_error("stats")
    assert "not attached" in lab.cli_error("detach", GW_IF)

    # and the port is an ordinary port again: the unknown session gets through
    t = Traffic(lab)
    m = data_msg(0xDEAD, 1)
    t.client.sendto(m, (GW_IP, PORT))
    assert [d for d, _ in recv_all(t.jvpn_listener, 2.0)] == [m]


def test_ip_netns_exec_explains_hidden_bpffs(lab):
    """`ip netns exec` mounts a fresh sysfs on /sys: no bpffs under it."""
    r = lab.cli("attach", GW_IF, "--port", str(PORT), netns_exec=True)
    assert r.returncode == 1, r
    assert "Traceback" not in r.stderr
    line, = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and "not on a bpf filesystem" in line
    assert lab.prog_id() is None
    assert not (lab.run_dir / f"{GW_IF}.json").exists()
