"""The session table, the one writer of session state: the store first, then
the gate, then the events; a refused store write changes nothing. Handshake
admission and the control path that commits what it admits."""

from __future__ import annotations

import ipaddress
import threading

import pytest

from jvpn import keys, wire
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway.admission import Admission, Admitted, CookieReply, Refused
from jvpn.gateway.control import ControlPath
from jvpn.gateway.follower import NullFollower, for_store
from jvpn.gateway.ownership import LocalOwnership
from jvpn.gateway.reattach import ReattachServer
from jvpn.gateway.table import SessionTable
from jvpn.handshake import Initiator
from jvpn.keys import derive_session_keys
from jvpn.policy import default_policy
from jvpn.session import Event, State, Transport, apply, new_session
from jvpn.store import VersionConflict
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import client_clock_ns

SID = 0x0102030405060708
CLIENT = Transport("192.0.2.10", 5555)
INNER = ipaddress.IPv4Address("10.99.0.2")
KEYS = derive_session_keys(SID, b"\1" * 32, b"\2" * 32, b"\3" * 32)
GW, CL = keys.generate_private(), keys.generate_private()
ADDRESS = ipaddress.IPv4Interface("10.99.0.1/24")


class Clock:
    def __init__(self):
        self.ms = 1_700_000_000_000

    def __call__(self):
        return self.ms


class Rig:
    def __init__(self, tmp_path):
        self.clock = Clock()
        self.store = SqliteStore(tmp_path / "s.db")
        self.gate = UserspaceGate()
        self.events = EventLog("gw-test", clock_ms=self.clock)
        self.sent: list[tuple[bytes, Transport]] = []
        self.ownership = LocalOwnership("gw-test")
        self.table = SessionTable(store=self.store, gate=self.gate, events=self.events,
                                  ownership=self.ownership, clock_ms=self.clock,
                                  send=lambda msg, to: self.sent.append((msg, to)))

    def add(self):
        rec, tr = apply(new_session(SID, self.clock.ms), Event.ATTACH_OK, self.clock.ms,
                        binding=CLIENT)
        return self.table.create(rec.with_(inner_addr=str(INNER)), KEYS, INNER.packed, tr)

    def types(self):
        return [e["event_type"] for e in self.events.recent]

    def element(self):
        return self.gate.model.sessions.get(SID)


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.store.close()


def test_create_stores_then_projects_then_reports(rig):
    live = rig.add()
    assert rig.store.get(SID)[0] == live.record
    assert rig.element().state == abi.STATE_ATTACHED and live.installed
    assert rig.table.for_inner(INNER.packed) is live
    [ev] = rig.events.recent
    assert (ev["event_type"], ev["reason_code"], ev["new_state"]) == (
        "SessionStateChange", "HANDSHAKE_OK", "ATTACHED")


def test_a_refused_compare_and_swap_changes_nothing(rig):
    live = rig.add()
    before, element, n = live.record, rig.element(), len(rig.events.recent)
    new, tr = apply(before, Event.INSTABILITY_DETECTED, rig.clock.ms, transport_lost_ms=1)
    rig.store.cas(SID, before.version, before.with_(version=before.version + 1))  # another writer
    with pytest.raises(VersionConflict):
        rig.table.commit(before, new, KEYS, [(new, tr)])
    assert live.record == before and rig.element() == element
    assert len(rig.events.recent) == n


def test_a_terminating_transition_removes_tells_reports_and_forgets(rig):
    rig.add()
    rig.clock.ms += 5
    rig.table.transition(rig.table.get(SID), Event.SESSION_TTL_EXPIRED, detail="session lifetime")
    assert rig.element() is None and SID not in rig.table and rig.store.get(SID) is None
    [(msg, to)] = rig.sent
    hdr, (reason,) = wire.open_control(msg, KEYS.reattach)
    assert to == CLIENT and hdr.type == abi.MSG_TERMINATE
    assert wire.TERMINATE_REASONS[reason] == "TTL_SESSION_EXPIRED"
    assert rig.types()[-2:] == ["SessionStateChange", "SessionTerminated"]
    assert rig.events.recent[-1]["session_age_ms"] == 5


def test_an_illegal_transition_is_reported_not_applied(rig):
    live = rig.add()
    before = live.record
    rig.table.transition(live, Event.REATTACH_VALID)  # ATTACHED cannot take it
    assert rig.events.recent[-1]["event_type"] == "TransitionRejected"
    assert rig.events.recent[-1]["reason_code"] == "FATAL_PROTOCOL_ERROR"
    assert rig.store.get(SID)[0] == before and live.record == before


def test_fenced_elements_stand_by_and_stay_so(rig):
    live = rig.add()
    rig.table.fence()
    assert rig.element().state == abi.STATE_REMOTE and live.parked and not live.installed
    new, tr = apply(live.record, Event.INSTABILITY_DETECTED, rig.clock.ms, transport_lost_ms=1)
    rig.table.commit(live.record, new, KEYS, [(new, tr)])
    assert rig.element().state == abi.STATE_REMOTE  # a commit does not unfence it
    rig.table.unfence()
    rig.table.serve_again(live, live.record)
    assert rig.element().state == abi.STATE_VOLATILE and live.installed


def test_a_single_gateway_store_gets_the_null_follower(rig):
    ownership, follower_class = for_store(rig.store, "gw-test")
    assert isinstance(ownership, LocalOwnership) and follower_class is NullFollower


# ---------------------------------------------------------------- admission
def _admission(threshold=50):
    return Admission(GW, {keys.public_from_private(CL): INNER}, ADDRESS, threshold)


def test_admission_admits_a_configured_peer_and_builds_its_session():
    adm = _admission()
    verdict = adm.check(Initiator(CL, keys.public_from_private(GW)).initiation(), CLIENT)
    assert isinstance(verdict, Admitted) and verdict.inner == INNER
    new = adm.session(verdict, SID, CLIENT, 1000, owner="gw-test", owner_lease=0)
    assert new.record.state is State.ATTACHED and new.record.binding == CLIENT
    assert new.record.inner_addr == str(INNER) and new.transition.reason_code == "HANDSHAKE_OK"
    assert wire.parse_header(new.response).type == abi.MSG_HANDSHAKE_RESP


def test_admission_refuses_an_unknown_peer_and_asks_for_cookies_under_load():
    adm = _admission(threshold=0)
    stranger = Initiator(keys.generate_private(), keys.public_from_private(GW)).initiation()
    assert isinstance(adm.check(stranger, ("192.0.2.1", 1)), CookieReply)
    assert isinstance(_admission().check(stranger, ("192.0.2.1", 1)), Refused)


def test_a_second_handshake_ends_the_first_session_once_confirmed(rig):
    ids = iter([11, 22])
    control = ControlPath(
        table=rig.table, admission=_admission(),
        reattach=ReattachServer(rig.store, default_policy(), clock_ms=rig.clock),
        follower=NullFollower(store=rig.store, table=rig.table, gate=rig.gate,
                              ownership=rig.ownership, events=rig.events,
                              lock=threading.RLock(), retry=lambda m, s: None,
                              clock_ms=rig.clock),
        events=rig.events, send=lambda msg, to: rig.sent.append((msg, to)),
        clock_ms=rig.clock, randbits=lambda _bits: next(ids))
    gw_pub = keys.public_from_private(GW)
    stamps = client_clock_ns(rig.clock)  # the client's clock agrees with the gateway's
    control.handshake(Initiator(CL, gw_pub, stamps).initiation(), ("192.0.2.10", 5555))
    control.confirm(rig.table.get(11), Transport("192.0.2.10", 5555))
    assert set(rig.table.sessions) == {11}
    control.handshake(Initiator(CL, gw_pub, stamps).initiation(), ("192.0.2.10", 5556))
    assert rig.table.for_inner(INNER.packed).record.session_id == 11  # until confirmed
    control.confirm(rig.table.get(22), Transport("192.0.2.10", 5556))
    assert set(rig.table.sessions) == {22} and rig.store.get(11) is None
    ended = [e for e in rig.events.recent if e["event_type"] == "SessionTerminated"]
    assert [e["detail"] for e in ended] == ["replaced by a new handshake"]
