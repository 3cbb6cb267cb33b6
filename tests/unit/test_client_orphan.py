"""Issue 12, the client's part: retries back off (doubled, capped, jittered
with injected randomness), the orphan rule (OrphanTimeout of authenticated
silence; an unauthenticated hint only shortens it, and never ends a session
whose gateway still answers), the client's TERMINATE when it stops, and
handshake failures that name their likely causes.

The client runs on the injected socket and clock of test_client_source."""

from __future__ import annotations

import errno
import socket
import struct

import pytest
from test_client_source import GW, Rig

from jvpn import wire
from jvpn.backoff import Backoff
from jvpn.client_causes import Observed, cause_line
from jvpn.client_icmp import SO_EE_ORIGIN_ICMP
from jvpn.client_orphan import OrphanWatch
from jvpn.config import RETRY_CAP_MS
from jvpn.gate import abi


@pytest.fixture
def rig():
    return Rig()


# ------------------------------------------------------------------ back-off
def test_backoff_doubles_to_the_cap_with_jitter_in_the_upper_half():
    low, high = Backoff(400, 4_000, rand=lambda: 0.0), Backoff(400, 4_000, rand=lambda: 1.0)
    assert [high.delay_ms(k) for k in range(7)] == [400, 800, 1600, 3200, 4000, 4000, 4000]
    assert [low.delay_ms(k) for k in range(7)] == [200, 400, 800, 1600, 2000, 2000, 2000]
    assert Backoff(400, 4_000, rand=lambda: 0.5).delay_ms(1) == 600
    assert high.delay_ms(10_000) == 4_000  # no overflow, however long it runs


def test_backoff_refuses_nonsense():
    with pytest.raises(ValueError):
        Backoff(0, 10)
    with pytest.raises(ValueError):
        Backoff(500, 400)


def test_an_unanswered_reattach_is_retried_less_and_less_often(rig):
    """The bug: a forgotten client sent a request every 0.4 s, forever. Now
    a minute of silence costs a handful of copies of the same request."""
    client = rig.client
    client.retry = Backoff(client.retry_ms, RETRY_CAP_MS, rand=lambda: 1.0)
    client.start_reattach("moved")
    start = rig.clock.ms
    for _ in range(60_000 // 50):
        rig.clock.ms += 50
        client.reattach_timers(rig.clock.ms)
    sent = rig.sent_of(abi.MSG_REATTACH_REQ)
    # 400, 800, 1600, 3200 ms then every 4 s: about 18 in a minute, not 150
    assert 12 <= len(sent) <= 20
    fields = {rig.gateway.request_fields(m)[0] for m, _ in rig.sent_of(abi.MSG_REATTACH_REQ)}
    assert fields == {client.pending.seq}  # the same request (same sequence) again
    assert rig.clock.ms - start == 60_000


# ------------------------------------------------------------------ the orphan rule
def test_silence_for_the_timeout_ends_the_session():
    w = OrphanWatch(timeout_ms=20_000, now=0)
    for t in range(50, 20_000, 50):
        assert w.tick(t) is None
    assert "no answer from the gateway for 20 s" in w.tick(20_000)


def test_an_authenticated_message_starts_the_wait_again():
    w = OrphanWatch(timeout_ms=20_000, now=0)
    for t in range(50, 35_000, 50):
        if t == 15_000:
            w.heard(t)
        assert w.tick(t) is None
    assert w.tick(35_000) is not None


def test_time_the_client_did_not_run_is_not_silence():
    """A laptop suspended for an hour: on resume the client asks the gateway
    (reattach) before it gives up, for a whole OrphanTimeout."""
    w = OrphanWatch(timeout_ms=20_000, now=0)
    w.tick(50)
    resumed = 3_600_000
    for t in range(resumed, resumed + 20_000, 50):
        assert w.tick(t) is None
    assert w.tick(resumed + 20_000) is not None


def test_a_silent_gateway_ends_the_client_within_the_timeout(rig):
    """Through the client: keepalives and reattach requests go unanswered
    (the gateway forgot the session): the monitor's tick ends it, with the
    line ``client up`` prints and a SessionTerminated event, at the bound."""
    client = rig.client
    client.orphan = OrphanWatch(timeout_ms=6_000, now=rig.clock.ms)
    start = rig.clock.ms
    while not client._stop.is_set():
        rig.clock.ms += 50
        client.reattach_timers(rig.clock.ms)
        client.orphan_tick(rig.clock.ms)
        assert rig.clock.ms - start <= 6_000
    assert rig.clock.ms - start == 6_000
    assert client.failed == "ORPHANED"
    assert client.ended == ("no answer from the gateway for 6 s: session presumed ended "
                            "(OrphanTimeout)")
    [e] = [e for e in rig.events.recent if e["event_type"] == "SessionTerminated"]
    assert e["reason_code"] == "ORPHANED"


class RefusingSocket:
    """Wraps a FakeSocket: every receive fails with ECONNREFUSED and the
    error queue holds a port unreachable for a datagram sent to ``dst``."""

    def __init__(self, inner, dst):
        self.inner, self.dst, self.queued = inner, dst, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def sendto(self, msg, dst):
        self.queued += 1  # nothing listens: each datagram earns an ICMP error
        return len(msg)

    def recvfrom(self, _size):
        if self.queued:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")
        raise TimeoutError

    def recvmsg(self, _size, _anc, flags):
        assert flags & socket.MSG_ERRQUEUE
        if not self.queued:
            raise BlockingIOError
        self.queued -= 1
        ee = struct.pack("=IBBBBII", errno.ECONNREFUSED, SO_EE_ORIGIN_ICMP, 3, 3, 0, 0, 0)
        return b"", [(socket.IPPROTO_IP, 11, ee + bytes(16))], 0, self.dst


def test_unauthenticated_reject_and_terminate_from_the_gateway_address_end_nothing(rig):
    """What an off-path spoofer can send from the gateway's address and
    port: a REJECT SESSION_NOT_FOUND or a TERMINATE it cannot seal."""
    client = rig.client
    for t, body in ((abi.MSG_REATTACH_REJECT, wire.REATTACH_REJECT.pack(0, 0, 0)),
                    (abi.MSG_TERMINATE, wire.TERMINATE.pack(0))):
        hdr = wire.Header(type=t, session_id=client.session_id, counter=10**6)
        client.receive(hdr.pack(b"\0" * 16) + body + bytes(wire.MAC_LEN), GW)
    assert client.failed is None and not client._stop.is_set()


# ------------------------------------------------------------------ the client's TERMINATE
def test_a_stopping_client_sends_one_authenticated_terminate(rig):
    client = rig.client
    client.down()
    client.down()  # idempotent: once
    [(msg, to)] = rig.sent_of(abi.MSG_TERMINATE)
    hdr, (reason,) = wire.open_control(msg, rig.gateway.keys.reattach)
    assert to == GW and hdr.session_id == client.session_id
    assert hdr.tag_valid(rig.gateway.keys.hdr_c2s)
    assert wire.TERMINATE_REASONS[reason] == "CLIENT_STOPPED"
    assert hdr.counter > 0  # from the session's own counter


def test_no_terminate_after_the_gateway_ended_the_session(rig):
    client = rig.client
    client.receive(rig.gateway.control(abi.MSG_TERMINATE, 0), GW)
    assert client.failed == "TTL_SESSION_EXPIRED"
    assert client.ended == "session ended by the gateway: TTL_SESSION_EXPIRED"
    client.down()
    assert rig.sent_of(abi.MSG_TERMINATE) == []


def test_a_client_that_gave_up_still_tells_the_gateway(rig):
    client = rig.client
    client.session_over("ORPHANED", "no answer from the gateway for 20 s")
    client.down()
    assert len(rig.sent_of(abi.MSG_TERMINATE)) == 1


# ------------------------------------------------------------------ handshake causes
EP = ("192.0.2.1", 51900)


@pytest.mark.parametrize("seen,words", [
    (Observed(attempts=4), ["no answer at all", "Endpoint", "PeersFile", "PublicKey",
                            "firewall"]),
    (Observed(attempts=4, refused=3), ["ICMP port unreachable", "nothing listens",
                                       "ListenPort"]),
    (Observed(attempts=4, cookies=4), ["under load", "HandshakesPerSecond"]),
    (Observed(attempts=4, undecryptable=4), ["did not decrypt", "PublicKey"]),
    (Observed(attempts=4, strangers=2), ["another address", "Endpoint"]),
    (Observed(attempts=4, unsent=4, unsent_why="Network is unreachable"),
     ["Network is unreachable", "route to 192.0.2.1", "Endpoint"]),
], ids=["silence", "refused", "cookies", "undecryptable", "strangers", "unsent"])
def test_each_observation_names_its_causes(seen, words):
    line = cause_line(seen, EP, 12.0)
    assert "\n" not in line and line.startswith("no session with the gateway 192.0.2.1:51900")
    for w in words:
        assert w in line


def test_a_refusing_port_is_told_apart_from_silence(rig):
    client = rig.client
    client.sock = RefusingSocket(client.sock, GW)
    with pytest.raises(Exception, match="ICMP port unreachable") as err:
        client.handshake(attempts=2)
    assert "nothing listens on UDP port 51900" in str(err.value) and "(2x)" in str(err.value)


def test_an_icmp_error_about_another_destination_is_not_counted(rig):
    client = rig.client
    client.sock = RefusingSocket(client.sock, ("198.51.100.9", 53))
    with pytest.raises(Exception, match="no answer at all"):
        client.handshake(attempts=2)


# ------------------------------------------------------------------ progress
def test_the_handshake_reports_each_attempt(rig):
    lines = []
    rig.client.progress = lines.append
    rig.client.sock = RefusingSocket(rig.client.sock, ("198.51.100.9", 53))
    with pytest.raises(Exception, match="no answer at all"):
        rig.client.handshake(attempts=2)
    assert lines == ["handshake with 192.0.2.1:51900, attempt 1/2",
                     "handshake with 192.0.2.1:51900, attempt 2/2"]


def test_progress_is_shown_on_a_terminal_only(monkeypatch):
    from jvpn_cli.client import progress_printer  # noqa: PLC0415

    printed = []

    class Err:  # the app's stderr console
        @staticmethod
        def print(line, markup=True):
            printed.append(line)

    class App:
        err = Err

    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert progress_printer(App) is None
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    progress_printer(App)("handshake attempt 1/4")
    assert printed == ["jvpn client: handshake attempt 1/4"]


def test_resolving_is_a_progress_step(monkeypatch):
    from jvpn_cli.client import _resolving  # noqa: PLC0415

    monkeypatch.setattr("jvpn.config.resolve_host", lambda host, port: "192.0.2.1")
    lines = []
    assert _resolving(lines.append)("gw.example", 51900) == "192.0.2.1"
    assert lines == ["resolving gw.example"]
    assert _resolving(None)("gw.example", 51900) == "192.0.2.1"  # quiet: the resolver itself


def test_a_clock_set_back_does_not_stall_the_wait():
    w = OrphanWatch(timeout_ms=20_000, now=3_600_000)
    w.tick(3_600_050)
    for t in range(50, 20_050, 50):  # an hour back: the wait starts again (at 50), no stall
        assert w.tick(t) is None
    assert w.tick(20_050) is not None
