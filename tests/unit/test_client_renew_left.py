"""Review R3 #6: Reconnect = yes, and the new session has other inner
addresses than the TUN: the client stops (by design), and the new session
it just created is told (our TERMINATE under its keys), not left at the
gateway; the client's state names the old session again (its TUN's)."""
from __future__ import annotations

import ipaddress

import test_client_source
from test_client_source import ASSIGN, Rig

from jvpn import wire
from jvpn.gate import abi
from jvpn.handshake import Assignment

NEW_SID = 0x5EC0_0000_0000_0777


def test_a_new_session_with_other_addresses_is_told_and_not_kept(monkeypatch):
    rig = Rig()
    c = rig.client
    c.reconnect, c.notice = True, lambda _line: None
    old, old_assignment, old_keys = c.session_id, c.assignment, c.keys
    monkeypatch.setattr(test_client_source, "ASSIGN", Assignment(
        NEW_SID, ipaddress.IPv4Interface("10.77.100.9/24"), ASSIGN.gateway_inner))
    c.session_over("ORPHANED", "no answer from the gateway for 20 s")
    c.renew()
    assert c._stop.is_set() and "other inner addresses" in c.ended
    assert (c.session_id, c.assignment, c.keys) == (old, old_assignment, old_keys)
    c.down()
    terms = [m for m, _ in rig.sent_of(abi.MSG_TERMINATE)]
    assert [wire.parse_header(m).session_id for m in terms] == [old, NEW_SID]
    hdr, _fields = wire.open_control(terms[1], rig.gateway.keys.reattach)  # under its keys
    assert hdr.tag_valid(rig.gateway.keys.hdr_c2s)
