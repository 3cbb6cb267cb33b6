"""Review k18rall F2: at MaxSessions a peer keeps one attempt, and a retry's
new session replaced it at once; the client, which takes the answers to its
last ATTEMPTS_KEPT initiations within ANSWER_WINDOW_MS of each, then took
the late answer to the earlier initiation and held a session that was gone
(it found out only by timing out). At capacity an attempt now ends only
when its client can no longer take its answer: it expired, or the new
initiation went out after the earlier one's answer window closed (the
initiations' own timestamps), or the client has sent ATTEMPTS_KEPT newer.
A new attempt before that is refused GATEWAY_FULL, nothing changed.

Gateway and client clocks are injected: the gateway's ``Clock``, and each
initiation's timestamp (the client's wall clock, ``Initiator.clock_ns``)."""

from __future__ import annotations

from jvpn.codes import Reason
from jvpn.client_handshake import ANSWER_WINDOW_MS
from jvpn.config import ATTEMPTS_KEPT, UNCONFIRMED_TTL_MS
from jvpn.gate import abi
from jvpn.handshake import Initiator
from jvpn.keys import SessionKeys
from jvpn.tunnel import DataChannel
from kits.daemon_kit import (
    GW_PUB,
    PEER_KEYS,
    AdmitAll,
    Clock,
    events_of,
    handshake,
    make_gateway,
)

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


def _full_gateway(tmp_path, max_sessions: int = 2):
    """MaxSessions ``max_sessions``, one of them another peer's confirmed session."""
    clock = Clock()
    gate = AdmitAll()
    gate.max_sessions = max_sessions
    gw = make_gateway(tmp_path, gate=gate, clock=clock, cookie_threshold_per_s=10_000)
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
    gw, client = _full_gateway(tmp_path)
    client.send(0)
    before = (set(gw.sessions), len(gw.store.list()))
    claimed = gw.store._db.execute("SELECT COUNT(*) FROM initiations").fetchone()[0]
    _init, _msg, answer = client.send(500)
    assert answer is None and len(_full_refusals(gw)) == 1
    assert (set(gw.sessions), len(gw.store.list())) == before
    assert gw.store._db.execute("SELECT COUNT(*) FROM initiations").fetchone()[0] == claimed


def test_a_retry_after_the_earlier_answer_window_replaces_the_attempt(tmp_path):
    """The client sent the retry once it no longer took the first answer
    (its timestamp says so): the retry gets the room, the client its session."""
    gw, client = _full_gateway(tmp_path)
    first, _msg, _lost = client.send(0)
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


def test_the_first_answer_lost_the_client_s_later_retry_gets_a_session(tmp_path):
    """Its retries inside the first one's window are refused; the one after
    it is answered (the client's schedule sends one by 3.75-7.5 s)."""
    gw, client = _full_gateway(tmp_path)
    client.send(0)  # answered, the answer lost
    for at in (250, 750, 1750, 3750):
        assert client.send(at)[2] is None
    late, _msg, answer = client.send(6750)
    assert answer is not None and client.confirms(late, answer)
    assert len(gw.sessions) == 2 and len(_full_refusals(gw)) == 4


def test_a_replayed_refused_initiation_blocks_the_client_for_one_window_at_most(tmp_path):
    """A refused initiation is not claimed, so whoever captured it may send
    it again once there is room (an attacker that sees the path). Its
    attempt is replaced by the client's first initiation sent an answer
    window after it: no chain of replays keeps the peer out."""
    gw, client = _full_gateway(tmp_path)
    client.send(0)
    _init, captured, refused = client.send(3000)
    assert refused is None
    client.clock.ms = Clock().ms + UNCONFIRMED_TTL_MS + 1  # the first attempt expired
    n = len(gw.sock.sent)
    gw.datapath.datagram(captured, ("203.0.113.66", 9999))  # the replay: answered to it
    assert len(gw.sock.sent) == n + 1
    assert client.send(3000 + ANSWER_WINDOW_MS - 100)[2] is None  # inside its window
    honest, _msg, answer = client.send(3000 + ANSWER_WINDOW_MS + 200)
    assert answer is not None and client.confirms(honest, answer)


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
