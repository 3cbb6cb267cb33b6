"""Review k19r3 (stop 24's "not done"): a confirmed record whose
``handshake_ns`` is far in the future (a damaged or hostile store: the
store is attack surface) was restored as it was, and its peer's every new
initiation, stamped before that, was refused as a replay
(Admission.older_than) until the session idled out; the peer's new session
would not have taken its downstream either (downstream.py, by
handshake_ns). Ambiguity is failure: such a record is unreadable at the
restart, reported, not served, and the store is left as it is. A client
clock a little ahead of the gateway's is no damage: that session stays.

Review k21 of the WIP: unreadable at the restart only, the record came
back through its client's first reattach (the reattach reads the store
and adopts what it finds), and every other reader took it as it was. It
is unreadable to the store's every read now (jvpn/store ``_AHEAD_MAX_NS``), and
never written (the gateway refuses such an initiation before it claims
it: tests/unit/test_handshake_dated_ahead.py).

Clocks injected: the gateway's ``Clock``, the client's timestamps."""

from __future__ import annotations

import os

import pytest
from test_capacity_answerable import CLIENT, MS, T0_NS, Client

from jvpn import wire
from jvpn.config import HANDSHAKE_AHEAD_MAX_MS
from jvpn.gate import abi
from jvpn.handshake import Initiator
from jvpn.session import new_session
from jvpn.store import StoreError
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import GW_PUB, PEER_KEYS, AdmitAll, Clock, events_of, make_gateway
from kits.rekey_kit import RekeyClient

ROAMED = ("198.51.100.99", 7000)


def _gateway(tmp_path, store, clock):
    gate = AdmitAll()
    gate.max_sessions = 10
    return make_gateway(tmp_path, gate=gate, clock=clock, cookie_threshold_per_s=10_000,
                        store=store)


def _set_handshake_ns(store, handshake_ns: int) -> None:
    """The damage: every stored record's handshake_ns set, behind the gateway."""
    store._db.execute("UPDATE sessions SET record = json_set(record, '$.handshake_ns', ?)",
                      (handshake_ns,))
    store._db.commit()


def _stored_handshake_ns(store, sid: int) -> int:
    """What the store holds, read past the store's own parsing."""
    [(value,)] = store._db.execute(
        "SELECT json_extract(record, '$.handshake_ns') FROM sessions WHERE session_id=?",
        (sid - (1 << 64) if sid >= 1 << 63 else sid,)).fetchall()
    return value


def _confirmed(tmp_path):
    """Peer 0's session confirmed at T0 on a fresh SQLite store: (store, clock, gw)."""
    store = SqliteStore(tmp_path / "s.db")
    clock = Clock()
    gw = _gateway(tmp_path, store, clock)
    client = Client(gw, clock)
    init, _msg, answer = client.send(0)
    assert client.confirms(init, answer)
    return store, clock, gw


def _restarted_with_handshake_ns(tmp_path, handshake_ns: int):
    """A confirmed session of peer 0, its record's handshake_ns then set to
    ``handshake_ns`` in the store, and the gateway restarted on it."""
    store, clock, gw = _confirmed(tmp_path)
    sid = next(iter(gw.sessions))
    _set_handshake_ns(store, handshake_ns)
    again = _gateway(tmp_path, store, clock)
    again.reconcile()
    return again, store, sid


def _answered(gw, at_ms: int) -> bool:
    init = Initiator(PEER_KEYS[0], GW_PUB, clock_ns=lambda: T0_NS + at_ms * MS)
    n = len(gw.sock.sent)
    gw.datapath.datagram(init.initiation(), CLIENT)
    return bool(gw.sock.sent[n:])


def test_a_confirmed_record_dated_far_ahead_is_unreadable_and_its_peer_handshakes(tmp_path):
    far = T0_NS + 10 * 365 * 86_400 * 10**9  # ten years ahead
    gw, store, sid = _restarted_with_handshake_ns(tmp_path, far)
    assert sid not in gw.sessions, "restored: its peer's initiations are replays"
    unreadable = [e for e in events_of(gw.events, "DaemonError")
                  if e["reason_code"] == "STORE_RECORD_UNREADABLE"]
    assert len(unreadable) == 1 and "handshake_ns" in unreadable[0]["detail"]
    assert _stored_handshake_ns(store, sid) == far  # reported, the store left as it is
    assert _answered(gw, 1_000), "the peer's new initiation refused"
    store.close()


def test_just_past_the_bound_it_is_unreadable(tmp_path):
    ahead = T0_NS + (HANDSHAKE_AHEAD_MAX_MS + 1) * MS
    gw, store, sid = _restarted_with_handshake_ns(tmp_path, ahead)
    assert sid not in gw.sessions
    store.close()


def test_a_client_clock_somewhat_ahead_keeps_its_session(tmp_path):
    """At the bound (a client clock ahead of the gateway's, as clocks are):
    restored, and its replay bar holds (an older-stamped initiation is a replay)."""
    ahead = T0_NS + HANDSHAKE_AHEAD_MAX_MS * MS
    gw, store, sid = _restarted_with_handshake_ns(tmp_path, ahead)
    assert sid in gw.sessions and gw.sessions[sid].confirmed
    assert not _answered(gw, 1_000)
    store.close()


def test_its_clients_reattach_does_not_bring_it_back(tmp_path):
    """The WIP's gap: unreadable at the restart, the record was adopted at
    its client's first reattach (a restart drops the client's traffic: it
    reattaches), and its peer's initiations were replays again."""
    store = SqliteStore(tmp_path / "s.db")
    clock = Clock()
    gw = _gateway(tmp_path, store, clock)
    client = RekeyClient(gw)  # a confirmed session, stamped by the gateway's clock
    epoch = client.record().epoch
    _set_handshake_ns(store, T0_NS + 10 * 365 * 86_400 * 10**9)
    again = _gateway(tmp_path, store, clock)
    again.reconcile()
    client.gw = again
    request = client.control(abi.MSG_REATTACH_REQ, 1, clock(), os.urandom(16), epoch)
    replies = client.send(request, ROAMED)
    assert client.sid not in again.sessions, "adopted at its reattach"
    assert not [m for m, _to in replies if wire.parse_header(m).type == abi.MSG_PATH_CHALLENGE]
    assert _answered(again, 1_000), "the peer's new initiation refused"
    store.close()


def test_every_read_of_the_store_skips_and_reports_it(tmp_path):
    """Not the restart's alone: get (the reattach's), list (the operator's,
    a cluster's sweep) and the restart pass, each skips it and reports."""
    store = SqliteStore(tmp_path / "s.db")
    skipped = []
    store.on_unreadable = lambda key, detail: skipped.append(detail)
    rec = new_session(7, 1_000).with_(peer_key="k")
    store.create(rec, b"secrets")
    _set_handshake_ns(store, (1_000 + HANDSHAKE_AHEAD_MAX_MS) * MS + 1)
    assert store.get(7) is None
    assert store.list() == []
    assert list(store.restorable()) == []
    assert len(skipped) == 3 and all("handshake_ns" in d for d in skipped)
    store.close()


def test_no_store_writes_it(tmp_path):
    """A record every later read would skip is not written (the store's
    rule since review k18rall F1): the write fails closed."""
    store = SqliteStore(tmp_path / "s.db")
    ahead = new_session(7, 1_000, handshake_ns=(1_000 + HANDSHAKE_AHEAD_MAX_MS) * MS + 1)
    with pytest.raises(StoreError, match="handshake_ns"):
        store.create(ahead, b"secrets")
    assert store._db.execute("SELECT COUNT(*) FROM sessions").fetchone() == (0,)
    store.create(ahead.with_(handshake_ns=(1_000 + HANDSHAKE_AHEAD_MAX_MS) * MS), b"secrets")
    assert store.get(7) is not None
    store.close()
