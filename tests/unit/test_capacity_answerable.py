"""Review k18rall F2: at MaxSessions a peer keeps one attempt, and a retry's
new session replaced it at once; the client, which takes the answers to its
last ATTEMPTS_KEPT initiations within ANSWER_WINDOW_MS of each, then took
the late answer to the earlier initiation and held a session that was gone
(it found out only by timing out). At capacity an attempt now ends only
when its client can no longer take its answer: it expired, or the new
initiation went out after the earlier one's answer window closed (the
initiations' own timestamps), or the client has sent ATTEMPTS_KEPT newer.
A new attempt before that is refused GATEWAY_FULL, nothing changed, and
the earlier attempt's own answer is sent again to its source (review k19r1
R4: the first copy may be what was lost; the client, which keeps that
initiation, takes it and confirms).

Gateway and client clocks are injected: the gateway's ``Clock``, and each
initiation's timestamp (the client's wall clock, ``Initiator.clock_ns``)."""

from __future__ import annotations

import types

import pytest

from jvpn import client_handshake
from jvpn.client import Client as JvpnClient
from jvpn.codes import Reason
from jvpn.config import ANSWER_WINDOW_MS, ANSWERABLE_SLACK_MS, ATTEMPTS_KEPT, UNCONFIRMED_TTL_MS
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.handshake import Initiator
from jvpn.keys import SessionKeys
from jvpn.store.sqlite import SqliteStore
from jvpn.tunnel import DataChannel
from kits.daemon_kit import (
    GW_PUB,
    LISTEN,
    PEER_KEYS,
    AdmitAll,
    Clock,
    events_of,
    handshake,
    make_gateway,
)
from kits.virtual_socket import VirtualSocket

CLIENT = ("198.51.100.7", 4000)
OTHER = ("192.0.2.11", 5556)
T0_NS = 1_700_000_000_000_000_000
MS = 1_000_000


class Client:
    """Peer 0's initiations, each stamped ``at_ms`` after T0 on its clock."""

    def __init__(self, gw, clock: Clock):
        self.gw, self.clock = gw, clock

    def send(self, at_ms: int, src=CLIENT) -> tuple[Initiator, bytes, bytes | None]:
        """The initiation (its gateway clock at ``at_ms`` too), and the answer, if any."""
        self.clock.ms = Clock().ms + at_ms
        init = Initiator(PEER_KEYS[0], GW_PUB, clock_ns=lambda: T0_NS + at_ms * MS)
        msg = init.initiation()
        n = len(self.gw.sock.sent)
        self.gw.datapath.datagram(msg, src)
        answers = [m for m, to in self.gw.sock.sent[n:] if to == src]
        return init, msg, answers[0] if answers else None

    def confirms(self, init: Initiator, answer: bytes, src=CLIENT) -> bool:
        """The client takes ``answer``: its first keepalive confirms that session?"""
        _assignment, keys = init.response(answer)
        self.gw.datapath.datagram(_keepalive(keys), src)
        live = self.gw.sessions.get(keys.session_id)
        return live is not None and live.confirmed


def _keepalive(keys: SessionKeys) -> bytes:
    return DataChannel(keys, "client").seal(b"", abi.MSG_KEEPALIVE)


def _full_gateway(tmp_path, max_sessions: int = 2, store=None, restart: bool = False):
    """MaxSessions ``max_sessions``, one of them another peer's confirmed
    session (``restart``: restored from ``store``)."""
    clock = Clock()
    gate = AdmitAll()
    gate.max_sessions = max_sessions
    gw = make_gateway(tmp_path, gate=gate, clock=clock, cookie_threshold_per_s=10_000,
                      store=store)
    if restart:
        gw.reconcile()
        return gw, Client(gw, clock)
    other = handshake(gw, src=OTHER, peer=1)
    gw.datapath.datagram(other.seal(b"", abi.MSG_KEEPALIVE), OTHER)
    assert gw.sessions[other.session_id].confirmed
    return gw, Client(gw, clock)


def _full_refusals(gw) -> list[dict]:
    return [e for e in events_of(gw.events, "HandshakeRejected")
            if e["reason_code"] == Reason.GATEWAY_FULL]


def test_at_capacity_the_late_answer_to_the_earlier_initiation_names_a_live_session(tmp_path):
    """The F2 case: the first answer comes after the retry went out (a slow
    store, a long path), and the client takes it (it is within its window
    and among its last ATTEMPTS_KEPT initiations)."""
    gw, client = _full_gateway(tmp_path)
    first, _msg, late_answer = client.send(0)
    assert late_answer is not None and gw.table.full()
    _retry, _msg, _answer = client.send(500)  # the retry, before the late answer came
    assert client.confirms(first, late_answer), "the answer taken names a session gone"
    assert len(gw.sessions) == 2


def test_the_retry_is_refused_gateway_full_and_nothing_changes(tmp_path):
    """Refused, it gets the first initiation's answer again, nothing more."""
    gw, client = _full_gateway(tmp_path)
    _first, _msg, first_answer = client.send(0)
    before = (set(gw.sessions), len(gw.store.list()))
    claimed = gw.store._db.execute("SELECT COUNT(*) FROM initiations").fetchone()[0]
    _init, msg, answer = client.send(500)
    assert answer == first_answer and len(_full_refusals(gw)) == 1
    assert len(answer) < len(msg)  # no amplification
    assert (set(gw.sessions), len(gw.store.list())) == before
    assert gw.store._db.execute("SELECT COUNT(*) FROM initiations").fetchone()[0] == claimed


def test_a_retry_after_the_earlier_answer_window_replaces_the_attempt(tmp_path):
    """The client sent the retry once it no longer took the first answer
    (its timestamp says so): the retry gets the room, the client its session."""
    gw, client = _full_gateway(tmp_path)
    client.send(0)  # its answer lost
    retry, _msg, answer = client.send(ANSWER_WINDOW_MS + 200)
    assert answer is not None and not _full_refusals(gw)
    assert client.confirms(retry, answer) and len(gw.sessions) == 2


def test_a_retry_once_the_attempt_expired_replaces_it(tmp_path):
    """Timestamps close together (a client clock that was set back, or
    replays of one burst) but the gateway's attempt past its TTL: it would
    end at the next tick; the retry takes its room now."""
    gw, client = _full_gateway(tmp_path)
    client.send(0)
    client.clock.ms = Clock().ms + UNCONFIRMED_TTL_MS + 1
    init = Initiator(PEER_KEYS[0], GW_PUB, clock_ns=lambda: T0_NS + MS)
    n = len(gw.sock.sent)
    gw.datapath.datagram(init.initiation(), CLIENT)
    [(answer, _to)] = gw.sock.sent[n:]
    assert client.confirms(init, answer) and len(gw.sessions) == 2


def test_the_first_answer_lost_the_client_s_next_retry_takes_it_again(tmp_path):
    """Its retry inside the first one's window is refused and answered with
    the first one's answer, which the client still takes: its session."""
    gw, client = _full_gateway(tmp_path)
    first, _msg, first_answer = client.send(0)  # answered, the answer lost
    _retry, _msg, answer = client.send(250)
    assert answer == first_answer and client.confirms(first, answer)
    assert len(gw.sessions) == 2 and len(_full_refusals(gw)) == 1
    assert not gw.table.answers  # confirmed: its answer is kept no more


def test_every_answer_lost_the_client_s_attempts_kept_th_retry_gets_a_new_attempt(tmp_path):
    """The first answer and its copies lost: once the client has sent
    ATTEMPTS_KEPT initiations newer than the first (refused ones count: it
    keeps its last ATTEMPTS_KEPT), it takes the first's answer no more, and
    the attempt is replaced at once, not 4.1 s after the first."""
    gw, client = _full_gateway(tmp_path)
    _first, _msg, first_answer = client.send(0)
    for at in range(250, 250 * ATTEMPTS_KEPT, 250):
        assert client.send(at)[2] == first_answer
    retry, _msg, answer = client.send(250 * ATTEMPTS_KEPT)
    assert answer not in (None, first_answer) and client.confirms(retry, answer)
    assert len(gw.sessions) == 2 and len(_full_refusals(gw)) == ATTEMPTS_KEPT - 1


def test_the_answer_goes_again_only_to_the_attempt_s_source(tmp_path):
    """From another source (an attacker holding a copy of the client's
    newer initiation, or a client whose NAT moved it): refused without it;
    the client's confirmation from there would be refused too (control.py)."""
    gw, client = _full_gateway(tmp_path)
    client.send(0)
    _init, _msg, answer = client.send(250, src=("203.0.113.66", 9999))
    assert answer is None and len(_full_refusals(gw)) == 1


def test_a_restored_attempt_has_no_answer_to_send_again(tmp_path):
    """After a restart the response is gone (only memory kept it): the
    refusal is silent, as before."""
    store = SqliteStore(tmp_path / "s.db")
    gw, client = _full_gateway(tmp_path, store=store)
    client.send(0)
    gw, client = _full_gateway(tmp_path, store=store, restart=True)
    assert len(gw.table.unconfirmed) == 1 and not gw.table.answers
    assert client.send(250)[2] is None and len(_full_refusals(gw)) == 1
    store.close()


def test_an_attempt_s_answer_is_dropped_when_it_ends(tmp_path):
    gw, client = _full_gateway(tmp_path)
    client.send(0)
    assert len(gw.table.answers) == 1
    client.clock.ms = Clock().ms + UNCONFIRMED_TTL_MS + 1
    gw.controlpath.expire_unconfirmed()
    assert not gw.table.unconfirmed and not gw.table.answers and not gw.table.refused


def test_the_refused_initiation_replayed_once_there_is_room_is_refused(tmp_path):
    """A refused initiation is claimed nowhere: whoever saw it (an attacker
    watching the path) could send it again once the attempt ended and
    spend the peer's room, answered to itself. It is spent here instead."""
    gw, client = _full_gateway(tmp_path)
    client.send(0)
    _init, captured, _first_again = client.send(3000)
    assert len(_full_refusals(gw)) == 1
    client.clock.ms = Clock().ms + UNCONFIRMED_TTL_MS + 1  # the first attempt is past
    n = len(gw.sock.sent)
    gw.datapath.datagram(captured, ("203.0.113.66", 9999))
    assert gw.sock.sent[n:] == []
    assert events_of(gw.events, "HandshakeRejected")[-1]["reason_code"] == Reason.REPLAY_DETECTED
    honest, _msg, answer = client.send(UNCONFIRMED_TTL_MS + 1)
    assert answer is not None and client.confirms(honest, answer)


def test_replayed_after_a_restart_it_holds_the_client_off_for_one_window_at_most(tmp_path):
    """A restart forgets what was spent; the store kept no claim of the
    refused initiation, so its replay makes an attempt answered to the
    replayer. The client's initiations stamped inside that initiation's
    answer window are refused; the first one after it replaces it: the
    replayer holds no newer initiation of the client, no chain of replays
    keeps the peer out."""
    store = SqliteStore(tmp_path / "s.db")
    gw, client = _full_gateway(tmp_path, store=store)
    client.send(0)
    _init, captured, _first_again = client.send(3000)
    assert len(_full_refusals(gw)) == 1
    gw, client = _full_gateway(tmp_path, store=store, restart=True)
    client.clock.ms = Clock().ms + UNCONFIRMED_TTL_MS + 1  # the first attempt is past
    n = len(gw.sock.sent)
    gw.datapath.datagram(captured, ("203.0.113.66", 9999))  # answered to the replayer
    assert len(gw.sock.sent) == n + 1
    assert client.send(3000 + ANSWER_WINDOW_MS - 100)[2] is None  # inside its window
    assert len(_full_refusals(gw)) == 1
    honest, _msg, answer = client.send(3000 + ANSWER_WINDOW_MS + 200)
    assert answer is not None and client.confirms(honest, answer)
    store.close()


def test_below_capacity_the_retry_is_answered_and_both_attempts_stay(tmp_path):
    gw, client = _full_gateway(tmp_path, max_sessions=10)
    first, _msg, late_answer = client.send(0)
    _retry, _msg, answer = client.send(500)
    assert answer is not None and len(gw.table.unconfirmed) == 2
    assert client.confirms(first, late_answer)


def test_at_capacity_attempts_kept_before_it_are_replaced_only_when_answerable_no_more(tmp_path):
    """Attempts made before the gateway filled up: at capacity the oldest is
    replaced once the client has sent ATTEMPTS_KEPT newer ones (it no
    longer keeps that initiation), as below capacity; the count never grows."""
    gw, client = _full_gateway(tmp_path, max_sessions=1 + ATTEMPTS_KEPT)
    sent = [client.send(100 * i) for i in range(ATTEMPTS_KEPT)]
    assert gw.table.full() and len(gw.table.unconfirmed) == ATTEMPTS_KEPT
    newest, _msg, answer = client.send(100 * ATTEMPTS_KEPT)
    assert answer is not None and len(gw.sessions) == 1 + ATTEMPTS_KEPT
    kept = [init.response(ans)[1].session_id in gw.sessions for init, _m, ans in sent]
    assert kept == [False] + [True] * (ATTEMPTS_KEPT - 1)  # the oldest alone replaced
    assert client.confirms(newest, answer)


# ------------------------------------------------- the client's side of it
class Link(VirtualSocket):
    """The client's socket to the real gateway, on a virtual clock (the
    gateway's too): an initiation reaches it at once; its answer comes
    ``delays[k]`` s later for the k-th answered one (None: lost). The
    receive advances the clock to the next arrival or by the timeout."""

    source = LISTEN

    def __init__(self, gw, clock: Clock, delays: list[float | None]):
        super().__init__()
        self.gw, self.clock, self.delays = gw, clock, list(delays)
        self.initiations = 0

    def monotonic(self) -> float:
        return self.now

    def clock_ms(self) -> int:
        return int(self.now * 1000)

    def sendto(self, msg: bytes, _dst) -> int:
        self.clock.ms = Clock().ms + self.clock_ms()
        self.initiations += msg[0] == abi.MSG_HANDSHAKE_INIT
        n = len(self.gw.sock.sent)
        self.gw.datapath.datagram(msg, CLIENT)
        for answer, _to in self.gw.sock.sent[n:]:
            delay = self.delays.pop(0) if self.delays else 0.0
            if delay is not None:
                self.pending.append((self.now + delay, answer))
        return len(msg)



def _stamped_by(link: Link):
    """The client's Initiator, its timestamps (its wall clock) the link's
    virtual clock (the gateway's, T0 on): not the real one, three years
    ahead of the gateway's (refused: HANDSHAKE_AHEAD_MAX_MS)."""
    return lambda priv, pub, clock_ns=None: Initiator(  # the link's, not the client's clock
        priv, pub, clock_ns=lambda: T0_NS + int(link.now * 1000) * MS)


def _client_up(monkeypatch, tmp_path, delays: list[float | None], rand: float):
    """`client up`'s handshake at MaxSessions; its session's first keepalive."""
    gw, peer0 = _full_gateway(tmp_path)
    link = Link(gw, peer0.clock, delays)
    monkeypatch.setattr(client_handshake, "time", types.SimpleNamespace(monotonic=link.monotonic))
    monkeypatch.setattr(client_handshake, "Initiator", _stamped_by(link))
    client = JvpnClient(private_key=PEER_KEYS[0], gateway_public=GW_PUB, endpoint=LISTEN,
                        events=EventLog("client-test", clock_ms=link.clock_ms),
                        clock_ms=link.clock_ms, socket_factory=lambda: link,
                        rand=lambda: rand)
    client.sock = link
    client.handshake()
    link.sendto(client.channel.seal(b"", abi.MSG_KEEPALIVE), LISTEN)
    return gw, client, link


@pytest.mark.parametrize("rand", [0.0, 1.0])
def test_the_client_takes_the_late_first_answer_at_capacity_and_its_session_confirms(
        monkeypatch, tmp_path, rand):
    """Every answer comes 0.6 s after its initiation (a slow store, a long
    path), so the first one after the first retry went out (0.25-0.5 s):
    the retry is refused, and the answer the client takes (the first)
    names a session that exists."""
    gw, client, link = _client_up(monkeypatch, tmp_path, [0.6, 0.6, 0.6], rand)
    live = gw.sessions.get(client.session_id)
    assert live is not None and live.confirmed, "the client holds a session gone"
    assert link.now == pytest.approx(0.6) and link.initiations == 2


@pytest.mark.parametrize("rand", [0.0, 0.5, 1.0])
def test_the_first_answer_lost_at_capacity_the_first_retry_gets_it_again(
        monkeypatch, tmp_path, rand):
    """Its first retry (0.25-0.5 s) is refused and answered with the first
    answer again: the client takes it and its session confirms (before the
    k19r1 R4 fix: no answer until a retry 4.1 s past the first)."""
    gw, client, link = _client_up(monkeypatch, tmp_path, [None], rand)
    live = gw.sessions.get(client.session_id)
    assert live is not None and live.confirmed
    assert link.now <= 0.5 and link.initiations == 2


@pytest.mark.parametrize("lost", [2, 3, 4])
@pytest.mark.parametrize("rand", [0.0, 1.0])
def test_at_capacity_lost_answers_do_not_end_the_client_s_handshake(
        monkeypatch, tmp_path, lost, rand):
    """Review k19r1 R4: two lost answers (then any up to its last send)
    ended `client up` (HandshakeFailed; a Reconnect renewal stops the agent):
    of its HANDSHAKE_ATTEMPTS sends only those 4.1 s past its first could be
    answered. Now every refused one gets an answer the client takes, or a
    new attempt once it has sent ATTEMPTS_KEPT newer than the first."""
    gw, client, _link = _client_up(monkeypatch, tmp_path, [None] * lost, rand)
    live = gw.sessions.get(client.session_id)
    assert live is not None and live.confirmed


def test_a_retry_is_never_stamped_where_the_gateway_refuses_but_the_client_takes_no_answer(
        monkeypatch, tmp_path):
    """At capacity the gateway holds the client's attempt answerable until an
    initiation stamped ANSWER_WINDOW_MS + ANSWERABLE_SLACK_MS after it (4.1 s,
    the client's own timestamps), while the client takes that answer within
    ANSWER_WINDOW_MS (4.0 s, its timer clock). A retry stamped in between
    was refused and got that answer again, which the client dropped, and it
    needed one retry more (stop 24's "not done"). The client holds such a
    retry (under 0.1 s, listening) until the gateway's rule gives it the
    room: here its first answer is lost and its retry is due 4.05 s after it."""
    gw, peer0 = _full_gateway(tmp_path)
    link = Link(gw, peer0.clock, [None])
    monkeypatch.setattr(client_handshake, "time", types.SimpleNamespace(monotonic=link.monotonic))
    monkeypatch.setattr(client_handshake, "Initiator", _stamped_by(link))
    client = JvpnClient(private_key=PEER_KEYS[0], gateway_public=GW_PUB, endpoint=LISTEN,
                        events=EventLog("client-test", clock_ms=link.clock_ms),
                        clock_ms=link.clock_ms, socket_factory=lambda: link)
    client.sock = link
    schedule = [ANSWER_WINDOW_MS + 50] + [1_000] * 5  # ms before each next attempt
    client.handshake_wait = types.SimpleNamespace(delay_ms=schedule.__getitem__)
    client.handshake()
    link.sendto(client.channel.seal(b"", abi.MSG_KEEPALIVE), LISTEN)
    live = gw.sessions.get(client.session_id)
    assert live is not None and live.confirmed
    assert link.initiations == 2, "the retry in the gap was refused: one retry more"
    assert not _full_refusals(gw)
    assert link.now < (ANSWER_WINDOW_MS + ANSWERABLE_SLACK_MS + 10) / 1000


def test_a_wall_clock_step_between_initiations_never_leaves_the_client_a_session_gone(
        monkeypatch, tmp_path):
    """Review k20rall F1. At MaxSessions the attempt of the client's first initiation is
    replaced once the retry's TIMESTAMP (the client's wall clock) is
    ANSWER_WINDOW_MS + 100 ms past the first's (new_session.answerable),
    while the client's own answer window runs on its TIMER clock
    (client_handshake._opened). A wall clock stepped forward between the
    two initiations (NTP/timesyncd stepping the clock at boot, exactly when
    `client up` runs) makes the gateway end the first attempt 0.3 s after
    it was made; the first answer, delayed 0.6 s (a slow store, a long
    path), is still inside the client's window: it takes it and holds a
    session the gateway ended (the k18rall F2 failure, again)."""
    gw, peer0 = _full_gateway(tmp_path)
    link = Link(gw, peer0.clock, [0.6, 0.6, 0.6])
    monkeypatch.setattr(client_handshake, "time", types.SimpleNamespace(monotonic=link.monotonic))
    step_ns = 5_000 * MS  # the wall clock stepped 5 s forward after the first initiation
    made = []

    def initiator(private, gateway_public, clock_ns=None):  # its own, not the client's
        stamp = T0_NS + link.clock_ms() * MS + (step_ns if made else 0)
        made.append(stamp)
        return Initiator(private, gateway_public, clock_ns=lambda: stamp)

    monkeypatch.setattr(client_handshake, "Initiator", initiator)
    client = JvpnClient(private_key=PEER_KEYS[0], gateway_public=GW_PUB, endpoint=LISTEN,
                        events=EventLog("client-test", clock_ms=link.clock_ms),
                        clock_ms=link.clock_ms, socket_factory=lambda: link,
                        rand=lambda: 0.0)
    client.sock = link
    client.handshake()
    link.sendto(client.channel.seal(b"", abi.MSG_KEEPALIVE), LISTEN)
    assert len(made) >= 2 and link.now < 1.0  # a retry went out; the first answer taken
    live = gw.sessions.get(client.session_id)
    assert live is not None and live.confirmed, \
        "the client took the first attempt's answer; the gateway had ended that attempt"
