"""The client's failover under attack and on slow paths (review r14b):
probes never starved by dropped heartbeats or a dead path's pending
reattach, late probe replies measured, the selector owning failover on a
slow active path (docs/protocol.md "Probing the candidates", "Choosing a
path"). The simulated network of test_client_paths.py; its clock is
simulated: the bounds are exact, not timed."""

from __future__ import annotations

import pytest
from test_client_paths import LTE, WIFI, Net, probes_on

from jvpn.gate import abi


def drop_one_keepalive_every(net: Net, every_ms: int) -> list[int]:
    """An on-path attacker on the active uplink drops one of the client's
    keepalives every ``every_ms`` ms (nothing else: ~5 % of heartbeats)."""
    sock = net.client.sock
    plain, dropped = sock.sendto, []

    def sendto(msg, dst):
        if msg[0] == abi.MSG_KEEPALIVE and (not dropped or net.clock.ms - dropped[-1] >= every_ms):
            dropped.append(net.clock.ms)
            return len(msg)  # gone on the wire
        return plain(msg, dst)

    sock.sendto = sendto
    return dropped


def test_one_dropped_heartbeat_a_second_does_not_starve_the_candidate_probes(tmp_path):
    """A heartbeat lost less than 1 s ago with no late echo held every
    probe: dropping one heartbeat per 700 ms kept that true forever. A
    dropped one (a later one answered) holds them srtt + 4·rttvar now."""
    net = Net(tmp_path)
    net.run(3_000, data_every=10)
    before = len(probes_on(net, LTE))
    drop_one_keepalive_every(net, 700)
    net.run(20_000, data_every=10)
    assert len(probes_on(net, LTE)) - before >= 10  # ~1 per second for 20 s


def test_a_dead_active_path_fails_over_within_a_second_after_dropped_heartbeats(tmp_path):
    """The same attacker, then the active uplink dies: the candidate was
    probed all along, the failover bound (< 1 s) of
    test_a_silent_uplink_is_left_for_the_other_within_a_second holds."""
    net = Net(tmp_path)
    net.run(3_000, data_every=10)
    drop_one_keepalive_every(net, 700)
    net.run(20_000, data_every=10)
    n = len(net.gw.tun.written)
    net.silent.add(WIFI.source)
    start, moved_at = net.clock.ms, None
    for _ in range(300):
        net.run(10, data_every=10)
        if net.active_source() == LTE.source and len(net.gw.tun.written) > n:
            moved_at = net.clock.ms
            break
    assert moved_at is not None and moved_at - start < 1_000


@pytest.mark.parametrize("offset", [0, 100, 200, 400, 600])
def test_failover_after_a_drop_that_started_a_heartbeat_hold(tmp_path, offset):
    """The attacker drops one heartbeat (a probe becomes overdue: the next
    heartbeats are held up to 2 cadences + 1 s), then blackholes the uplink
    ``offset`` ms later. The failover bound is 1 s."""
    net = Net(tmp_path)
    net.run(3_000, data_every=10)
    c = net.client
    # wait for a probe to be due soon, then drop one heartbeat
    dropped = drop_one_keepalive_every(net, 10**9)
    while not dropped:
        net.run(10, data_every=10)
    c.sock.sendto = type(c.sock).sendto.__get__(c.sock)  # one drop only
    net.run(offset, data_every=10)
    n = len(net.gw.tun.written)
    net.silent.add(WIFI.source)
    start, moved_at = net.clock.ms, None
    for _ in range(400):
        net.run(10, data_every=10)
        if net.active_source() == LTE.source and len(net.gw.tun.written) > n:
            moved_at = net.clock.ms
            break
    assert moved_at is not None and moved_at - start < 1_000


@pytest.mark.parametrize("rtt", [600, 900, 1_200, 2_000, 2_800])
def test_a_long_delaying_attacker_does_not_pin_the_client(tmp_path, rtt):
    """As test_a_delaying_attacker_on_the_active_uplink_does_not_pin_the_client_to_it,
    with delays around the 1 s loss-timeout cap and the 64 late-kept samples
    (3.2 s at the 50 ms cadence): late echoes count answered."""
    net = Net(tmp_path)
    net.run(3_000, data_every=10)
    net.delay[WIFI.source] = rtt
    t0 = net.clock.ms
    moved = None
    for _ in range(300):
        net.run(100, data_every=10)
        if net.active_source() == LTE.source:
            moved = net.clock.ms - t0
            break
    assert moved is not None and moved < 5_000


@pytest.mark.parametrize("final", [1_050, 1_100, 1_400])
def test_a_slowly_ramped_delay_past_the_timeout_cap_is_left(tmp_path, final):
    """The attacker ramps the delay slowly (srtt follows) to just past the
    1 s loss-timeout cap: every heartbeat is lost at 1 s and revised
    answered by its late echo, the run of drops never reaches 3."""
    net = Net(tmp_path)
    net.run(3_000, data_every=10)
    for step in range(1, 41):
        net.delay[WIFI.source] = final * step // 40
        net.run(500, data_every=10)
        if net.active_source() == LTE.source:
            break
    net.run(20_000, data_every=10)
    assert net.active_source() == LTE.source


@pytest.mark.parametrize("rtt", [100, 250, 450])
@pytest.mark.parametrize("offset", [0, 250, 500, 750])
def test_failover_on_a_slow_active_path(tmp_path, rtt, offset):
    """Both uplinks ``rtt`` ms (nothing moves); the active one blackholes.
    "Replies missing" defers to the selector while a candidate is ready;
    heartbeats in flight confirm a run of drops; a late heartbeat ends
    the heartbeat hold for an overdue probe (each cost a loss timeout)."""
    net = Net(tmp_path, delay={WIFI.source: rtt, LTE.source: rtt})
    net.run(5_000 + offset, data_every=10)
    n = len(net.gw.tun.written)
    net.silent.add(WIFI.source)
    start, moved_at = net.clock.ms, None
    for _ in range(500):
        net.run(10, data_every=10)
        if net.active_source() == LTE.source and len(net.gw.tun.written) > n:
            moved_at = net.clock.ms
            break
    assert moved_at is not None and moved_at - start < 1_000 + 2 * rtt


def moved_within(net: Net, ms: int) -> int | None:
    n, start = len(net.gw.tun.written), net.clock.ms
    for _ in range(ms // 10):
        net.run(10, data_every=10)
        if net.active_source() == LTE.source and len(net.gw.tun.written) > n:
            return net.clock.ms - start
    return None


def test_a_candidate_slower_than_its_first_loss_timeout_is_measured(tmp_path):
    """A candidate 450 ms away (satellite, a loaded LTE link, or an on-path
    attacker adding delay): its first probes pass the start loss timeout
    (2·100 + 4·50 = 400 ms), Candidates.tick forgets them, and their late
    replies were refused by Candidates.reply: no RTT sample ever, every
    probe lost forever. A late reply is taken as a heartbeat's late echo
    (PathHealth._late): an RTT sample, the probe answered after all."""
    net = Net(tmp_path, delay={LTE.source: 450})
    net.run(10_000, data_every=10)
    h = net.client.candidates.paths[LTE.key].health
    assert h.last_answered is True and h.rtt.srtt > 300


def test_a_dead_active_path_whose_candidate_missed_one_probe_fails_over(tmp_path):
    """The candidate's last probe was lost (one dropped packet on LTE, by
    chance or by an attacker there), then the active uplink dies: no
    candidate is eligible (last_answered is False), so the client
    reattaches from the dead socket; a pending reattach held every probe
    (LTE never eligible). Now nothing holds a probe (issue 14: a probe
    raises no control floor)."""
    net = Net(tmp_path)
    net.run(5_000, data_every=10)
    c = net.client
    lte = c.candidates.paths[LTE.key]
    net.silent.add(LTE.source)  # one LTE probe lost
    before = len(probes_on(net, LTE))
    while len(probes_on(net, LTE)) == before:
        net.run(10, data_every=10)
    net.run(500, data_every=10)
    assert lte.health.last_answered is False
    net.silent.discard(LTE.source)
    net.silent.add(WIFI.source)  # the active uplink dies
    moved = moved_within(net, 10_000)
    assert moved is not None and moved < 5_000  # dcc15d1: 3.4 s


def test_an_uplink_that_appears_after_the_only_one_died_is_probed_and_taken(tmp_path):
    """WiFi (the only uplink) blackholes: no candidate, the client
    reattaches from the same socket; the reattach stays pending (the path
    is dead): LTE, which comes up meanwhile, must be probed all the same."""
    net = Net(tmp_path, uplinks=(WIFI,))
    net.run(4_000, data_every=10)
    net.silent.add(WIFI.source)
    net.run(1_500, data_every=10)
    assert net.client.pending is not None
    net.uplinks.append(LTE)
    moved = moved_within(net, 10_000)
    assert moved is not None and moved < 3_000


@pytest.mark.parametrize("rtt", [250, 300, 450])
def test_ramp_to_the_candidates_rtt_then_blackhole_fails_over(tmp_path, rtt):
    """LTE is ``rtt`` ms away. An on-path attacker on WiFi ramps WiFi's
    delay up to LTE's over 10 s (the scores stay within the 1.1 hysteresis:
    no planned move), then drops everything. The loss timeout is ~2·srtt and
    the confirmations wait one more, so the dead verdict came after
    "replies missing" started an unchosen reattach on the dead socket,
    which the selector never abandoned: LTE (proven) was never taken."""
    net = Net(tmp_path, delay={LTE.source: rtt})
    net.run(3_000, data_every=10)
    for step in range(1, 21):
        net.delay[WIFI.source] = rtt * step // 20
        net.run(500, data_every=10)
    assert net.active_source() == WIFI.source
    net.silent.add(WIFI.source)
    moved = moved_within(net, 10_000)
    assert moved is not None and moved < 3_000


def test_an_unchosen_reattach_on_a_dead_path_is_abandoned_for_the_ready_candidate(tmp_path):
    """A reattach the selector did not start (replies missing, a refusal's
    new request) is pending from the active socket when that path dies;
    LTE answered its last probe: after SWITCH_GIVE_UP_MS the reattach is
    abandoned and the selector fails over (it used to wait on that
    reattach, retried on the dead socket, forever)."""
    from jvpn.client_switch import SWITCH_GIVE_UP_MS
    net = Net(tmp_path)
    net.run(5_000, data_every=10)
    net.silent.add(WIFI.source)
    net.client.start_reattach("replies missing")
    moved = moved_within(net, 3 * SWITCH_GIVE_UP_MS)
    assert moved is not None and moved < SWITCH_GIVE_UP_MS + 1_000


def test_a_reattach_left_unanswered_holds_the_probes_a_second_after_each_copy_at_most(tmp_path):
    """Our REATTACH_REQs vanish on the way (the active path works
    otherwise): the reattach stays pending, retried with back-off. It held
    every probe while pending; nothing holds them now (issue 14): the
    candidate is still probed between the retries."""
    net = Net(tmp_path)
    net.run(3_000, data_every=10)
    sock = net.client.sock
    plain = sock.sendto
    sock.sendto = lambda msg, dst: (len(msg) if msg[0] == abi.MSG_REATTACH_REQ
                                    else plain(msg, dst))
    net.client.start_reattach("replies missing")
    before = len(probes_on(net, LTE))
    net.run(10_000, data_every=10)
    assert net.client.pending is not None
    assert len(probes_on(net, LTE)) - before >= 3
