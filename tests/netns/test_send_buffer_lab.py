"""Review k16r6 #2 on a real link: the kernel behaviour the gateway's send
path (jvpn/gateway/sending.py) rests on, and what tests/unit/test_send_buffer.py
models. The gateway's socket (open_listener) on a veth whose other end
answers ARP for the client's address only; datagrams to other on-link
addresses wait in the neighbour queue (~3 s) charged to the socket.

- SIOCOUTQ counts them: the cookie budget sees what silent neighbours hold;
- with the buffer full, a blocking send (SO_SNDTIMEO: what the gateway did
  before) waits a tick for nothing, a MSG_DONTWAIT one returns at once;
- cookie replies to silent neighbours stop at their share, and a reply to
  the live client still leaves and arrives;
- a data path that outruns the uplink (tbf at 20 Mbit/s) is paced by its
  half of the buffer, and the keepalive replies still leave (review k17b
  #1: with data MSG_DONTWAIT too, 84-99 % of them were dropped).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from jvpn.events import EventLog
from jvpn.gateway.listener import open_listener
from jvpn.gateway.sending import UNVERIFIED_SHARE, Sender, kernel_buffer_use
from jvpn.gateway.supervise import Incidents
from jvpn.lab.netns import Lab

pytestmark = pytest.mark.kernel

PORT = 51820
GW, CLIENT = "10.231.0.1", "10.231.0.2"
SNDBUF = 4096  # the kernel doubles it: 8 KiB, ten small datagrams


def _silent(i: int) -> tuple[str, int]:
    """An on-link address no neighbour answers for."""
    return f"10.231.0.{100 + i % 100}", 4000 + i


@pytest.fixture
def link(kernel_env):
    lab = Lab(("gw", "client"))
    lab.up()
    try:
        lab.veth("gw", "jsb0", f"{GW}/24", "client", "jsb1", f"{CLIENT}/24")
        with lab.inside("gw"):
            sock = open_listener(GW, PORT, 1 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        peer = lab.socket("client", socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind((CLIENT, PORT))
        peer.settimeout(2)
        sender = Sender(sock, Incidents(EventLog("send-lab"), lambda: 0))
        sender.sendto(b"hello", (CLIENT, PORT))  # the client's neighbour entry resolved
        assert peer.recvfrom(64)[0] == b"hello"
        yield sock, sender, peer, lab
        sock.close()
        peer.close()
    finally:
        lab.down()


def _fill(sock) -> int:
    sent = 0
    for i in range(1000):
        try:
            sock.sendto(b"c" * 64, socket.MSG_DONTWAIT, _silent(i))
        except BlockingIOError:
            return sent
        sent += 1
    raise AssertionError("the send buffer never filled")


def test_a_full_send_buffer_drops_at_once_where_a_blocking_send_waits_a_tick(link):
    sock, sender, _peer, _lab = link
    held = _fill(sock)
    queued, size = kernel_buffer_use(sock)
    assert held >= 1 and queued >= size  # the neighbour queue's datagrams are the socket's
    start = time.monotonic()
    for _ in range(5):
        with pytest.raises(BlockingIOError):
            sock.sendto(b"d", (CLIENT, PORT))  # as the gateway sent before
    waited = time.monotonic() - start
    start = time.monotonic()
    for _ in range(5):
        assert sender.sendto(b"d", (CLIENT, PORT)) == 0
    dropped = time.monotonic() - start
    assert waited >= 5 * 0.001, f"5 blocking sends took {waited * 1000:.1f} ms"
    assert dropped < waited / 4, f"dropped in {dropped * 1000:.2f} ms, waited {waited * 1000:.1f}"
    assert sender.counts()["buffer_full"] == 5


def test_cookie_replies_to_silent_neighbours_stop_at_their_share(link):
    sock, sender, peer, _lab = link
    for i in range(100):
        sender.send_unverified(b"c" * 64, _silent(i))
    queued, size = kernel_buffer_use(sock)
    one = queued // max(1, 100 - sender.counts()["unverified_budget"])  # one datagram's charge
    assert 0 < queued <= size * UNVERIFIED_SHARE + one
    assert sender.counts()["unverified_budget"] > 90
    assert sender.sendto(b"reply", (CLIENT, PORT)) == len(b"reply")
    assert peer.recvfrom(64)[0] == b"reply"


def _bulk(sender, dst, stop: threading.Event) -> None:
    """The TUN loop of a session whose inner traffic outruns the uplink:
    its turn (half the buffer), then a datagram, as DataPath.downstream."""
    data = b"x" * 1400
    while not stop.is_set():
        if sender.room_for_data():
            sender.sendto(data, dst)


def test_a_saturated_uplink_leaves_the_keepalive_replies_their_room(link):
    sock, sender, _peer, lab = link
    lab.run("gw", "tc", "qdisc", "add", "dev", "jsb0", "root", "tbf", "rate", "20mbit",
            "burst", "32kb", "limit", "20mb")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
    stop, left, tries = threading.Event(), 0, 0
    bulk = threading.Thread(target=_bulk, args=(sender, (CLIENT, PORT + 1), stop))
    bulk.start()
    try:
        time.sleep(0.3)  # the buffer at its data share
        end = time.monotonic() + 1.5
        busiest = 0
        while time.monotonic() < end:  # the UDP loop's keepalive replies
            tries += 1
            left += sender.sendto(b"k" * 80, (CLIENT, PORT)) > 0
            busiest = max(busiest, kernel_buffer_use(sock)[0])
            time.sleep(0.005)
    finally:
        stop.set()
        bulk.join()
    size = kernel_buffer_use(sock)[1]
    assert busiest >= size // 2 - 1500, "the uplink was not saturated"  # the data's half, used
    assert left >= 0.95 * tries, f"{left} of {tries} keepalive replies left"
