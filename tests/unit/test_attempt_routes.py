"""Review R4 #4: the client may take the answer to its PREVIOUS handshake
attempt (S1) while the gateway also made a session for the later one (S2,
newer handshake). The peer's downstream must end up with the session the
client uses, across a failed store delete and a gateway restart; and when
a routed session ends, the peer's newest remaining confirmed one takes it."""
from __future__ import annotations

from unit.test_operator_actions import gateway, peer_configs
from unit.test_revocation import restart

from jvpn.store import StoreError
from jvpn.tunnel import DataChannel
from kits.daemon_kit import CLIENT, PEER_INNER, Peer, initiation, ipv4

INNER = PEER_INNER[0].packed


def _attempts(gw):
    """Two initiations (stamped by the gateway's clock); the client takes
    the first one's answer (S1)."""
    init1, init2 = initiation(clock_ms=gw.clock_ms), initiation(clock_ms=gw.clock_ms)
    n = len(gw.sock.sent)
    gw.datapath.datagram(init1.initiation(), CLIENT)
    [(resp1, _)] = gw.sock.sent[n:]
    gw.datapath.datagram(init2.initiation(), CLIENT)  # its answer is lost
    _a, k1 = init1.response(resp1)
    s1 = Peer(k1, DataChannel(k1, "client"))
    return s1, next(s for s in gw.table.sessions if s != s1.session_id)


def _failing_delete(gw, sid):
    real, down = gw.store.delete, [True]

    def delete(s, *args):
        if s == sid and down[0]:
            raise StoreError("etcd: request timed out")
        return real(s, *args)
    gw.store.delete = delete
    return down


def test_a_failed_delete_is_retried_and_a_restart_routes_the_taken_session(tmp_path):
    first = gateway(tmp_path)
    s1, s2 = _attempts(first)
    down = _failing_delete(first, s2)
    first.datapath.datagram(s1.seal(ipv4(PEER_INNER[0])), CLIENT)  # confirms S1, forgets S2
    assert first.table.by_inner[INNER] == s1.session_id and s2 not in first.table
    assert first.store.get(s2) is not None  # the store did not answer
    first.tick()
    assert first.store.get(s2) is not None  # still down: kept for the next tick
    down[0] = False
    first.tick()
    assert first.store.get(s2) is None
    first.store.close()
    again = restart(tmp_path, peer_configs())
    try:
        assert again.table.by_inner.get(INNER) == s1.session_id
    finally:
        again.stop()
        again.store.close()


def test_a_restart_before_the_first_message_routes_neither_attempt(tmp_path):
    first = gateway(tmp_path)
    s1, s2 = _attempts(first)
    first.store.close()
    again = restart(tmp_path, peer_configs())
    try:
        assert again.table.by_inner.get(INNER) is None  # neither was confirmed
        again.datapath.datagram(s1.seal(ipv4(PEER_INNER[0])), CLIENT)
        assert again.table.by_inner.get(INNER) == s1.session_id
        assert s2 not in again.table and again.store.get(s2) is None
        again.store.close()
        third = restart(tmp_path, peer_configs())  # S1's record says confirmed now
        assert third.table.by_inner.get(INNER) == s1.session_id
        third.stop()
        third.store.close()
    finally:
        again.stop()


def test_when_the_routed_session_ends_the_older_confirmed_one_gets_the_route(tmp_path):
    """Records written before the ``confirmed`` field restore as confirmed:
    the newest (S2, never used) routes; when it ends, S1 (alive) gets it.
    (A restored unconfirmed S1's first message would end S2 at once.)"""
    first = gateway(tmp_path)
    s1, s2 = _attempts(first)
    for sid in (s1.session_id, s2):  # as an older gateway wrote them
        rec, _ = first.store.get(sid)
        first.store.cas(sid, rec.version, rec.with_(confirmed=True, version=rec.version + 1))
    first.store.close()
    again = restart(tmp_path, peer_configs())
    try:
        s1_live = again.table.get(s1.session_id)
        again.datapath.datagram(s1.seal(ipv4(PEER_INNER[0])), CLIENT)
        assert s1_live.confirmed and again.table.by_inner.get(INNER) == s2
        clock = again.clock_ms
        for _ in range(60):  # 60 s: the client's traffic on S1 goes on; S2 hears nothing
            clock.ms += 1_000
            again.datapath.datagram(s1.seal(ipv4(PEER_INNER[0])), CLIENT)
            again.tick()
        assert s2 not in again.table and s1.session_id in again.table
        assert again.table.by_inner.get(INNER) == s1.session_id
        assert again.table.for_destination(INNER) is s1_live
    finally:
        again.stop()
        again.store.close()


def test_the_record_codec_keeps_confirmed_and_reads_older_records():
    from jvpn.session import new_session
    from jvpn.store import record_from_json, record_to_json
    rec = new_session(7, 1_000).with_(peer_key="k")
    assert "confirmed" not in record_to_json(rec)  # as before the field existed
    assert record_from_json(record_to_json(rec)).confirmed is True
    assert record_from_json(record_to_json(rec.with_(confirmed=False))).confirmed is False
