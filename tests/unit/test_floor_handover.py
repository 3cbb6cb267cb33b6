"""The gate's control floor across a change of role (review C, issue 15
follow-up): an owner that becomes a non-owner keeps the floor its element
learned in the remote entry, a new owner's element starts at the remote
entry's, and a stale but authentic request raises it at a non-owner whose
control window forgot the session. Without these, one captured control
header passed the gate of a non-owner forever (each copy a store read)."""

from __future__ import annotations

import os

import pytest
from test_header_copy import KEYS, NEW, SID, Gateway, _gate_count, _only

from jvpn import wire
from jvpn.gate import abi
from jvpn.session import Event, Transport, apply, new_session
from kits.follower_kit import CLIENT, INNER, LEASE_A, LEASE_B, Rig
from kits.follower_kit import SID as RSID
from kits.follower_kit import keys_of as _keys


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.store.close()


def _owned(rig: Rig):
    rec, tr = apply(new_session(RSID, 1_000, owner="gw-a"), Event.ATTACH_OK, 1_000,
                    binding=CLIENT)
    rec = rec.with_(owner_lease=LEASE_A, inner_addr=str(INNER))
    return rig.table.create(rec, _keys(RSID), INNER.packed, tr)


def test_the_old_owners_remote_entry_keeps_its_elements_control_floor(rig):
    _owned(rig)
    rig.table.raise_control_floor(RSID, 50)  # a control message verified while we owned it
    assert not rig.passes(RSID, abi.MSG_REATTACH_REQ, 50)
    asked = rig.store.get(RSID)[0]
    asked = asked.with_(version=asked.version + 1, handoff_to="gw-b", handoff_lease=LEASE_B)
    rig.store.cas(RSID, asked.version - 1, asked)
    rig.follower.on_store_record(RSID, asked)  # we hand it over: a remote entry stays
    assert rig.gate.remote_ids() == {RSID} and RSID not in rig.gate.model.sessions
    assert rig.gate.model.remote[RSID].ctl_floor >= 50
    assert not rig.passes(RSID, abi.MSG_REATTACH_REQ, 50), "a captured request passes again"
    assert rig.passes(RSID, abi.MSG_REATTACH_REQ, 51)


def test_the_new_owners_element_starts_at_the_remote_entrys_control_floor(rig):
    rec = rig.stored(RSID)
    rig.follower.on_store_record(RSID, rec)
    rig.table.raise_control_floor(RSID, 40)  # the handoff's verified request
    assert rig.gate.model.remote[RSID].ctl_floor == 40
    ours = rec.with_(owner="gw-a", owner_lease=LEASE_A, version=rec.version + 1)
    rig.store.cas(RSID, rec.version, ours)
    live = rig.table.adopt(ours, rig.table.standby[RSID][0])
    rig.table.serve_again(live, ours)  # our element written, the remote entry removed
    assert RSID not in rig.gate.model.remote
    assert rig.gate.model.sessions[RSID].ctl_floor == 40
    assert not rig.passes(RSID, abi.MSG_REATTACH_REQ, 40)


def _request_as_seen_elsewhere(gw: Gateway, counter: int) -> bytes:
    """A request the client sent to the owner, captured on its way there."""
    hdr = wire.Header(type=abi.MSG_REATTACH_REQ, session_id=SID, counter=counter)
    return wire.seal_control(hdr, KEYS.hdr_c2s, KEYS.reattach, 7, gw.clock.ms, os.urandom(16),
                             gw.record().epoch)


def _replayed_from_everywhere(gw: Gateway, msg: bytes, copies: int) -> int:
    """``copies`` of ``msg``, each from a new source: how many passed the gate."""
    passed = 0
    for i in range(copies):
        gw.clock.ms += 1
        before = _gate_count(gw, abi.R_PASS_CONTROL)
        gw.receive((msg, Transport(f"203.0.{(i >> 8) & 255}.{i & 255}", 1000 + i)))
        passed += _gate_count(gw, abi.R_PASS_CONTROL) - before
    return passed


def _hand_over(gw: Gateway) -> None:
    """The session moves to another gateway: a remote entry stays here, and
    the daemon's control window forgot it (its LRU of 4,096 sessions, a restart)."""
    gw.table.stand_by(gw.record(), KEYS)
    gw.table.drop_local(SID)
    gw.control.reattach.windows._windows.clear()


def test_a_stale_request_this_gateway_acted_on_dies_at_the_remote_entry(tmp_path):
    gw = Gateway(tmp_path)
    captured = gw.request()
    _only(gw.receive((captured, NEW)), abi.MSG_PATH_CHALLENGE)  # acted on while we owned it
    _hand_over(gw)
    gw.clock.ms += 10_000  # stale (max age 5 s)
    assert _replayed_from_everywhere(gw, captured, 2_000) <= 1
    assert gw.gate.admit(gw.request(), (NEW.addr, NEW.port)), "the client's own is refused"
    gw.store.close()


def test_a_stale_request_verified_here_raises_the_remote_entrys_floor(tmp_path):
    """Never acted on here (captured on its way to the owner): its first
    copy is proven and refused as stale, and recorded: the rest die at the gate."""
    gw = Gateway(tmp_path)
    _hand_over(gw)
    captured = _request_as_seen_elsewhere(gw, counter=900)
    gw.clock.ms += 10_000
    assert _replayed_from_everywhere(gw, captured, 2_000) <= 1
    assert gw.gate.model.remote[SID].ctl_floor == 900
    genuine = _request_as_seen_elsewhere(gw, counter=901)
    assert gw.gate.admit(genuine, (NEW.addr, NEW.port)), "the client's own is refused"
    gw.store.close()
