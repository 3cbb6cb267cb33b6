"""Key expiry's quarantine lifts (review R4 #2): with ``keys.expiry_terminates
= false`` a store that refuses the KEYS_AGED write quarantines the session
(no element, no downstream); once the retried write lands the session is
DEGRADED, its element comes back through the table's normal put (DEGRADED
drops data in the gate), and a rekey brings it back to ATTACHED. A
revocation's quarantine stays, and the rekey nudge skips a quarantined
session (it has no element a rekey could restore)."""

import pytest

from jvpn.gate.userspace import UserspaceGate
from jvpn.session import State
from jvpn.store import StoreError
from kits.client_bridge import Bridge
from kits.daemon_kit import PEER_INNER, AdmitAll, Clock, ipv4, make_gateway
from kits.rekey_kit import policy


@pytest.fixture(params=["model gate", "admit all"])
def gate(request):
    return UserspaceGate() if request.param == "model gate" else AdmitAll()


def refused(*_a, **_k):
    raise StoreError("injected outage")


def _quarantined(tmp_path, monkeypatch, gate):
    clock = Clock()
    gw = make_gateway(tmp_path, gate=gate, clock=clock,
                      policy=policy(rekey_after_ms=1_000, reject_after_ms=2_000,
                                    expiry_terminates=False))
    b = Bridge(gw, clock)
    b.client.send_data(ipv4(PEER_INNER[0]))
    b.pump()
    sid = b.client.session_id
    b.online = False
    monkeypatch.setattr(gw.store, "cas", refused)
    clock.ms += 2_000
    b.tick()  # expiry, write refused -> quarantined
    live = gw.table.get(sid)
    assert live.quarantined and live.record.state is State.ATTACHED
    monkeypatch.undo()  # the outage ends
    return gw, clock, b, sid


def test_key_expiry_quarantine_lifts_once_the_write_lands(tmp_path, monkeypatch, gate):
    gw, clock, b, sid = _quarantined(tmp_path, monkeypatch, gate)
    clock.ms += 1_000
    b.tick()
    live = gw.table.get(sid)
    assert live.record.state is State.DEGRADED
    assert not live.quarantined and live.installed
    n = len(gw.tun.written)
    b.client.send_data(ipv4(PEER_INNER[0]))  # DEGRADED: nothing delivered yet
    b.pump()
    assert len(gw.tun.written) == n
    b.online = True
    clock.ms += 1_000
    b.tick()  # the nudge
    b.pump()
    live = gw.table.get(sid)
    assert live.record.state is State.ATTACHED and live.keys.epoch == 1
    n = len(gw.tun.written)
    b.client.send_data(ipv4(PEER_INNER[0]))
    b.pump()
    assert len(gw.tun.written) == n + 1, "recovered, yet still quarantined"


def test_a_revocation_quarantine_is_not_lifted_by_key_expiry(tmp_path, monkeypatch, gate):
    gw, clock, b, sid = _quarantined(tmp_path, monkeypatch, gate)
    live = gw.table.get(sid)
    gw.table.quarantine(sid)  # a revocation the store refused meanwhile
    gw.table.quarantine(sid, lifts=True)  # and key expiry's again: never softens it
    clock.ms += 1_000
    b.tick()
    assert live.record.state is State.DEGRADED
    assert live.quarantined and not live.installed
    b.online = True
    n = len(gw.sock.sent)
    for _ in range(3):
        clock.ms += 1_000
        b.tick()  # DEGRADED with expired keys, but quarantined: no nudge
    assert len(gw.sock.sent) == n
