"""The client's receive loop (jvpn/client_paths.py ``_udp_loop``) with real
UDP sockets: a socket that joins the set while the loop waits (a new
candidate's, whose PATH_CHALLENGE a switch waits for) is read at once, not
once the wait on the old sockets ends (issue 15: up to RECV_TIMEOUT_S, 200 ms,
on a silent path). The wait here is made endless: only the wake-up can end it."""

from __future__ import annotations

import socket
import threading

from test_client_paths import LTE, WIFI, Net

from jvpn import client_paths


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


class Loop:
    """The loop in a thread, reading real sockets; what it read, and how
    many times it waited."""

    def __init__(self, net: Net, monkeypatch):
        monkeypatch.setattr(client_paths, "RECV_TIMEOUT_S", None)  # no timeout at all
        self.c = c = net.client
        c.sock = udp_socket()
        c.candidates.open_socket = lambda _u: udp_socket()
        self.read: list[tuple[socket.socket, bytes]] = []
        self.got, self.waits = threading.Event(), 0
        c.receive_once = self.receive_once
        real_select = c.select_sockets

        def counted(r, w, x, timeout):
            self.waits += 1
            return real_select(r, w, x, timeout)

        c.select_sockets = counted
        self.thread = threading.Thread(target=c._udp_loop, daemon=True)

    def receive_once(self, sock) -> None:  # as Client.receive_once: a closed socket is nothing
        try:
            msg = sock.recvfrom(2048)[0]
        except OSError:
            return
        if msg:  # (a rebind's shutdown of the old socket reads as empty)
            self.read.append((sock, msg))
            self.got.set()

    def stop(self) -> None:
        self.c._stop.set()
        with udp_socket() as s:
            s.sendto(b"stop", self.c.sock.getsockname())  # ends the wait on the active one
        self.thread.join(5)


def test_a_candidate_opened_while_the_loop_waits_is_read_at_once(tmp_path, monkeypatch):
    loop = Loop(Net(tmp_path), monkeypatch)
    c = loop.c
    try:
        loop.thread.start()
        while loop.waits == 0:  # the loop waits on the active socket alone
            threading.Event().wait(0.001)
        c.candidates.refresh([WIFI, LTE], WIFI.key, WIFI.key)  # LTE's socket opens
        [lte] = c.candidates.sockets()
        with udp_socket() as gw:
            gw.sendto(b"challenge", lte.getsockname())
        assert loop.got.wait(10)  # the wait is endless: only the wake-up can end it
        assert loop.read == [(lte, b"challenge")]
    finally:
        loop.stop()
    assert not loop.thread.is_alive()


def test_a_rebinds_new_socket_is_read_at_once(tmp_path, monkeypatch):
    """A rebind's new socket is read at once as well (the old one's
    shutdown woke the loop before the wake-up did: kept as a guard)."""
    loop = Loop(Net(tmp_path), monkeypatch)
    c = loop.c
    c.start_reattach = lambda _why: None  # the reattach itself is not the subject
    c._new_socket = udp_socket
    try:
        loop.thread.start()
        while loop.waits == 0:
            threading.Event().wait(0.001)
        old = c.sock
        c.rebind()
        assert c.sock is not old
        with udp_socket() as gw:
            gw.sendto(b"ack", c.sock.getsockname())
        assert loop.got.wait(10)
        assert loop.read[-1] == (c.sock, b"ack")
    finally:
        loop.stop()
