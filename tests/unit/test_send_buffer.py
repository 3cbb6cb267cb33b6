"""Review k16r6 #2: a full send buffer must not stall the gateway.

A datagram to an on-link neighbour that never answers ARP waits in the
kernel (~3 s) charged to the socket that sent it. An off-path spoofer that
makes the gateway answer such sources (cookie replies to spoofed
initiations) keeps the send buffer full; then each send waited one kernel
tick (SO_SNDTIMEO) and was dropped anyway: under the control lock a timer
batch of 128 TERMINATEs held it ~0.5 s, and the replies and data of live
clients were lost too. Now no send waits (MSG_DONTWAIT: dropped and
counted) and cookie replies hold at most their share of the buffer
(jvpn/gateway/sending.py). The socket here is Linux's send buffer as
tests/netns/test_send_buffer_lab.py shows the kernel keeps it."""

from __future__ import annotations

import errno
import socket
import time

from test_timer_storm import P, storm, ticks_until_none_attached

from jvpn.gate import abi
from jvpn.gateway import sending
from jvpn.gateway.snapshot import health
from jvpn.gateway.tally import EventTally
from jvpn.handshake import Initiator
from kits.daemon_kit import (
    ADDRESS,
    CLIENT,
    GW_PUB,
    PEER_INNER,
    PEER_KEYS,
    FakeSock,
    handshake,
    ipv4,
    make_gateway,
)

TICK_S = 0.004  # how long SO_SNDTIMEO waits for room: one tick at HZ=250
TRUESIZE = 832  # what one small datagram charges the socket (SIOCOUTQ, measured)
SILENT = "198.18."  # on-link sources no neighbour answers for (the storm's bindings too)


class LinuxSendBuffer(FakeSock):
    """The gateway's UDP socket with Linux's send-buffer accounting: a
    datagram to a silent neighbour holds TRUESIZE bytes (until its ARP
    fails, not within a test); a send that finds the buffer full fails
    with EAGAIN, after waiting one tick unless it is MSG_DONTWAIT."""

    def __init__(self, size: int = 8 * 1024):
        super().__init__()
        self.size, self.held, self.waits = size, 0, 0

    def sendto(self, msg: bytes, *args) -> int:
        flags, dst = (args[0] if len(args) == 2 else 0), args[-1]
        if self.held >= self.size:
            if not flags & socket.MSG_DONTWAIT:
                self.waits += 1
                time.sleep(TICK_S)
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        if dst[0].startswith(SILENT):
            self.held += TRUESIZE
        return super().sendto(msg, dst)

    def send_buffer_use(self) -> tuple[int, int]:
        return self.held, self.size

    def fill(self) -> None:
        self.held = self.size


def _terminates(sock) -> int:
    return len([m for m, _to in sock.sent if m[0] == abi.MSG_TERMINATE])


def test_a_batch_of_terminates_into_a_full_send_buffer_never_waits_and_is_counted(tmp_path):
    n = 64
    sock = LinuxSendBuffer()
    gw, _store, _gate = storm(tmp_path, n, sock=sock)
    ticks_until_none_attached(gw)
    gw.policy = P.__class__(**{**P.as_dict(), "recovery_expiry_terminates": True})
    gw.clock_ms.ms += P.volatile_to_degraded_ms + 1
    sock.fill()  # e.g. cookie replies to silent sources, before the fix
    for _ in range(20):
        gw.tick()
        if not gw.sessions:
            break
    assert not gw.sessions  # every session ended, told or not
    assert sock.waits == 0, f"{sock.waits} sends waited a tick each under the control lock"
    assert _terminates(sock) == 0 and gw.sender.counts()["buffer_full"] == n
    assert health(gw)["send_drops"] == {"buffer_full": n, "unverified_budget": 0, "data_share": 0}
    assert _scraped_drops(gw) == {"buffer_full": n, "unverified_budget": 0, "data_share": 0}


def _scraped_drops(gw) -> dict[str, float]:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415
    from unit.test_inspect import _scrape  # noqa: PLC0415

    from jvpn.gateway.metrics import GatewayCollector  # noqa: PLC0415

    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(EventTally(gw.timer_ms), gw, "jvpn-gw", max_age_s=0))
    return {dict(labels)["reason"]: v for (name, labels), v in _scrape(registry).items()
            if name == "jvpn_send_drops_total"}


def test_replies_and_data_to_a_live_client_never_wait_on_a_full_buffer(tmp_path):
    sock = LinuxSendBuffer()
    gw = make_gateway(tmp_path, sock=sock)
    peer = handshake(gw)
    gw.datapath.datagram(peer.seal(ipv4(PEER_INNER[0])), CLIENT)  # confirms the session
    sent = len(sock.sent)
    sock.fill()
    gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), CLIENT)  # its reply: dropped
    gw.datapath.downstream(ipv4(ADDRESS.ip, str(PEER_INNER[0])))  # data: dropped
    assert sock.waits == 0 and len(sock.sent) == sent
    # the reply found no room; the data found the buffer past its half
    # (the data path's share: it leaves the rest to replies) and was not sealed
    assert gw.sender.counts()["buffer_full"] == 1 and gw.sender.counts()["data_share"] == 1
    sock.held = 0  # the kernel freed what it held: the next ones leave
    gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), CLIENT)
    assert [to for _m, to in sock.sent[sent:]] == [CLIENT]


def _spoofed_initiations(gw, count: int) -> None:
    """Valid-looking initiations (a configured peer's, replayable by anyone
    who saw one) from silent on-link sources: each earns a cookie reply."""
    for i in range(count):
        gw.datapath.datagram(Initiator(PEER_KEYS[1], GW_PUB).initiation(),
                             (f"{SILENT}0.{i % 250 + 1}", 1000 + i))


def test_cookie_replies_to_silent_sources_leave_the_sessions_their_room(tmp_path):
    sock = LinuxSendBuffer()
    gw = make_gateway(tmp_path, sock=sock)
    peer = handshake(gw)
    gw.datapath.datagram(peer.seal(ipv4(PEER_INNER[0])), CLIENT)
    gw.admission.cookie_threshold = 0  # under load: every initiation gets a cookie
    tally = EventTally(gw.timer_ms)
    gw.events.add_listener(tally)
    _spoofed_initiations(gw, 100)
    assert sock.held <= sock.size * sending.UNVERIFIED_SHARE + TRUESIZE
    dropped = gw.sender.counts()["unverified_budget"]
    assert dropped > 0
    assert tally.cookie_replies == 100 - dropped  # counted as sent: those that left
    sent = len(sock.sent)
    gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), CLIENT)
    gw.datapath.downstream(ipv4(ADDRESS.ip, str(PEER_INNER[0])))
    assert sock.waits == 0
    assert [to for _m, to in sock.sent[sent:]] == [CLIENT, CLIENT]  # the reply, the data


def test_a_handshake_response_is_not_held_back_by_the_cookie_budget(tmp_path):
    """The answer to a proven initiation with a valid cookie (its source
    received our cookie reply) goes out of the sessions' room."""
    sock = LinuxSendBuffer()
    gw = make_gateway(tmp_path, sock=sock)
    gw.admission.cookie_threshold = 0
    ini = Initiator(PEER_KEYS[0], GW_PUB)
    gw.datapath.datagram(ini.initiation(), CLIENT)
    [(reply, to)] = sock.sent
    assert to == CLIENT
    ini.consume_cookie(reply)
    _spoofed_initiations(gw, 100)  # the cookie budget is used up now
    assert gw.sender.counts()["unverified_budget"] > 0
    gw.datapath.datagram(ini.initiation(), CLIENT)  # with the cookie (mac2)
    msg, to = sock.sent[-1]
    assert to == CLIENT and msg[0] == abi.MSG_HANDSHAKE_RESP
    ini.response(msg)  # a response the client accepts


def test_what_the_socket_dropped_is_not_counted_as_sent(tmp_path):
    """Review k17b #3: a datagram the Sender drops (the socket said EAGAIN)
    returns 0, and the session's sent counts (jvpn-xdp sessions tx_*, the
    per-peer sent bytes) only count what left."""
    gw = make_gateway(tmp_path)
    peer = handshake(gw)
    gw.datapath.datagram(peer.seal(ipv4(PEER_INNER[0])), CLIENT)  # confirms the session
    [live] = gw.table.sessions.values()
    def sent():
        f = live.traffic.figures()
        return f["tx_packets"], f["tx_bytes"]

    before = sent()
    real = gw.sock.sendto

    def full(_msg, *_args):
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    gw.sock.sendto = full
    try:
        for _ in range(3):
            gw.datapath.downstream(ipv4(ADDRESS.ip, str(PEER_INNER[0])))
        gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), CLIENT)
    finally:
        gw.sock.sendto = real
    assert gw.sender.counts()["buffer_full"] == 4
    assert sent() == before
