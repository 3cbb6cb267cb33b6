"""Review k19r3 (stop 24's "not done"): a confirmed record whose
``handshake_ns`` is far in the future (a damaged or hostile store: the
store is attack surface) was restored as it was, and its peer's every new
initiation, stamped before that, was refused as a replay
(Admission.older_than) until the session idled out; the peer's new session
would not have taken its downstream either (downstream.py, by
handshake_ns). Ambiguity is failure: such a record is unreadable at the
restart, reported, not served, and the store is left as it is. A client
clock a little ahead of the gateway's is no damage: that session stays.

Clocks injected: the gateway's ``Clock``, the client's timestamps."""

from __future__ import annotations

from test_capacity_answerable import CLIENT, MS, T0_NS, Client

from jvpn.config import HANDSHAKE_AHEAD_MAX_MS
from jvpn.handshake import Initiator
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import GW_PUB, PEER_KEYS, AdmitAll, Clock, events_of, make_gateway


def _gateway(tmp_path, store, clock):
    gate = AdmitAll()
    gate.max_sessions = 10
    return make_gateway(tmp_path, gate=gate, clock=clock, cookie_threshold_per_s=10_000,
                        store=store)


def _restarted_with_handshake_ns(tmp_path, handshake_ns: int):
    """A confirmed session of peer 0, its record's handshake_ns then set to
    ``handshake_ns`` in the store, and the gateway restarted on it."""
    store = SqliteStore(tmp_path / "s.db")
    clock = Clock()
    gw = _gateway(tmp_path, store, clock)
    client = Client(gw, clock)
    init, _msg, answer = client.send(0)
    assert client.confirms(init, answer)
    sid = next(iter(gw.sessions))
    store._db.execute("UPDATE sessions SET record = json_set(record, '$.handshake_ns', ?)",
                      (handshake_ns,))
    store._db.commit()
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
    rec, _keys = store.get(sid)
    assert rec.handshake_ns == far  # reported, the store left as it is
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
