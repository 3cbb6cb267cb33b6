"""The operator's forced rekey (issue 13, `jvpn-xdp rekey`), in process (the
real daemon over a fake socket and TUN): the op marks the session through
the session table (SessionTable.request_rekey), and nothing else changes
(no store write, no message, no key); refusals are one line and change
nothing. The exchange that follows is the gateway's and the client's
(docs/protocol.md "Rekey"), not tested here."""

from __future__ import annotations

import dataclasses

import pytest
from unit.test_operator_actions import gateway

from jvpn import keys
from jvpn import operator as client
from jvpn.gateway import control_ops, snapshot
from jvpn.gateway.operator import Refused
from jvpn.gateway.operator_actions import UnknownPeer
from jvpn.gateway.terminate import NotServedHere
from kits.daemon_kit import PEER_KEYS, handshake, make_gateway


@pytest.fixture
def gw(tmp_path):
    g = gateway(tmp_path)
    yield g
    g.store.close()


def marked(gw) -> dict[int, bool]:
    return {sid: live.rekey_requested for sid, live in gw.table.sessions.items()}


def test_rekey_marks_the_session_and_changes_nothing_else(gw):
    a, b = handshake(gw), handshake(gw, ("192.0.2.11", 6000), peer=1)
    before = gw.store.get(a.session_id)
    sent, events = len(gw.sock.sent), len(gw.events.recent)
    out = gw.rekey_session(a.session_id)
    assert out == {"rekey_requested": [f"{a.session_id:016x}"], "key_epoch": 0,
                   "state": "ATTACHED"}
    assert marked(gw) == {a.session_id: True, b.session_id: False}
    assert gw.store.get(a.session_id) == before  # the exchange writes, the request does not
    assert len(gw.sock.sent) == sent and len(gw.events.recent) == events
    assert gw.rekey_session(a.session_id)["rekey_requested"]  # asking twice is the same ask
    rows = {r["session_id"]: r["rekey_requested"] for r in snapshot.sessions(gw)}
    assert rows == {f"{a.session_id:016x}": True, f"{b.session_id:016x}": False}  # `sessions`


def test_rekey_names_the_current_epoch(gw):
    peer = handshake(gw)
    live = gw.table.sessions[peer.session_id]
    live.record = dataclasses.replace(live.record, key_epoch=7, keys_ms=live.record.created_ms)
    assert gw.rekey_session(peer.session_id)["key_epoch"] == 7


def test_rekey_of_an_unknown_or_remote_session_is_refused_naming_the_owner(gw):
    peer = handshake(gw)
    with pytest.raises(NotServedHere, match="no session 0000000000000001 on this gateway"):
        gw.rekey_session(1)
    remote = dataclasses.replace(gw.sessions[peer.session_id].record, session_id=7, owner="gw-b")
    gw.table.stand_by(remote, peer.keys)
    with pytest.raises(NotServedHere, match="owned by gateway 'gw-b': rekey it there"):
        gw.rekey_session(7)
    assert marked(gw) == {peer.session_id: False}


def test_a_session_awaiting_its_revocation_is_not_rekeyed(gw):
    a, b = handshake(gw), handshake(gw, ("192.0.2.12", 6001))  # two sessions of alice
    gw.table.quarantine(a.session_id)
    with pytest.raises(NotServedHere, match="awaits its revocation"):
        gw.rekey_session(a.session_id)
    out = gw.rekey_peer("alice")
    assert out == {"peer": "alice", "rekey_requested": [f"{b.session_id:016x}"],
                   "failed": [f"{a.session_id:016x}: awaits its revocation"]}
    assert marked(gw) == {a.session_id: False, b.session_id: True}


def test_a_session_quarantined_by_key_expiry_may_be_rekeyed(gw):
    """Key expiry's quarantine (its write refused) is not a revocation's: a
    rekey is its way back, the operator may ask for one (review R5 #7)."""
    a = handshake(gw)
    gw.table.quarantine(a.session_id, lifts=True)
    assert gw.rekey_session(a.session_id)["rekey_requested"] == [f"{a.session_id:016x}"]
    assert gw.rekey_peer("alice")["failed"] == []
    assert marked(gw) == {a.session_id: True}


def test_rekey_peer_by_name_or_key_marks_that_peers_sessions_only(gw):
    a, b = handshake(gw), handshake(gw, ("192.0.2.11", 6000), peer=1)
    assert gw.rekey_peer("alice") == {"peer": "alice", "failed": [],
                                      "rekey_requested": [f"{a.session_id:016x}"]}
    assert marked(gw) == {a.session_id: True, b.session_id: False}
    bob = keys.encode(keys.public_from_private(PEER_KEYS[1]))
    assert gw.rekey_peer(bob)["rekey_requested"] == [f"{b.session_id:016x}"]
    with pytest.raises(UnknownPeer, match="no peer 'carol'"):
        gw.rekey_peer("carol")


def test_rekey_peer_names_the_peers_sessions_another_gateway_owns(gw):
    """Review R3 F4: --peer used to leave them out silently (exit 0, "none
    served here"); each is in ``failed`` naming its owner (the CLI exits 1),
    as `terminate --peer` does; another peer's remote session is not."""
    a, b = handshake(gw), handshake(gw, ("192.0.2.11", 6000), peer=1)
    rec_a, rec_b = gw.sessions[a.session_id].record, gw.sessions[b.session_id].record
    gw.table.stand_by(dataclasses.replace(rec_a, session_id=7, owner="gw-b"), a.keys)
    gw.table.stand_by(dataclasses.replace(rec_b, session_id=9, owner="gw-c"), b.keys)
    out = gw.rekey_peer("alice")
    assert out == {"peer": "alice", "rekey_requested": [f"{a.session_id:016x}"],
                   "failed": ["0000000000000007: owned by gateway 'gw-b': rekey it there"]}
    gw.table.drop_standby(7)
    assert gw.rekey_peer("alice")["failed"] == []
    assert gw.table.standby_inner == {9: gw.sessions[b.session_id].inner}


@pytest.mark.parametrize(("request_", "why"), [
    ({}, "give exactly one of session"),
    ({"session": "ab", "peer": "alice"}, "give exactly one of session"),
    ({"session": "xyz"}, "is not a session id"),
    ({"session": 12}, "is not a session id"),
    ({"session": "00000000000000000"}, "is not a session id"),  # 17 digits
    ({"session": "0"}, "session id 0 names no session"),
    ({"peer": " "}, "peer must be a Name"),
    ({"peer": ["alice"]}, "peer must be a Name"),
])
def test_the_op_validates_its_arguments_before_anything(gw, request_, why):
    peer = handshake(gw)
    with pytest.raises(Refused, match=why):
        control_ops.rekey(gw, {"op": "rekey", **request_})
    assert marked(gw) == {peer.session_id: False}


def test_rekey_through_the_running_gateways_operator_socket(tmp_path):
    path = tmp_path / "run" / "gateway.sock"
    g = make_gateway(tmp_path, operator_socket=path)
    g.start()
    try:
        peer = handshake(g)
        sid = f"{peer.session_id:016x}"
        assert client.call(path, "rekey", session=sid) == {
            "rekey_requested": [sid], "key_epoch": 0, "state": "ATTACHED"}
        assert g.table.sessions[peer.session_id].rekey_requested is True
        with pytest.raises(client.OperatorError, match=r"^no session 00000000000000ab on this"):
            client.call(path, "rekey", session="ab")
        bob = keys.encode(keys.public_from_private(PEER_KEYS[1]))
        assert client.call(path, "rekey", peer=bob)["rekey_requested"] == []
    finally:
        g.stop()
        g.store.close()
