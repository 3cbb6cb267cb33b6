"""Issue 12: ``Reconnect = yes``. A session the gateway ended by its TTLs
(or forgot) is replaced by a new one, never silently (an event and a line
with both session ids); one the operator or the policy ended on purpose is
not; with the default (no) the client stops. The client runs on the
injected socket, clock and in-memory gateway of test_client_source."""

from __future__ import annotations

import ipaddress

import pytest
import test_client_source
from test_client_source import ASSIGN, GW, Rig

from jvpn import wire
from jvpn.gate import abi
from jvpn.handshake import Assignment

NEW_SID = 0x5EC0_0000_0000_0777


@pytest.fixture
def rig(monkeypatch):
    r = Rig()
    r.lines = []
    r.client.notice = r.lines.append
    r.client.reconnect = True
    monkeypatch.setattr(test_client_source, "ASSIGN", Assignment(
        NEW_SID, ASSIGN.client_inner, ASSIGN.gateway_inner))  # the gateway's next session
    return r


def _terminate(rig, reason: str) -> None:
    rig.client.receive(rig.gateway.control(abi.MSG_TERMINATE,
                                           wire.TERMINATE_REASONS.index(reason)), GW)


def test_a_session_the_gateway_expired_is_replaced_and_said(rig):
    client, old = rig.client, rig.client.session_id
    _terminate(rig, "TTL_TRANSPORT_LOSS_EXPIRED")
    assert client.renewing and not client._stop.is_set()
    client.renew()
    assert client.session_id == NEW_SID != old and not client.renewing
    assert client.failed is None and client.renewals == 1
    [line] = rig.lines
    assert f"new session {NEW_SID:016x} replaces {old:016x}" in line
    [e] = [e for e in rig.events.recent if e["event_type"] == "SessionRenewed"]
    assert e["session_id"] == f"{NEW_SID:016x}" and e["old_session_id"] == f"{old:016x}"
    # the new session works: the gateway's keepalive under the new keys is heard
    rig.clock.ms += 1_000
    client.receive(rig.gateway.keepalive(), GW)
    assert client.last_rx_ms == rig.clock.ms


def test_an_orphaned_session_is_replaced_after_telling_the_gateway(rig):
    client = rig.client
    client.session_over("ORPHANED", "no answer from the gateway for 20 s")
    assert client.renewing and len(rig.sent_of(abi.MSG_TERMINATE)) == 1
    client.renew()
    assert client.session_id == NEW_SID and rig.lines


@pytest.mark.parametrize("reason", ["POLICY_TERMINATION", "CLIENT_STOPPED"])
def test_a_session_ended_on_purpose_is_not_replaced(rig, reason):
    _terminate(rig, reason)
    assert not rig.client.renewing and rig.client._stop.is_set()
    assert rig.client.failed == reason and rig.lines == []


def test_without_reconnect_the_client_stops(rig):
    rig.client.reconnect = False
    _terminate(rig, "TTL_TRANSPORT_LOSS_EXPIRED")
    assert not rig.client.renewing and rig.client._stop.is_set()


def test_other_inner_addresses_end_the_client_with_why(rig, monkeypatch):
    monkeypatch.setattr(test_client_source, "ASSIGN", Assignment(
        NEW_SID, ipaddress.IPv4Interface("10.77.100.9/24"), ASSIGN.gateway_inner))
    _terminate(rig, "TTL_SESSION_EXPIRED")
    rig.client.renew()
    assert rig.client._stop.is_set() and "other inner addresses" in rig.client.ended
    assert rig.client.ended.startswith("session ended by the gateway: TTL_SESSION_EXPIRED")
