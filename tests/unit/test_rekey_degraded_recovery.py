"""A session DEGRADED by expired keys (``keys.expiry_terminates = false``)
comes back with the real client (review R2 #3; docs/protocol.md "Rekey",
overlap and expiry): the client asks for a rekey only on the gateway's
FLAG_REKEY, and a DEGRADED session gets no keepalive reply, so the gateway's
timer sends the binding a flagged keepalive (at most one a second) while
the session is DEGRADED with expired keys."""

from __future__ import annotations

import pytest

from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway import snapshot
from jvpn.session import State
from jvpn.tunnel import FLAG_REKEY
from kits.client_bridge import Bridge
from kits.daemon_kit import PEER_INNER, AdmitAll, Clock, ipv4, make_gateway
from kits.rekey_kit import policy


@pytest.fixture(params=["model gate", "admit all"])
def gate(request):
    """The userspace model of the XDP gate (it drops a DEGRADED session's
    keepalives and data, passes its REKEY_INIT), or none."""
    return UserspaceGate() if request.param == "model gate" else AdmitAll()


def _degraded(tmp_path, gate, timer: Clock | None = None, **changes):
    """A session DEGRADED by expired keys; ``timer``: the gateway's timer
    clock apart from its wall clock (the test steps the wall clock alone);
    ``changes``: to the policy."""
    clock = Clock()
    apart = {"timer_ms": timer} if timer is not None else {}
    gw = make_gateway(tmp_path, gate=gate, clock=clock,
                      policy=policy(rekey_after_ms=1_000, reject_after_ms=2_000,
                                    expiry_terminates=False, **changes), **apart)
    b = Bridge(gw, clock)
    b.client.send_data(ipv4(PEER_INNER[0]))  # confirms the session
    b.pump()
    sid = b.client.session_id
    assert gw.table.get(sid).confirmed
    b.online = False  # the client is away (a laptop asleep): no flag reaches it
    clock.ms += 2_000
    b.tick()
    assert gw.table.get(sid).record.state is State.DEGRADED
    b.online = True
    return gw, clock, b, sid


def _nudged(tmp_path, gate, **changes):
    """A DEGRADED session whose first nudge just left, its wall clock and
    timer clock apart; what was sent so far. Its binding stays silent (the
    client is away); ``changes``: to the policy (a test that keeps the
    client away for long sets a longer ``transport_lost_ttl_ms``: stranding
    measures silence on the timer clock)."""
    timer = Clock()
    gw, clock, b, sid = _degraded(tmp_path, gate, timer, **changes)
    b.online = False
    clock.ms += 3_000  # keys expired 3 s ago (reject_after 2 s from the handshake)
    timer.ms += 3_000
    b.tick()  # a nudge
    return gw, clock, timer, b, sid, len(gw.sock.sent)


def _since(gw, sid, n):
    """Messages sent since ``n``, the session still DEGRADED."""
    assert gw.table.get(sid).record.state is State.DEGRADED
    return len(gw.sock.sent) - n


def test_a_session_degraded_by_expired_keys_is_rekeyed_back_to_attached(tmp_path, gate):
    gw, clock, b, sid = _degraded(tmp_path, gate)
    clock.ms += 1_000
    b.tick()  # the flagged keepalive
    assert b.pump()  # ... the client asks, the gateway answers, the client switches
    live = gw.table.get(sid)
    assert b.client.channel.ring.epoch == 1 == live.keys.epoch
    assert live.keys.confirmed and live.record.state is State.ATTACHED
    n = len(gw.tun.written)
    b.client.send_data(ipv4(PEER_INNER[0]))
    assert len(gw.tun.written) == n + 1  # data passes again, under epoch 1


def test_the_flag_is_sent_at_most_once_a_second_and_only_while_degraded(tmp_path, gate):
    gw, clock, b, sid = _degraded(tmp_path, gate)
    b.online = False  # still away: count what the gateway sends
    n = len(gw.sock.sent)
    for _ in range(5):
        clock.ms += 200
        b.tick()
    assert len(gw.sock.sent) - n == 1
    b.online = True
    clock.ms += 1_000
    b.tick()
    b.pump()
    assert gw.table.get(sid).record.state is State.ATTACHED
    n = len(gw.sock.sent)
    clock.ms += 1_000
    b.tick()
    assert len(gw.sock.sent) == n  # ATTACHED again: no more nudges


def test_the_nudge_is_no_keepalive_echo(tmp_path, gate):
    """A nudge answers no keepalive of the client's: its payload stays empty
    (wire.KEEPALIVE_ECHO is 20 bytes, older ones 16 or 8), so a client matching heartbeat echoes
    never takes it for one (docs/protocol.md "Transport selection")."""
    gw, clock, b, _sid = _degraded(tmp_path, gate)
    n = len(gw.sock.sent)
    clock.ms += 1_000
    b.tick()
    [(nudge, _to)] = gw.sock.sent[n:]
    _t, flags, payload = b.client.channel.open(nudge)
    assert payload == b"" and flags & FLAG_REKEY


def test_a_nudge_is_counted_by_the_timer_in_fields_of_its_own(tmp_path, gate):
    """The UDP loop counts keepalive replies, the timer thread its nudges:
    each field has one writer (an unlocked ``+=`` from two threads loses
    counts); the listing's tx sums them (jvpn/gateway/traffic.py)."""
    gw, clock, b, sid = _degraded(tmp_path, gate)
    b.online = False
    before_row = next(r for r in snapshot.sessions(gw) if r["session_id"] == f"{sid:016x}")
    n = len(gw.sock.sent)
    clock.ms += 1_000
    b.tick()
    [(nudge, _to)] = gw.sock.sent[n:]
    traffic = gw.table.get(sid).traffic
    assert (traffic.nudge_packets, traffic.nudge_bytes) == (1, len(nudge))
    assert traffic.ka_packets == 0  # the UDP loop's field, untouched by the timer
    row = next(r for r in snapshot.sessions(gw) if r["session_id"] == f"{sid:016x}")
    assert row["tx_packets"] == before_row["tx_packets"] + 1
    assert row["tx_bytes"] == before_row["tx_bytes"] + len(nudge)
