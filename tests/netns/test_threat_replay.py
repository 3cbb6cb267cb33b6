"""Threat 4.1, replay (S4): captured data and a captured REATTACH_REQ,
replayed from the attacker's address and with the victim's own source, are
rejected deterministically (data in XDP; the request in XDP or, within the
window, by the daemon's checks after the proof); nothing they touch changes."""

import pytest

from jvpn.gate import abi
from jvpn.lab.addresses import GW_INNER
from jvpn.lab.capture import Sniffer
from kits.threat_kit import attacker, counters, delta, settle, snapshot, victim

pytestmark = pytest.mark.kernel


def _capture(tl, action, wanted: int):
    sniffer = Sniffer(tl.lab)
    try:
        action()
        tl.wait(lambda: len(sniffer.captured.get(wanted, [])) > 0, "a captured message")
    finally:
        sniffer.stop()
    return sniffer.captured


def test_replayed_data_with_the_victims_source_is_dropped_as_replay(tl):
    got = _capture(tl, lambda: tl.lab.run("cl", "ping", "-c", "5", "-i", "0.2", GW_INNER),
                   abi.MSG_DATA)
    data = got[abi.MSG_DATA][:5]
    sid, _keys = victim(tl)
    # the client's own data meanwhile (its TUN's IPv6 solicitations...) passes,
    # and is counted where the attacker cannot add to it: on the client's uplinks
    legit = Sniffer(tl.lab)
    try:
        before, state = counters(tl), snapshot(tl, sid)
        src = data[0][1]
        attacker(tl).send([m for m, _ in data], spoof=src)
        settle()
        d = delta(before, counters(tl))
    finally:
        legit.stop()
    sent_by_client = len(legit.captured.get(abi.MSG_DATA, []))
    assert d.get("drop_replay") == len(data)
    assert d.get("pass_data", 0) == sent_by_client, (d, sent_by_client)
    assert snapshot(tl, sid) == state


def test_replayed_reattach_request_is_refused(tl):
    """The gate records no control counter (issue 10 item 5: a header copy
    must not consume the genuine one), so a replay within the window passes
    it and the daemon refuses it before any decision; older ones the gate
    drops. Either way nothing changes."""
    got = _capture(tl, lambda: tl.lab.link("cl", "wifi", "down"), abi.MSG_REATTACH_REQ)
    tl.wait(lambda: any(e["reason_code"] == "REATTACH_ACCEPT" for e in tl.gateway_events()),
            "the client's reattach")
    settle()
    sid, _keys = victim(tl)
    before, state = counters(tl), snapshot(tl, sid)
    n_events = len(tl.gateway_events())
    req, src = got[abi.MSG_REATTACH_REQ][0]
    attacker(tl).send([req])              # from the attacker's own address
    attacker(tl).send([req], spoof=src)   # and claiming the client's source
    settle()
    d = delta(before, counters(tl))
    passed = d.get("pass_control", 0)
    assert d.get("drop_replay", 0) + passed == 2
    refused = [e for e in tl.gateway_events()[n_events:]
               if e["event_type"] == "ReattachResult" and e["reason_code"] == "REPLAY_DETECTED"]
    assert len(refused) == passed
    assert snapshot(tl, sid) == state
