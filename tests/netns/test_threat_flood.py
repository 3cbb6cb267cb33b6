"""Threat 4.3, control-plane flood: unknown session IDs are dropped early in
XDP (no state, no events per packet); a handshake flood is cut per source
before the daemon; the victim's traffic keeps flowing."""

import os

import pytest

from jvpn import wire
from jvpn.gate import abi
from jvpn.lab.addresses import GW_INNER
from kits.threat_kit import attacker, counters, data_message, delta, settle

pytestmark = pytest.mark.kernel


def test_unknown_session_flood(tl):
    before, n_events = counters(tl), len(tl.gateway_events())
    flood = [data_message(int.from_bytes(os.urandom(8), "little"), os.urandom(16), i)
             for i in range(5000)]
    attacker(tl).send(flood)
    settle()
    assert delta(before, counters(tl)).get("drop_unknown_session") == len(flood)
    assert len(tl.gateway_events()) - n_events < 5  # counted, not a flood of events
    assert tl.lab.run("cl", "ping", "-c", "2", "-W", "2", GW_INNER, check=False).returncode == 0


def test_handshake_flood_is_cut_per_source_before_the_daemon(tl):
    before, n_events = counters(tl), len(tl.gateway_events())
    init = wire.Header(type=abi.MSG_HANDSHAKE_INIT, session_id=0, counter=0).pack() + \
        os.urandom(150)
    attacker(tl).send([init] * 500)
    settle()
    d = delta(before, counters(tl))
    assert d.get("drop_rate_source", 0) >= 480  # per-source bucket: burst 10, 20/s
    passed = d.get("pass_handshake", 0)
    assert passed <= 20
    rejected = [e for e in tl.gateway_events()[n_events:] if e["event_type"] ==
                "HandshakeRejected"]
    assert len(rejected) == passed  # the daemon saw only what XDP let through (bad mac1)
    assert tl.lab.run("cl", "ping", "-c", "2", "-W", "2", GW_INNER, check=False).returncode == 0
