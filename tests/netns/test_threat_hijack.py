"""Threat 4.2, reattach hijack (S3, S5, S7): a forged reattach for the
victim's session is rejected and changes nothing: the store record and the XDP
element are byte-identical before and after, and a security event says so."""

import os

import pytest

from jvpn import wire
from jvpn.gate import abi
from jvpn.lab.addresses import GW_IP, PORT
from kits.threat_kit import attacker, counters, delta, snapshot, victim

pytestmark = pytest.mark.kernel


def _request(sid, hdr_key, reattach_key, counter, seq=10**6):
    import time

    return wire.seal_control(
        wire.Header(type=abi.MSG_REATTACH_REQ, session_id=sid, counter=counter), hdr_key,
        reattach_key, seq, int(time.time() * 1000), os.urandom(16), 0)


def test_forged_reattach_is_dropped_in_xdp_and_changes_nothing(tl):
    import socket

    sid, _keys = victim(tl)
    before, state = counters(tl), snapshot(tl, sid)
    with tl.lab.socket("atk", socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(_request(sid, os.urandom(16), os.urandom(32), 10**9), (GW_IP, PORT))
        s.settimeout(1.0)
        with pytest.raises(TimeoutError):
            s.recvfrom(2048)  # the attacker receives nothing: no reflection, no oracle
    assert delta(before, counters(tl)).get("drop_bad_tag") == 1
    assert snapshot(tl, sid) == state


def test_authentic_header_with_a_forged_proof_is_refused_by_the_daemon(tl):
    """Even an attacker holding the header key (the XDP gate lets the message
    through) cannot move the binding without the reattach key."""
    sid, keys = victim(tl)
    n = len(tl.gateway_events())
    state = snapshot(tl, sid)
    attacker(tl).send([_request(sid, keys.hdr_c2s, os.urandom(32), 2**40)])
    tl.wait(lambda: any(e.get("reason_code") == "AUTH_FAIL" for e in tl.gateway_events()[n:]),
            "the daemon's AUTH_FAIL")
    new = tl.gateway_events()[n:]
    assert any(e["reason_code"] == "SEC_SESSION_FIXATION_ATTEMPT" for e in new)
    assert snapshot(tl, sid) == state  # byte-identical: S7
    assert not [e for e in new if e["event_type"] == "SessionStateChange"]
