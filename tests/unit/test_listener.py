"""Issue 10 item 15, local port theft: while the gateway listens, an
unprivileged local user (uid 65534, through setpriv) must not be able to
bind the gateway's port, on its address or on a more specific one, with
SO_REUSEADDR or SO_REUSEPORT. The same attempt against a socket opened the
old way (SO_REUSEADDR on the gateway's socket) binds and receives the
client's datagram. Issue 11: the gateway's dual-stack socket ([::]) closes
the IPv6 side too: ``[::]:PORT`` with IPV6_V6ONLY, which an IPv4-only
listener left to anyone, is refused."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import struct
import subprocess

import pytest

from jvpn.errors import JvpnError
from jvpn.gateway.listener import SEND_WAIT_US, open_listener

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv to act as uid 65534")

# runs as uid 65534: bind, report, then wait for one datagram (the theft)
_THIEF = """
import socket, sys
addr, port, opt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
if ":" in addr:  # IPv6 only: beside an IPv4 listener, the kernel lets this bind
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
if opt != "none":
    s.setsockopt(socket.SOL_SOCKET, getattr(socket, opt), 1)
try:
    s.bind((addr, port))
except OSError as e:
    print("refused", e.errno, flush=True)
    sys.exit(0)
print("bound", flush=True)
s.settimeout(5)
try:
    print("stole", s.recv(100).decode(), flush=True)
except socket.timeout:
    print("nothing", flush=True)
"""


def _legacy_listener(addr: str, port: int, rcvbuf: int) -> socket.socket:
    """What Gateway.__init__ did before this fix."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((addr, port))
    return sock


def _attempt_theft(addr: str, port: int, opt: str) -> str:
    thief = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "/usr/bin/python3", "-c", _THIEF, addr, str(port), opt],
        stdout=subprocess.PIPE, text=True)
    first = thief.stdout.readline().split()
    if first == ["bound"]:  # a client's datagram to the gateway, sent now
        v6 = ":" in addr
        with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(b"HANDSHAKE_INIT", ("::1" if v6 else "127.0.0.1", port))
    rest = thief.communicate(timeout=10)[0].split()
    return " ".join(first + rest)


# (the gateway's address, the thief's): the IPv4-only listener is the
# socket on a host without IPv6; beside it IPv6 is open (the control below)
BINDS = [("0.0.0.0", "0.0.0.0"), ("0.0.0.0", "127.0.0.1"),
         ("::", "0.0.0.0"), ("::", "127.0.0.1"), ("::", "::"), ("::", "::1")]


@pytest.mark.parametrize(("gateway_addr", "thief_addr"), BINDS)
@pytest.mark.parametrize("opt", ["SO_REUSEADDR", "SO_REUSEPORT", "none"])
def test_unprivileged_user_cannot_bind_the_gateway_port(gateway_addr, thief_addr, opt):
    gateway = open_listener(gateway_addr, 0, 1 << 20)
    port = gateway.getsockname()[1]
    try:
        outcome = _attempt_theft(thief_addr, port, opt)
        assert outcome == f"refused {errno.EADDRINUSE}", outcome
    finally:
        gateway.close()


@pytest.mark.parametrize("thief_addr", ["0.0.0.0", "127.0.0.1"])
def test_the_same_attempt_steals_from_a_socket_opened_the_old_way(thief_addr):
    """The control: the attack above works on the pre-fix socket."""
    gateway = _legacy_listener("0.0.0.0", 0, 1 << 20)
    port = gateway.getsockname()[1]
    try:
        outcome = _attempt_theft(thief_addr, port, "SO_REUSEADDR")
        assert outcome == "bound stole HANDSHAKE_INIT", outcome
    finally:
        gateway.close()


@pytest.mark.parametrize("thief_addr", ["::", "::1"])
def test_an_ipv4_only_listener_leaves_the_ipv6_port_to_anyone(thief_addr):
    """The control of the residual the dual-stack socket closes: beside the
    old IPv4-only listener (no reuse option at all), uid 65534 binds the
    port over IPv6 and receives an IPv6 client's datagram."""
    gateway = open_listener("0.0.0.0", 0, 1 << 20)
    assert gateway.family == socket.AF_INET
    port = gateway.getsockname()[1]
    try:
        outcome = _attempt_theft(thief_addr, port, "none")
        assert outcome == "bound stole HANDSHAKE_INIT", outcome
    finally:
        gateway.close()


def test_listener_sets_no_reuse_option_and_its_buffer():
    sock = open_listener("127.0.0.1", 0, 1 << 20)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 1 << 20
        assert not sock.get_inheritable()
        # a send waits at most SEND_WAIT_US for room (rounded up to one kernel
        # tick: at most 10 ms at HZ=100), then the datagram is dropped
        seconds, micros = struct.unpack("ll", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.calcsize("ll")))
        assert seconds == 0 and SEND_WAIT_US <= micros <= 10_000
    finally:
        sock.close()


def test_a_taken_port_is_one_clear_line():
    first = open_listener("127.0.0.1", 0, 1 << 16)
    port = first.getsockname()[1]
    try:
        with pytest.raises(JvpnError) as exc:
            open_listener("0.0.0.0", port, 1 << 16)
        message = str(exc.value)
        assert "\n" not in message and f":{port}" in message and "in use" in message
    finally:
        first.close()
