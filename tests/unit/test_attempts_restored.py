"""Review k19r1 R1-R3: a peer's handshake attempts (unconfirmed sessions)
restored after a restart. R1: the attempt a new one replaces is the
peer's oldest by its initiation's timestamp, not by session id (the store's
order). R2: a restart restores a peer no more than one session over
MaxSessions, as admission would have left it. R3: an attempt dated in the
gateway's future (its clock stepped back, a damaged store) expires, and a
record whose timestamps are not integers in range is unreadable: neither
holds its peer off for good. Review k19r3: which attempts a restart keeps
does not hang on the store's order (F1), and one attempt whose peer address
does not read costs that attempt, not the start (F2).

Gateway and client clocks are injected (test_capacity_answerable.py)."""

from __future__ import annotations

import json
import sqlite3

import pytest
from test_capacity_answerable import CLIENT, MS, T0_NS, Client

from jvpn.config import ATTEMPTS_KEPT, UNCONFIRMED_TTL_MS
from jvpn.gate import abi
from jvpn.handshake import Initiator
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import GW_PUB, PEER_KEYS, AdmitAll, Clock, handshake, make_gateway


def _gateway(tmp_path, store, clock, max_sessions: int = 10):
    gate = AdmitAll()
    gate.max_sessions = max_sessions
    return make_gateway(tmp_path, gate=gate, clock=clock, cookie_threshold_per_s=10_000,
                        store=store)


def test_after_a_restart_the_replaced_attempt_is_the_oldest_not_the_lowest_id(tmp_path):
    """R1: a restart restores attempts in session-id order
    (store.restorable); the client sent I1, I2, I3 (answers slow), the
    gateway restarted; the client's retry I4 must end I1's attempt, not
    I3's -- whose late answer the client still takes."""
    store = SqliteStore(tmp_path / "s.db")
    clock = Clock()
    gw = _gateway(tmp_path, store, clock)
    ids = iter([30, 20, 10])  # newer attempts get lower ids
    gw.controlpath.randbits = lambda _bits: next(ids)
    client = Client(gw, clock)
    sent = [client.send(100 * i) for i in range(ATTEMPTS_KEPT)]  # I1..I3, answered
    assert all(answer is not None for _i, _m, answer in sent)
    again = _gateway(tmp_path, store, clock)  # a restart, within the answer window
    again.reconcile()
    assert len(again.table.unconfirmed) == ATTEMPTS_KEPT
    again.controlpath.randbits = lambda _bits: 40
    client = Client(again, clock)
    client.send(100 * ATTEMPTS_KEPT)  # I4: the client now keeps I2, I3, I4
    kept = [init.response(ans)[1].session_id in again.sessions for init, _m, ans in sent]
    assert kept == [False] + [True] * (ATTEMPTS_KEPT - 1)
    newest_init, _msg, late_answer = sent[-1]
    assert client.confirms(newest_init, late_answer), \
        "the late answer to the client's newest kept initiation names a session gone"
    store.close()


def test_a_restart_at_capacity_restores_a_peer_no_more_than_one_over(tmp_path):
    """R2: MaxSessions lowered at the restart; one peer's confirmed session
    and its ATTEMPTS_KEPT attempts: its session and its newest attempt
    come back (one over MaxSessions, as admission allows), the rest end."""
    store = SqliteStore(tmp_path / "s.db")
    clock = Clock()
    gw = _gateway(tmp_path, store, clock, max_sessions=10)
    client = Client(gw, clock)
    first, _m, answer = client.send(0)
    assert client.confirms(first, answer)
    sent = [client.send(100 * i) for i in range(1, 1 + ATTEMPTS_KEPT)]  # new handshakes
    again = _gateway(tmp_path, store, clock, max_sessions=1)
    again.reconcile()
    assert len(again.sessions) <= again.table.max_sessions() + 1
    newest, _m, late_answer = sent[-1]
    assert Client(again, clock).confirms(newest, late_answer), "its newest attempt stays"
    store.close()


def test_a_restart_below_capacity_restores_every_attempt(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    clock = Clock()
    gw = _gateway(tmp_path, store, clock, max_sessions=10)
    client = Client(gw, clock)
    for i in range(ATTEMPTS_KEPT):
        client.send(100 * i)
    again = _gateway(tmp_path, store, clock, max_sessions=10)
    again.reconcile()
    assert len(again.table.unconfirmed) == ATTEMPTS_KEPT
    store.close()


def _restart_with(tmp_path, sql: str, args: tuple, clock: Clock):
    store = SqliteStore(tmp_path / "s.db")
    gw = _gateway(tmp_path, store, clock)
    Client(gw, clock).send(0)
    store._db.execute(sql, args)
    store._db.commit()
    again = _gateway(tmp_path, store, clock)
    again.reconcile()
    return again, store


def _an_hour_later_answered(gw, clock: Clock) -> bool:
    clock.ms += 3_600_000
    gw.controlpath.expire_unconfirmed()
    n = len(gw.sock.sent)
    init = Initiator(PEER_KEYS[0], GW_PUB, clock_ns=lambda: T0_NS + 3_600_000 * MS)
    gw.datapath.datagram(init.initiation(), CLIENT)
    return bool(gw.sock.sent[n:])


def test_a_restored_attempt_with_far_future_timestamps_expires(tmp_path):
    """R3: an unconfirmed record with created_ms and handshake_ns far in
    the future; it never expired, and made every initiation of its peer a
    replay: the peer refused for good."""
    clock = Clock()
    far = 10 ** 18  # ~31 years in ms; in ns, ~2031
    gw, store = _restart_with(
        tmp_path,
        "UPDATE sessions SET record = json_set(record, '$.created_ms', ?, '$.handshake_ns', ?)",
        (Clock().ms + far, T0_NS + far), clock)
    assert _an_hour_later_answered(gw, clock), "an hour later the peer is still refused"
    store.close()


def test_an_attempt_dated_past_its_ttl_in_the_gateway_s_future_ends_at_the_next_tick(tmp_path):
    """The gateway's clock stepped back (or the store is damaged): the
    attempt's age is unknown; it ends, not its peer."""
    clock = Clock()
    gw, store = _restart_with(
        tmp_path, "UPDATE sessions SET record = json_set(record, '$.created_ms', ?)",
        (Clock().ms + UNCONFIRMED_TTL_MS + 1_000,), clock)
    assert len(gw.table.unconfirmed) in (0, 1)
    gw.controlpath.expire_unconfirmed()
    assert not gw.table.unconfirmed
    store.close()


def test_an_attempt_a_little_in_the_future_stays(tmp_path):
    """Within the TTL ahead (clocks of a cluster's gateways differ a little):
    it stays until its TTL."""
    clock = Clock()
    gw, store = _restart_with(
        tmp_path, "UPDATE sessions SET record = json_set(record, '$.created_ms', ?)",
        (Clock().ms + 1_000,), clock)
    gw.controlpath.expire_unconfirmed()
    assert len(gw.table.unconfirmed) == 1
    store.close()


def test_a_record_whose_timestamps_are_not_integers_is_unreadable(tmp_path):
    """R3, the type case: a string (or a float) handshake_ns or created_ms
    is a damaged record: reported and not restored, never a TypeError at
    the peer's next initiation."""
    for field, value in (("handshake_ns", '"1"'), ("created_ms", "1.5"), ("handshake_ns", "-1"),
                         ("handshake_ns", str(2 ** 64)), ("created_ms", "true")):
        clock = Clock()
        path = tmp_path / f"{field}-{value}"
        path.mkdir()
        gw, store = _restart_with(
            path, f"UPDATE sessions SET record = json_set(record, '$.{field}', json(?))",
            (value,), clock)
        assert not gw.table.unconfirmed, (field, value)
        assert _an_hour_later_answered(gw, clock), (field, value)
        store.close()


OTHER = ("192.0.2.11", 5556)


def test_a_restart_keeps_every_attempt_that_existed_whatever_the_store_s_order(tmp_path):
    """R2 depends on the store's key order. MaxSessions 3: peer 1's
    confirmed session; peer 0 (no session) makes two attempts below
    capacity (full now); peer 1 handshakes again at capacity (its one
    excess: 4 sessions). A restart within the answer window: the attempts
    are grouped by peer in the store's order (session id); peer 1's comes
    first and takes the last room below MaxSessions -- the excess it did not
    need -- and peer 0's older attempt is then 'at capacity, no session
    here' and deleted. The client still keeps I1 (it sent two) and takes its
    late answer (sent before the restart): a session gone (F2). In the other
    order all four come back (peer 1's at capacity, as its excess)."""
    store = SqliteStore(tmp_path / "s.db")
    clock = Clock()
    gw = _gateway(tmp_path, store, clock, max_sessions=3)
    ids = iter([50, 30, 40, 10])  # peer 1's session, peer 0's A1, A2, peer 1's new attempt
    gw.controlpath.randbits = lambda _bits: next(ids)
    other = handshake(gw, src=OTHER, peer=1)
    gw.datapath.datagram(other.seal(b"", abi.MSG_KEEPALIVE), OTHER)
    assert gw.sessions[other.session_id].confirmed
    client = Client(gw, clock)
    first, _m, first_answer = client.send(0)
    _second, _m, second_answer = client.send(300)
    assert first_answer is not None and second_answer is not None and gw.table.full()
    handshake(gw, src=OTHER, peer=1)  # at capacity: peer 1 holds a session, one over
    assert len(gw.sessions) == 4
    again = _gateway(tmp_path, store, clock, max_sessions=3)  # a restart (crash)
    again.reconcile()
    assert Client(again, clock).confirms(first, first_answer), \
        "the late answer to I1 (kept by the client) names a session the restart deleted"
    store.close()


def test_an_attempt_whose_inner_address_does_not_read_costs_that_attempt_not_the_start(
        tmp_path):
    """A damaged unconfirmed record (its inner_addr not an IPv4): the
    reconcile's docstring promises 'a failure is its own only', and a
    confirmed record's bad address is caught in _restore_one; an attempt's
    is read in _restore_attempts outside it (R2's loop: ValueError), and the
    whole start fails on one garbage record of the store."""
    store = SqliteStore(tmp_path / "s.db")
    clock = Clock()
    gw = _gateway(tmp_path, store, clock, max_sessions=10)
    Client(gw, clock).send(0)
    store._db.execute("UPDATE sessions SET record = json_set(record, '$.inner_addr', ?)",
                      ("not-an-address",))
    store._db.commit()
    again = _gateway(tmp_path, store, clock, max_sessions=10)
    again.reconcile()  # raises ValueError today: the gateway does not start
    assert not again.table.unconfirmed
    store.close()



def _damage(path, sid: int, **fields) -> None:
    """The stored record of ``sid`` with ``fields`` changed (a damaged or
    hostile row: the store is attack surface)."""
    db = sqlite3.connect(str(path))
    (text,) = db.execute("SELECT record FROM sessions WHERE session_id = ?", (sid,)).fetchone()
    record = json.loads(text)
    assert record.get("confirmed") is False  # an attempt: the pass that reads inner_addr
    record.update(fields)
    db.execute("UPDATE sessions SET record = ? WHERE session_id = ?", (json.dumps(record), sid))
    db.commit()
    db.close()


@pytest.mark.parametrize("inner_addr", ["not an address", [1], "10.0.0.300"])
def test_an_attempt_with_a_damaged_inner_address_does_not_stop_the_start(tmp_path, inner_addr):
    store = SqliteStore(tmp_path / "s.db")
    gw = make_gateway(tmp_path, store=store)
    ids = iter([1, 2])
    gw.controlpath.randbits = lambda _bits: next(ids)
    handshake(gw, src=("192.0.2.10", 6000), peer=0)  # session 1: an attempt
    _damage(tmp_path / "s.db", 1, inner_addr=inner_addr)
    again = make_gateway(tmp_path, store=store)
    again.reconcile()  # must start: the damaged record is that record's problem only
    assert 1 not in again.table.unconfirmed
    store.close()


def _initiate(gw, sid: int, at_ms: int) -> None:
    gw.controlpath.randbits = lambda _bits: sid
    init = Initiator(PEER_KEYS[0], GW_PUB, clock_ns=lambda: T0_NS + at_ms * MS)
    gw.datapath.datagram(init.initiation(), CLIENT)


def test_an_integer_inner_address_is_unreadable_not_a_second_group_of_attempts(tmp_path):
    """Review k20rall F2. A damaged or hostile store: an attempt whose inner_addr is the
    peer's address written as a JSON integer (e.g. 174260226 for
    10.99.0.2). record_from_json takes any JSON type there (only the fast
    path insists on a string), reconcile._by_peer files a non-string
    address under the session's own id (its docstring: 'no text: each
    alone, and its own failure to read') -- but _inner_packed's
    ipaddress.IPv4Address(int) DOES read it, as the peer's address. The
    peer's attempts come back in two groups, ATTEMPTS_KEPT each: more than
    ATTEMPTS_KEPT attempts of one peer, which admission and
    _restore_attempts' docstring promise never happens."""
    store = SqliteStore(tmp_path / "s.db")
    clock = Clock()
    first = _gateway(tmp_path, store, clock)
    for i, sid in enumerate([11, 12, 13]):
        _initiate(first, sid, 100 * i)
    inner = next(iter(first.table.attempts))
    db = sqlite3.connect(str(tmp_path / "s.db"))
    (text,) = db.execute("SELECT record FROM sessions WHERE session_id = 11").fetchone()
    rec = json.loads(text)
    rec["inner_addr"] = int.from_bytes(inner, "big")  # the same address, as a JSON integer
    db.execute("UPDATE sessions SET record = ? WHERE session_id = 11", (json.dumps(rec),))
    db.commit()
    db.close()
    # another process (a restart without a reconcile yet, or a second gateway
    # of the store) answers the client's next initiation: a 4th attempt stored
    _initiate(_gateway(tmp_path, store, clock), 14, 300)
    again = _gateway(tmp_path, store, clock)
    again.reconcile()
    restored = [live.record.session_id for live in again.table.attempts_of(inner)]
    assert len(restored) <= ATTEMPTS_KEPT, f"attempts of one peer restored: {restored}"
    store.close()
