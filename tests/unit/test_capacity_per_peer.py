"""Issue 15 review, capacity: one peer's initiations never fill MaxSessions
(ATTEMPTS_KEPT unconfirmed sessions per peer, a new attempt replaces the
oldest; at capacity they do not grow: tests/unit/test_capacity_answerable.py),
and a peer
that holds a session may handshake again at capacity (its confirmation
ends the old one: the count comes back)."""

from __future__ import annotations

from test_handshake_commit import _group_gateway

from jvpn.codes import Reason
from jvpn.config import ATTEMPTS_KEPT, UNCONFIRMED_TTL_MS
from jvpn.gate import abi
from jvpn.lab.wait import wait_until
from jvpn.store import StoreError
from jvpn.store.group_commit import GroupCommit
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import AdmitAll, Clock, Peer, events_of, handshake, initiation, make_gateway


def _full_refusals(gw) -> list[dict]:
    return [e for e in events_of(gw.events, "HandshakeRejected")
            if e["reason_code"] == Reason.GATEWAY_FULL]


def _confirm(gw, peer: Peer, src) -> None:
    gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), src)
    assert gw.sessions[peer.session_id].confirmed


def test_one_peer_never_confirming_does_not_lock_the_others_out(tmp_path):
    gate = AdmitAll()
    gate.max_sessions = 8
    gw = make_gateway(tmp_path, gate=gate, cookie_threshold_per_s=10_000)
    for i in range(8):  # fresh initiations from many ports, none confirmed
        gw.datapath.datagram(initiation(0).initiation(), ("198.51.100.7", 40000 + i))
    assert len(gw.table.unconfirmed) == ATTEMPTS_KEPT == len(gw.store.list())  # the last ones
    handshake(gw, src=("192.0.2.11", 5556), peer=1)  # answered
    assert not _full_refusals(gw)


def test_the_replacing_attempt_is_answered_at_capacity_and_the_last_one_confirms(tmp_path):
    gate, clock = AdmitAll(), Clock()
    gate.max_sessions = 2
    gw = make_gateway(tmp_path, gate=gate, clock=clock)
    _confirm(gw, handshake(gw, src=("192.0.2.11", 5556), peer=1), ("192.0.2.11", 5556))
    handshake(gw, src=("198.51.100.7", 4000), peer=0)  # an attempt, never confirmed
    clock.ms += UNCONFIRMED_TTL_MS + 1  # its answer past (review k18rall F2: not before)
    last = handshake(gw, src=("198.51.100.7", 4001), peer=0)  # at capacity: replaces it
    assert len(gw.sessions) == 2 and not _full_refusals(gw)
    _confirm(gw, last, ("198.51.100.7", 4001))


def test_a_peer_holding_a_session_handshakes_again_at_capacity(tmp_path):
    gate = AdmitAll()
    gate.max_sessions = 2
    gw = make_gateway(tmp_path, gate=gate)
    old = handshake(gw, src=("192.0.2.10", 5555), peer=0)
    _confirm(gw, old, ("192.0.2.10", 5555))
    _confirm(gw, handshake(gw, src=("192.0.2.11", 5556), peer=1), ("192.0.2.11", 5556))
    new = handshake(gw, src=("192.0.2.10", 6000), peer=0)  # restarted: a response
    assert not _full_refusals(gw) and len(gw.sessions) == 3  # one over, until it confirms
    _confirm(gw, new, ("192.0.2.10", 6000))
    assert old.session_id not in gw.sessions and gw.store.get(old.session_id) is None
    assert len(gw.sessions) == 2 and len(gw.store.list()) == 2


def test_a_peer_without_a_session_is_still_refused_and_nothing_changes(tmp_path):
    gate = AdmitAll()
    gate.max_sessions = 1
    gw = make_gateway(tmp_path, gate=gate)
    handshake(gw, peer=0)
    claimed = gw.store._db.execute("SELECT COUNT(*) FROM initiations").fetchone()[0]
    n = len(gw.sock.sent)
    gw.datapath.datagram(initiation(1).initiation(), ("192.0.2.11", 5556))
    assert gw.sock.sent[n:] == [] and len(_full_refusals(gw)) == 1
    assert gw.store._db.execute("SELECT COUNT(*) FROM initiations").fetchone()[0] == claimed


def test_a_second_attempt_while_the_first_is_written_is_refused_alone(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    gw = _group_gateway(tmp_path, store, max_wait_s=10.0, max_batch=2)
    first = initiation(0)
    gw.datapath.datagram(first.initiation(), ("198.51.100.7", 4000))
    gw.datapath.datagram(initiation(0).initiation(), ("198.51.100.7", 4001))  # queued meanwhile
    [refused] = events_of(gw.events, "HandshakeRejected")
    assert refused["reason_code"] == Reason.RATE_LIMITED
    gw.datapath.datagram(initiation(1).initiation(), ("192.0.2.11", 5556))  # fills the batch
    wait_until(lambda: len(gw.sock.sent) == 2, "two responses", 10)
    [(resp, _to)] = [s for s in gw.sock.sent if s[1] == ("198.51.100.7", 4000)]
    first.response(resp)  # the first attempt's own answer
    assert len(gw.sessions) == 2 and gw.table.pending_new == 0 and not gw.table.writing
    gw.table.writes.close()
    store.close()


def test_a_replayed_attempt_after_a_restart_does_not_end_the_attempt(tmp_path):
    """Memory gone, the store kept: the attempt's own initiation again is
    a replay (not newer than the attempt's), refused before it replaces
    anything."""
    store = SqliteStore(tmp_path / "s.db")
    gw = make_gateway(tmp_path, store=store)
    ini = initiation(0)
    msg = ini.initiation()
    gw.datapath.datagram(msg, ("198.51.100.7", 4000))
    [(resp, _to)] = gw.sock.sent
    _a, session_keys = ini.response(resp)
    again = make_gateway(tmp_path, store=store)
    again.reconcile()
    assert session_keys.session_id in again.table.unconfirmed
    again.datapath.datagram(msg, ("203.0.113.9", 9999))
    [refused] = events_of(again.events, "HandshakeRejected")
    assert refused["reason_code"] == Reason.REPLAY_DETECTED
    assert session_keys.session_id in again.sessions and store.get(session_keys.session_id)
    store.close()


def _restarted(tmp_path, store, max_sessions: int):
    gate = AdmitAll()
    gate.max_sessions = max_sessions
    gw = make_gateway(tmp_path, store=store, gate=gate)
    gw.reconcile()  # raises TooManySessions if it does not start
    return gw


def test_a_restart_after_a_peer_s_excess_restores_it_as_it_was(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    gate = AdmitAll()
    gate.max_sessions = 2
    gw = make_gateway(tmp_path, store=store, gate=gate)
    ids = iter([1, 2, 3])  # the attempt read last by the restart's pass
    gw.controlpath.randbits = lambda _bits: next(ids)
    _confirm(gw, handshake(gw, src=("192.0.2.10", 5555), peer=0), ("192.0.2.10", 5555))
    _confirm(gw, handshake(gw, src=("192.0.2.11", 5556), peer=1), ("192.0.2.11", 5556))
    attempt = handshake(gw, src=("192.0.2.10", 6000), peer=0)  # one over: then a crash
    again = _restarted(tmp_path, store, 2)  # starts
    assert set(again.sessions) == {1, 2, 3} and list(again.table.unconfirmed) == [3]
    _confirm(again, attempt, ("192.0.2.10", 6000))  # and the count comes back
    assert set(again.sessions) == {2, 3}
    store.close()


def test_a_restart_with_less_room_ends_an_attempt_instead_of_failing(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    gw = make_gateway(tmp_path, store=store)
    ids = iter([1, 2])
    gw.controlpath.randbits = lambda _bits: next(ids)
    _confirm(gw, handshake(gw, src=("192.0.2.10", 5555), peer=0), ("192.0.2.10", 5555))
    handshake(gw, src=("192.0.2.11", 5556), peer=1)  # an attempt; then a restart, 1 allowed
    again = _restarted(tmp_path, store, 1)
    assert list(again.sessions) == [1] and store.get(2) is None
    store.close()


def test_an_attempt_restored_twice_is_one_attempt_and_its_confirmation_keeps_it(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    gw = make_gateway(tmp_path, store=store)
    attempt = handshake(gw, src=("192.0.2.10", 6000), peer=0)
    again = make_gateway(tmp_path, store=store)
    again.reconcile()
    again.reconcile()  # `gateway up` reconciles again at its start
    assert len(again.table.attempts_of(again.sessions[attempt.session_id].inner)) == 1
    _confirm(again, attempt, ("192.0.2.10", 6000))
    assert attempt.session_id in again.sessions and store.get(attempt.session_id)
    store.close()


def test_an_attempt_whose_writes_fail_ends_no_older_attempt(tmp_path):
    """Review E L2: a newer attempt that replaced the peer's oldest ended
    it as soon as its writes were queued, even if they then failed: the
    peer was left with one attempt fewer and no new one. The older attempt
    ends only once the new one's writes are durable."""
    gw = make_gateway(tmp_path, cookie_threshold_per_s=10_000)
    for i in range(ATTEMPTS_KEPT):
        gw.datapath.datagram(initiation(0).initiation(), ("198.51.100.7", 4000 + i))
    kept = set(gw.table.unconfirmed)
    assert len(kept) == ATTEMPTS_KEPT

    def refused(_w):
        raise StoreError("disk I/O error")

    gw.store.write_handshake = refused
    gw.datapath.datagram(initiation(0).initiation(), ("198.51.100.7", 4100))
    assert set(gw.table.unconfirmed) == kept and kept <= set(gw.sessions)
    assert all(gw.store.get(sid) is not None for sid in kept)
    del gw.store.write_handshake  # the store is back: the next one replaces the oldest
    gw.datapath.datagram(initiation(0).initiation(), ("198.51.100.7", 4200))
    assert len(gw.table.unconfirmed) == ATTEMPTS_KEPT
    assert len(set(gw.table.unconfirmed) & kept) == ATTEMPTS_KEPT - 1  # only the oldest ended


class _HeldHandshakes:
    """The handshake writes held until ``release`` (a group commit's wait),
    every other write at once."""

    def __init__(self, writes):
        self.writes, self.held = writes, []

    def handshake(self, w, done) -> None:
        self.held.append((w, done))

    def release(self) -> None:
        for w, done in self.held:
            self.writes.handshake(w, done)

    def __getattr__(self, name):
        return getattr(self.writes, name)


def test_an_attempt_confirmed_while_the_newer_one_is_written_is_kept(tmp_path):
    """With the older attempt ended only after the new one's commit (review
    E L2), it may be confirmed meanwhile (the client's late answer): a
    confirmed session is not an attempt, it is not ended; the new one's
    confirmation ends it, as any peer's earlier session."""
    gw = make_gateway(tmp_path, cookie_threshold_per_s=10_000)
    first = handshake(gw, src=("198.51.100.7", 4000), peer=0)
    handshake(gw, src=("198.51.100.7", 4001), peer=0)
    held = gw.table.writes = _HeldHandshakes(gw.table.writes)
    gw.datapath.datagram(initiation(0).initiation(), ("198.51.100.7", 4002))
    _confirm(gw, first, ("198.51.100.7", 4000))  # meanwhile
    held.release()
    assert first.session_id in gw.sessions and gw.sessions[first.session_id].confirmed
    assert len(gw.table.unconfirmed) == 1  # the new attempt (the confirmation ended the other)


def test_an_attempt_confirmed_in_the_newer_ones_group_commit_is_kept(tmp_path):
    """Review k16r1: the test above holds the handshake alone and confirms
    at once, so the confirmation's continuation ran first. With `gateway
    up`'s GroupCommit the confirmation, queued after the newer handshake,
    commits in the same transaction and the continuations run in queue
    order: the newer one's ``written`` ended the older attempt (not yet
    ``confirmed``), then its durable confirmation found it forgotten. The
    client's confirmed session was gone (an on-path attacker gets this by
    holding the late answer's confirmation until just after the newer
    initiation passed). An attempt whose confirmation is queued is left to
    that confirmation now."""
    store = SqliteStore(tmp_path / "s.db")
    gw = make_gateway(tmp_path, store=store, cookie_threshold_per_s=10_000)
    first = handshake(gw, src=("198.51.100.7", 4000), peer=0)
    handshake(gw, src=("198.51.100.7", 4001), peer=0)
    gw.table.group_commit(gw.control, gw.incidents.report)  # as `gateway up` does
    assert isinstance(gw.table.writes, GroupCommit)
    gw.table.writes.max_wait_s, gw.table.writes.max_batch = 10.0, 2
    gw.datapath.datagram(initiation(0).initiation(), ("198.51.100.7", 4002))  # queued
    gw.datapath.datagram(first.seal(b"", abi.MSG_KEEPALIVE), ("198.51.100.7", 4000))  # the batch
    wait_until(lambda: gw.table.writes.commits == 1 and gw.table.pending_new == 0,
               "the batch committed and answered", 10)
    with gw.control:
        kept = first.session_id in gw.sessions and gw.sessions[first.session_id].confirmed
        stored = store.get(first.session_id)
    gw.table.writes.close()
    store.close()
    assert kept, "the attempt confirmed in the same commit was ended by the newer attempt"
    assert stored is not None and stored[0].confirmed


class _HeldConfirms(_HeldHandshakes):
    """Confirmations held too, then refused (``refuse``)."""

    def __init__(self, writes):
        super().__init__(writes)
        self.confirms = []

    def confirm(self, base, new, ceiling, done) -> None:
        self.confirms.append(done)

    def refuse(self) -> None:
        for done in self.confirms:
            done(StoreError("disk I/O error"))


def test_an_attempt_whose_queued_confirmation_fails_ends_once_replaced(tmp_path):
    """The other way: the newer attempt's commit leaves the older attempt
    to its queued confirmation; refused, it is an attempt again that the
    newer one replaced, and ends then (the peer keeps ATTEMPTS_KEPT)."""
    gw = make_gateway(tmp_path, cookie_threshold_per_s=10_000)
    first = handshake(gw, src=("198.51.100.7", 4000), peer=0)
    for i in range(1, ATTEMPTS_KEPT):
        handshake(gw, src=("198.51.100.7", 4000 + i), peer=0)
    held = gw.table.writes = _HeldConfirms(gw.table.writes)
    gw.datapath.datagram(initiation(0).initiation(), ("198.51.100.7", 4100))  # held
    gw.datapath.datagram(first.seal(b"", abi.MSG_KEEPALIVE), ("198.51.100.7", 4000))  # held
    held.release()  # the newer attempt is durable: the older one waits for its confirmation
    assert first.session_id in gw.sessions
    held.refuse()
    assert first.session_id not in gw.sessions and gw.store.get(first.session_id) is None
    assert len(gw.table.unconfirmed) == ATTEMPTS_KEPT
