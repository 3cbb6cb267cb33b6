"""The key lifecycle around the exchange (docs/protocol.md "Rekey"): the
gateway's FLAG_REKEY, expiry by both policies, a reattach during a rekey, a
rekey during RECOVERING, a restart that finds an overlap."""

from __future__ import annotations

import pytest

from jvpn import wire
from jvpn.gate import abi
from jvpn.gateway.daemon import Gateway
from jvpn.session import State
from jvpn.store.sqlite import SqliteStore
from jvpn.tunnel import FLAG_KEY_PHASE, FLAG_REKEY
from kits.daemon_kit import PEER_INNER, AdmitAll, events_of, ipv4, make_gateway
from kits.rekey_kit import RekeyClient, gateway, policy

NEW = ("198.51.100.7", 6000)


@pytest.fixture
def gw_default(tmp_path):
    return gateway(tmp_path)[0]


def flags_of_reply(c: RekeyClient) -> int:
    """The flags of the gateway's answer to a keepalive, opened as the client does."""
    [(reply, _)] = c.send(c.channel.seal(b"", abi.MSG_KEEPALIVE))
    return c.channel.open(reply)[1]


def flags_of_downstream(c: RekeyClient) -> int:
    n = len(c.gw.sock.sent)
    c.gw.datapath.downstream(ipv4(PEER_INNER[0].__class__("10.99.0.1"), str(PEER_INNER[0])))
    [(msg, _)] = c.gw.sock.sent[n:]
    return c.channel.open(msg)[1]


def test_the_gateway_asks_for_a_rekey_once_the_keys_are_old(tmp_path):
    gw, clock = gateway(tmp_path, rekey_after_ms=1_000)
    c = RekeyClient(gw)
    assert not flags_of_reply(c) & FLAG_REKEY and not flags_of_downstream(c) & FLAG_REKEY
    clock.ms += 1_000
    assert flags_of_reply(c) & FLAG_REKEY and flags_of_downstream(c) & FLAG_REKEY
    c.rekey()
    assert not flags_of_reply(c) & FLAG_REKEY  # the new keys are young
    clock.ms += 1_000
    assert flags_of_reply(c) & FLAG_REKEY  # epoch 1's age counts from its commit


def test_the_gateway_asks_for_a_rekey_after_so_many_messages(tmp_path):
    gw, _clock = gateway(tmp_path, rekey_after_messages=16)
    c = RekeyClient(gw)
    for _ in range(16):
        assert c.data()
    assert flags_of_reply(c) & FLAG_REKEY
    c.rekey()
    assert not flags_of_reply(c) & FLAG_REKEY  # counted from the epoch's base counters


def test_the_operators_request_flags_until_a_rekey_is_committed(gw_default):
    gw = gw_default
    c = RekeyClient(gw)
    assert not flags_of_reply(c) & FLAG_REKEY
    assert gw.table.request_rekey(c.sid)
    assert flags_of_reply(c) & FLAG_REKEY
    c.rekey()
    assert not c.live().rekey_requested and not flags_of_reply(c) & FLAG_REKEY


def test_expired_keys_terminate_the_session_and_the_client_is_told(tmp_path):
    gw, clock = gateway(tmp_path, rekey_after_ms=1_000, reject_after_ms=2_000)
    c = RekeyClient(gw)
    clock.ms += 1_999
    gw.tick()
    assert c.sid in gw.table
    clock.ms += 1
    n = len(gw.sock.sent)
    gw.tick()
    assert c.sid not in gw.table
    [expired] = events_of(gw.events, "KeyExpired")
    assert expired["reason_code"] == "KEY_EXPIRED" and expired["key_epoch"] == 0
    [ended] = events_of(gw.events, "SessionTerminated")
    assert ended["reason_code"] == "KEY_EXPIRED"
    [(msg, _to)] = gw.sock.sent[n:]
    hdr, (reason,) = c.opened(msg)
    assert hdr.type == abi.MSG_TERMINATE and wire.TERMINATE_REASONS[reason] == "KEY_EXPIRED"


def test_expired_keys_degrade_the_session_and_a_rekey_brings_it_back(tmp_path):
    gw, clock = gateway(tmp_path, rekey_after_ms=1_000, reject_after_ms=2_000,
                        expiry_terminates=False)
    c = RekeyClient(gw)
    clock.ms += 2_000
    gw.tick()
    assert c.record().state is State.DEGRADED
    gw.tick()
    assert len(events_of(gw.events, "KeyExpired")) == 1  # said once
    c.rekey()
    assert c.record().state is State.ATTACHED and c.record().key_epoch == 1
    changes = [e["reason_code"] for e in events_of(gw.events, "SessionStateChange")]
    assert changes[-2:] == ["ENTER_DEGRADED_MODE", "EXIT_DEGRADED_MODE"]
    gw.tick()
    assert c.record().state is State.ATTACHED


def test_a_rekey_during_recovering_is_refused(gw_default):
    gw = gw_default
    c = RekeyClient(gw)
    [(_challenge, to)] = c.send(c.reattach_request(seq=1), src=NEW)
    assert to == NEW and c.record().state is State.RECOVERING
    msg, _ = c.init()
    [(reply, _)] = c.send(msg)
    hdr, (_asked, _epoch, _switch, reason, _request) = c.opened(reply)
    assert hdr.type == abi.MSG_REKEY_REJECT and wire.REJECT_REASONS[reason] == "POLICY_DENY"
    [ev] = events_of(gw.events, "RekeyDenied")
    assert ev["reason_code"] == "POLICY_DENY" and "RECOVERING" in ev["detail"]
    assert c.record().key_epoch == 0


def test_a_reattach_under_the_new_epoch_during_a_rekey_confirms_it(gw_default):
    gw = gw_default
    c = RekeyClient(gw)
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)
    c.finish(resp, eph)  # the client seals under epoch 1 now; the gateway does not know yet
    [(challenge, to)] = c.send(c.reattach_request(seq=1), src=NEW)
    assert to == NEW and wire.parse_header(challenge).flags & FLAG_KEY_PHASE  # sealed under 1
    assert c.stored_ring().confirmed
    assert [e["key_epoch"] for e in events_of(gw.events, "KeyRotated")] == [1]
    _hdr, (server_nonce, client_nonce) = c.opened(challenge)
    [(ack, _)] = c.send(c.control(abi.MSG_PATH_RESPONSE, server_nonce, client_nonce), src=NEW)
    assert c.opened(ack)[0].type == abi.MSG_REATTACH_ACK
    assert c.record().state is State.ATTACHED and c.record().binding.port == NEW[1]
    assert c.data(src=NEW) and c.data(keys=c.old, src=NEW)  # both epochs, the overlap lasts


def test_a_reattach_under_the_old_epoch_during_a_rekey_is_served_under_it(gw_default):
    gw = gw_default
    c = RekeyClient(gw)
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)
    [(challenge, _to)] = c.send(c.reattach_request(seq=1), src=NEW)  # still under epoch 0
    assert not wire.parse_header(challenge).flags & FLAG_KEY_PHASE
    assert not c.stored_ring().confirmed  # not a confirmation
    _hdr, (server_nonce, client_nonce) = c.opened(challenge)
    [(ack, _)] = c.send(c.control(abi.MSG_PATH_RESPONSE, server_nonce, client_nonce), src=NEW)
    assert c.opened(ack)[0].type == abi.MSG_REATTACH_ACK
    c.finish(resp, eph)  # the rekey goes on: neither cancelled nor restarted
    assert c.data(src=NEW) and c.stored_ring().confirmed


def test_a_restart_past_the_stored_overlap_end_ends_it_at_once(tmp_path):
    """The confirmation stores the overlap's end with the ring (review R5
    #6): a confirmed ring read back with its previous epoch after that end
    (whose store write had not landed) drops it at load (review R4 #4),
    never given a fresh overlap."""
    gw, clock = gateway(tmp_path, rekey_overlap_ms=3_000)
    c = RekeyClient(gw)
    c.rekey()
    assert c.stored_ring().overlap_until_ms == clock() + 3_000
    clock.ms += 3_000
    again = make_gateway(tmp_path, store=SqliteStore(tmp_path / "s.db"), gate=AdmitAll(),
                         clock=clock, policy=policy(rekey_overlap_ms=3_000))
    assert isinstance(again, Gateway)
    again.reconcile()
    c.gw = again
    assert not c.data(keys=c.old) and c.data()  # epoch 0 dropped at load, 1 goes on
    again.tick()
    assert c.stored_ring().previous is None  # and from the store at the next tick


def test_a_restart_inside_the_overlap_resumes_what_is_left(tmp_path):
    """Inside the stored overlap, a restart keeps the previous epoch until
    the stored end, not a fresh overlap from the restart (review R5 #6)."""
    gw, clock = gateway(tmp_path, rekey_overlap_ms=3_000)
    c = RekeyClient(gw)
    c.rekey()
    clock.ms += 2_000
    again = make_gateway(tmp_path, store=SqliteStore(tmp_path / "s.db"), gate=AdmitAll(),
                         clock=clock, policy=policy(rekey_overlap_ms=3_000))
    again.reconcile()
    c.gw = again
    assert c.data(keys=c.old) and c.data()  # 1 s of the overlap left
    clock.ms += 1_000
    again.tick()
    assert not c.data(keys=c.old) and c.stored_ring().previous is None


def test_a_rekey_in_degraded_with_live_keys_is_refused(tmp_path):
    """DEGRADED for another cause (recovery expired) is not the expiry's
    DEGRADED: the keys are fine, the client reattaches first."""
    gw, clock = gateway(tmp_path)
    c = RekeyClient(gw)
    for step in (2_001, 4_001):
        clock.ms += step
        gw.tick()
    assert c.record().state is State.DEGRADED
    msg, _ = c.init()
    [(reply, _)] = c.send(msg)
    hdr, (_asked, _epoch, _switch, reason, _request) = c.opened(reply)
    assert hdr.type == abi.MSG_REKEY_REJECT and wire.REJECT_REASONS[reason] == "POLICY_DENY"
    assert c.record().key_epoch == 0 and c.record().state is State.DEGRADED
