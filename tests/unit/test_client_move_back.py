"""Review k17c of the move back (k17cli, jvpn/client_switch.py ``settle``):
a switch whose uplink went down after our PATH_RESPONSE left is unsettled,
and if the gateway moved its binding there the same request again from the
active socket moves it back.

- F1: the move back is a switch the gateway counts, so the client's
  selector counts it too; else a network on one uplink that lets our
  PATH_RESPONSE through, drops the ACK and takes the uplink away (an RA
  with router lifetime 0, a deauth), then brings it back preferred, made
  each planned move cost the gateway two switches against the selector's
  one, past max_switches_per_min: DEGRADED, then TERMINATED in ~10 s.
- F2: the ACK of that request, reaching the active socket (held and
  forwarded by an attacker on both paths), is the gateway's word that its
  binding moved to the dead uplink: the move back, at once; before, it
  was taken as the end of the switch and data stopped for 1.5 s."""

from __future__ import annotations

from test_client_paths import (
    LISTEN,
    LTE,
    WIFI,
    Net,
    lte_down_after_our_path_response,
    ms_until_data_flows,
)

from jvpn.codes import EventType
from jvpn.gate import abi
from kits.daemon_kit import events_of


def test_moves_back_keep_the_gateway_within_its_switch_bounds(tmp_path):
    net = Net(tmp_path, gated=True)
    c = net.client
    net.run(5_000, data_every=10)
    assert net.active_source() == WIFI.source
    states = []
    lte_up = True
    down_at = None
    plain_collect = net.collect

    def collect(since):  # the malicious LTE network: REATTACH_ACKs to LTE never arrive
        kept = net.gw.sock.sent[since:]
        net.gw.sock.sent[since:] = [(m, to) for m, to in kept
                                    if not (m[0] == abi.MSG_REATTACH_ACK and to[0] == LTE.source)]
        plain_collect(since)
        net.gw.sock.sent[since:] = []
        net.gw.sock.sent.extend(kept)

    net.collect = collect
    net.route = LTE.key  # LTE is the OS's preferred route: the client follows it
    c._wake.set()
    t_end = net.clock.ms + 60_000
    while net.clock.ms < t_end and not c.failed:
        net.run(10, data_every=10)
        rec = net.gw.table.get(c.session_id)
        if rec is None:
            states.append("GONE")
            break
        rec = rec.record
        states.append(rec.state.name)
        if lte_up and rec.binding is not None and rec.binding.addr == LTE.source:
            # our PATH_RESPONSE moved the binding to LTE: the malicious LTE
            # network drops the ACK and takes the uplink away
            net.deaf.add(LTE.source)
            net.uplinks.remove(LTE)
            getattr(net, "down", set()).add(LTE.source)
            net.silent.add(LTE.source)
            net.route = WIFI.key
            c._wake.set()
            lte_up, down_at = False, net.clock.ms
        elif not lte_up and net.clock.ms - down_at > 2_000:
            # LTE comes back (reassociated), preferred again
            net.uplinks.append(LTE)
            for s in (net.deaf, getattr(net, "down", set()), net.silent):
                s.discard(LTE.source)
            net.route = LTE.key
            c._wake.set()
            lte_up = True
    accepted = [e for e in events_of(net.gw.events, "ReattachResult") if e.get("accepted")]
    selected = events_of(net.events, EventType.PATH_SELECTED)
    assert "DEGRADED" not in states and "TERMINATED" not in states and not c.failed, (
        len(accepted), len(selected), sorted(set(states)), c.failed)


def test_the_ack_of_the_switch_to_the_dead_uplink_does_not_settle_the_move_back(tmp_path):
    net = Net(tmp_path, gated=True, delay={LTE.source: 30})
    n = len(net.gw.sock.sent)
    c = lte_down_after_our_path_response(net)
    [ack] = [m for m, to in net.gw.sock.sent[n:]
             if m[0] == abi.MSG_REATTACH_ACK and to[0] == LTE.source]
    assert c.pending is not None and c.pending.unsettled
    wifi_sock = c.sock
    c.receive(ack, LISTEN, wifi_sock)  # the held ACK, forwarded to the active path
    took = ms_until_data_flows(net, 5_000)
    assert took <= 300, took  # without the forwarded ACK: <= 300 ms (the merge's own test)
