"""The gateway's answer to path probes (issue 14, docs/protocol.md "Transport
selection", "The probe budget"): one reply per authentic, fresh probe, to
its source, no larger than the probe; a probe moves nothing (no store call,
no record version, no binding, no timer); forgeries, replays, floods and
sessions in the wrong state get nothing, and a forged tag costs no HMAC."""

from __future__ import annotations

import dataclasses

import pytest

from jvpn import wire
from jvpn.gate import abi
from jvpn.gateway import probes
from jvpn.session import Event, State
from kits.daemon_kit import CLIENT, events_of
from kits.rekey_kit import RekeyClient, gateway, policy

CANDIDATE = ("198.51.100.7", 6000)  # the client's other uplink
ATTACKER = ("203.0.113.66", 4444)


class CountingStore:
    """Counts every call the gateway makes on its store. A probe makes none
    but the send counter's block reservation (``set_floor``), which any
    sealed message makes once per RESERVE_BLOCK counters: never a record."""

    def __init__(self, store):
        self.calls: list[str] = []
        for name in dir(store):
            attr = getattr(store, name)
            if callable(attr) and not name.startswith("_"):
                setattr(store, name, self._counted(name, attr))

    @property
    def record_calls(self) -> list[str]:
        return [c for c in self.calls if c != "set_floor"]

    def _counted(self, name, fn):
        def counted(*args, **kwargs):
            self.calls.append(name)
            return fn(*args, **kwargs)
        return counted


def probe(c: RekeyClient, probe_id: int = 7, keys=None) -> bytes:
    return c.control(abi.MSG_PATH_PROBE, probe_id, keys=keys)


def answered(c: RekeyClient, msg: bytes, src) -> list:
    return c.send(msg, src=src)


@pytest.fixture
def session(tmp_path):
    gw, clock = gateway(tmp_path)
    return gw, clock, RekeyClient(gw)


def test_a_probe_from_a_candidate_is_answered_and_moves_nothing(session):
    gw, clock, c = session
    before, rx = c.record(), c.live().last_rx_ms
    clock.ms += 700
    store = CountingStore(gw.store)
    msg = probe(c, 42)
    [(reply, to)] = answered(c, msg, CANDIDATE)
    assert store.record_calls == []  # not one record read or write
    assert to == CANDIDATE and len(reply) == len(msg) == probes.PROBE_LEN
    hdr, (probe_id, state, flags, rx_age, version) = c.opened(reply)
    assert hdr.type == abi.MSG_PATH_PROBE_REPLY
    assert (probe_id, state, flags) == (42, abi.STATE_ATTACHED, 0)
    assert rx_age == 700 and version == gw.policy.version
    after = c.record()
    assert after == before and after.binding.port == CLIENT[1]
    assert c.live().last_rx_ms == rx and c.live().record == before
    assert gw.probes.counts["answered"] == 1
    assert not events_of(gw.events, "SessionStateChange")[1:]  # the handshake's only


def test_a_probe_from_the_binding_is_flagged(session):
    _gw, _clock, c = session
    [(reply, to)] = answered(c, probe(c), CLIENT)
    assert to == CLIENT
    assert c.opened(reply)[1][2] == wire.PROBE_FROM_BINDING


def test_forged_probes_get_nothing_and_a_forged_tag_costs_no_hmac(session):
    gw, _clock, c = session
    genuine = probe(c)
    bad_tag = genuine[:24] + bytes(8) + genuine[32:]
    hmacs = gw.probes.checks.hmacs
    for _ in range(500):
        assert answered(c, bad_tag, ATTACKER) == []
    assert gw.probes.checks.hmacs == hmacs  # bounded work: a forged flood makes no HMAC
    bad_mac = genuine[:-1] + bytes([genuine[-1] ^ 1])  # the tag holds, the MAC does not
    assert answered(c, bad_mac, ATTACKER) == []
    assert gw.probes.counts["forged"] == 501
    [(_reply, _to)] = answered(c, genuine, CLIENT)  # the genuine one is still fresh


def test_a_replayed_probe_gets_nothing_from_anywhere(session):
    gw, _clock, c = session
    msg = probe(c)
    assert len(answered(c, msg, CANDIDATE)) == 1
    assert answered(c, msg, CANDIDATE) == []
    assert answered(c, msg, ATTACKER) == []
    assert gw.probes.counts["replayed"] == 2


def test_a_raced_fresh_probe_gets_one_reply_and_the_genuine_copy_dies(session):
    gw, _clock, c = session
    before = c.record()
    store = CountingStore(gw.store)
    msg = probe(c, 9)  # captured on path, raced from the attacker's own address
    [(reply, to)] = answered(c, msg, ATTACKER)
    assert to == ATTACKER and len(reply) == len(msg)  # no amplification
    assert c.opened(reply)[1][2] == 0
    assert answered(c, msg, CANDIDATE) == []  # the genuine copy: a replay
    assert store.record_calls == [] and c.record() == before
    assert c.data()  # the client's stream goes on over its binding


def floor(gw, c) -> int:
    return gw.gate.model.sessions[c.sid].ctl_floor


def probe_floor(gw, c) -> int:
    return gw.gate.model.sessions[c.sid].probe_floor


def keepalive(c) -> int:
    """A verified keepalive of ours (it raises the gate's ctl_floor): its counter."""
    ka = c.channel.seal(b"", abi.MSG_KEEPALIVE)
    assert len(c.send(ka)) == 1  # its echo
    return wire.parse_header(ka).counter


def test_a_probe_has_a_window_of_its_own_and_raises_no_control_floor(session):
    """A probe is recorded in the session's probe window, not in the control
    window the reattach and rekey validators share, and the gate's ctl_floor
    stays where the last keepalive or control message put it (issue 14)."""
    gw, _clock, c = session
    below = keepalive(c)
    counter = c.channel.next_counter()
    assert len(answered(c, c.control(abi.MSG_PATH_PROBE, 1, counter=counter), CANDIDATE)) == 1
    assert floor(gw, c) == below  # a verified probe leaves ctl_floor unchanged
    assert not gw.reattach.recorded(c.sid, counter)
    assert not gw.probes.checks.windows.fresh(c.sid, counter)


def test_a_verified_probe_raises_the_probe_floor_not_the_control_floor(session):
    """Once verified, a probe raises the gate's probe_floor to its counter
    (its replays then die at the gate, before the session's probe bucket:
    a captured probe replayed at 10/s must not starve the client's own),
    and never ctl_floor. A refused probe (forged, replayed) raises nothing,
    and the floor never goes down."""
    gw, _clock, c = session
    below = keepalive(c)
    assert probe_floor(gw, c) == 0
    early = c.channel.next_counter()  # a probe sealed first, still on its way
    msg = probe(c, 3)
    counter = wire.parse_header(msg).counter
    assert len(answered(c, msg, CANDIDATE)) == 1
    assert probe_floor(gw, c) == counter and floor(gw, c) == below
    forged = probe(c, 4)
    forged = forged[:-1] + bytes([forged[-1] ^ 1])  # the tag holds, the MAC does not
    assert answered(c, forged, ATTACKER) == [] and answered(c, msg, ATTACKER) == []
    assert probe_floor(gw, c) == counter
    late = c.control(abi.MSG_PATH_PROBE, 5, counter=early)
    assert len(answered(c, late, CANDIDATE)) == 1  # (the gate would drop it: AdmitAll here)
    assert probe_floor(gw, c) == counter and floor(gw, c) == below


def test_a_probe_overtaken_by_our_heartbeats_is_answered_once(session):
    """A probe on a slow candidate reaches the gateway after heartbeats of
    the fast active path sealed later (ctl_floor above its counter): it is
    answered once; its replay, from anywhere, gets nothing (the probe
    window), and ctl_floor is still the heartbeats'."""
    gw, _clock, c = session
    slow = probe(c, 5)  # sealed first, on its way over the slow candidate
    top = max(keepalive(c) for _ in range(40))  # two seconds of heartbeats arrive first
    assert floor(gw, c) == top > wire.parse_header(slow).counter
    [(reply, to)] = answered(c, slow, CANDIDATE)
    assert to == CANDIDATE and c.opened(reply)[1][0] == 5
    assert answered(c, slow, CANDIDATE) == [] and answered(c, slow, ATTACKER) == []
    assert gw.probes.counts["answered"] == 1 and gw.probes.counts["replayed"] == 2
    assert floor(gw, c) == top


def test_a_reattach_overtaken_by_a_probe_is_not_a_replay(session):
    """The other way round: our reattach request on the slow active path,
    overtaken by a fast candidate's probe sealed after it, is still fresh
    (the probe raised no floor, and its counter is in another window)."""
    gw, _clock, c = session
    req = c.reattach_request(c.record().reattach_seq + 1)
    assert len(answered(c, probe(c), CANDIDATE)) == 1
    assert floor(gw, c) < wire.parse_header(req).counter
    assert gw.reattach.windows.fresh(c.sid, wire.parse_header(req).counter)


def test_a_replay_flood_of_an_overtaken_probe_costs_one_hmac_each_and_nothing_else(session):
    """The replays the gate passes (those that reach it before the daemon
    raised probe_floor; AdmitAll here passes them all), at most the
    session's probe bucket: in the daemon each costs one HMAC, no reply, no
    seal, no store call, no window of any other session."""
    gw, _clock, c = session
    msg = probe(c)
    keepalive(c)
    assert len(answered(c, msg, CANDIDATE)) == 1
    store, hmacs, sent = CountingStore(gw.store), gw.probes.checks.hmacs, len(gw.sock.sent)
    for i in range(500):
        assert answered(c, msg, (f"203.0.113.{i % 200}", 1000 + i)) == []
    assert gw.probes.checks.hmacs - hmacs == 500
    assert len(gw.sock.sent) == sent and store.calls == []
    assert gw.probes.counts["replayed"] == 500 and gw.probes.counts["answered"] == 1


def test_probe_windows_are_bounded_and_forget_the_least_recently_used():
    w = probes.ProbeWindows(capacity=2)
    assert w.mark(1, 10) and w.mark(2, 10) and not w.fresh(1, 10)
    assert w.mark(1, 5)  # overtaken: still fresh, below the top
    assert w.mark(3, 10)  # session 2, the least recently used, is forgotten
    assert w.fresh(2, 10) and not w.fresh(1, 10) and not w.fresh(3, 10)
    assert w.mark(1, 10 + probes.PROBE_WINDOW) and w.fresh(1, 11)
    assert not w.fresh(1, 9)  # below the window: stale


def test_the_probe_bucket_is_sized_from_the_policy_in_force(session):
    gw, clock, c = session
    n = 2 * gw.policy.max_candidate_count  # 6 by default
    replies = sum(len(answered(c, probe(c, i), CANDIDATE)) for i in range(n + 20))
    assert replies == n and gw.probes.counts["rate_limited"] == 20
    clock.ms += gw.policy.probe_interval_ms  # refilled by one interval's worth
    assert sum(len(answered(c, probe(c, i), CANDIDATE)) for i in range(n + 5)) == n
    gw.policy = policy(max_candidate_count=8)  # a reload (jvpn/gateway/operator_actions.py)
    clock.ms += 10_000
    assert sum(len(answered(c, probe(c, i), CANDIDATE)) for i in range(30)) == 16


@pytest.mark.parametrize("how", ["quarantined", "terminated", "standby", "birth"])
def test_no_reply_where_the_session_does_not_answer(session, how):
    gw, _clock, c = session
    live = c.live()
    if how == "quarantined":
        live.quarantined = True
    elif how == "terminated":
        gw.table.transition(live, Event.OPERATOR_TERMINATE, detail="test")
    elif how == "standby":  # another gateway's session: REMOTE here, not served
        gw.table.drop_local(c.sid)
    else:
        live.record = dataclasses.replace(live.record, state=State.BIRTH)
    assert answered(c, probe(c), CLIENT) == []
    assert gw.probes.counts["refused"] == 1 and gw.probes.counts["answered"] == 0


def test_the_previous_epoch_is_answered_in_its_overlap_and_refused_after(tmp_path):
    gw, clock = gateway(tmp_path, rekey_overlap_ms=3_000)
    c = RekeyClient(gw)
    c.rekey()  # confirmed: the overlap runs
    assert len(answered(c, probe(c, 1, keys=c.old), CANDIDATE)) == 1
    assert len(answered(c, probe(c, 2), CANDIDATE)) == 1
    clock.ms += 3_001
    gw.tick()  # the overlap ends: epoch 0 leaves memory
    assert answered(c, probe(c, 3, keys=c.old), CANDIDATE) == []
    assert gw.probes.counts["forged"] == 1
    assert len(answered(c, probe(c, 4), CANDIDATE)) == 1


def test_probes_never_refresh_the_heartbeat_timer(session):
    """A probe is not the session's traffic, even from the binding: the
    gateway's view of the heartbeat goes VOLATILE (heartbeat_timeout)."""
    gw, clock, c = session
    silence = gw.policy.heartbeat_volatile_ms
    for _ in range(4):
        clock.ms += silence // 4
        assert len(answered(c, probe(c), CLIENT)) == 1
    clock.ms += 1
    gw.tick()
    assert c.record().state is State.VOLATILE
    [change] = [e for e in events_of(gw.events, "SessionStateChange")
                if e["new_state"] == "VOLATILE"]
    assert change["detail"] == "heartbeat_timeout"


def test_a_keepalive_reply_echoes_the_answered_counter(session):
    gw, _clock, c = session
    ka = c.channel.seal(b"", abi.MSG_KEEPALIVE)
    counter = wire.parse_header(ka).counter
    [(reply, to)] = c.send(ka)
    assert to == CLIENT
    t, _flags, payload = c.channel.open(reply)
    incarnation = gw.table.get(c.sid).traffic.incarnation
    assert t == abi.MSG_KEEPALIVE and payload == wire.KEEPALIVE_ECHO.pack(counter, 1, incarnation)
    assert gw.probes.counts["answered"] == 0


def _echo(c: RekeyClient) -> tuple[int, int | None, int | None]:
    [(reply, _to)] = c.send(c.channel.seal(b"", abi.MSG_KEEPALIVE))
    return wire.parse_keepalive_echo(c.channel.open(reply)[2])


def test_the_echo_carries_the_data_messages_delivered_for_the_session(session):
    """The echo's second field: the session's DATA messages the gateway
    opened so far (the client's check that its path carries data, not
    just heartbeats: docs/protocol.md "Measuring the active path"). A copy
    delivered again, a forgery, a keepalive count nothing; a rekey keeps
    the count (it is the session's, not the key epoch's)."""
    _gw, _clock, c = session
    assert _echo(c)[1] == 1  # the handshake's confirming data message
    for _ in range(4):
        assert c.data()
    msg = c.channel.seal(b"\x45" + bytes(27))
    c.send(msg)
    c.send(msg)  # a copy: the replay window delivers one
    forged = bytearray(c.channel.seal(b"\x45" + bytes(27)))
    forged[-1] ^= 1
    c.send(bytes(forged))
    assert _echo(c)[1] == 6
    c.rekey()  # its last step: a data message under the new epoch
    assert _echo(c)[1] == 7


def test_probes_are_counted_in_metrics_and_health_with_five_labels(session):
    """One counter per result, whatever arrives (bounded cardinality); no
    event per probe (a flood must not flood the log)."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415
    from unit.test_inspect import _scrape  # noqa: PLC0415

    from jvpn.gateway import snapshot  # noqa: PLC0415
    from jvpn.gateway.metrics import GatewayCollector  # noqa: PLC0415
    from jvpn.gateway.tally import EventTally  # noqa: PLC0415

    gw, _clock, c = session
    seen = []
    gw.events.add_listener(seen.append)
    answered(c, probe(c), CANDIDATE)
    for i in range(30):
        m = probe(c, i)  # the MAC's last byte changed (a fixed byte would be right 1 in 256)
        answered(c, m[:-1] + bytes([m[-1] ^ 1]), (f"203.0.113.{i}", 1000 + i))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(EventTally(gw.timer_ms), gw, "jvpn-gw", max_age_s=0))
    m = _scrape(registry)
    rows = {k[1]: v for k, v in m.items() if k[0] == "jvpn_path_probes_total"}
    assert rows == {(("result", r),): v for r, v in
                    {"answered": 1, "forged": 30, "rate_limited": 0, "refused": 0,
                     "replayed": 0}.items()}
    assert snapshot.health(gw)["path_probes"]["forged"] == 30
    assert seen == []  # not one event for 31 probes


def test_probe_interval_ms_paces_the_bucket(tmp_path):
    """transport.probe_interval_ms (issue 14) is enforced on the gateway: the
    bucket refills 2 · max_candidate_count probes per interval, no faster."""
    gw, clock = gateway(tmp_path, probe_interval_ms=5_000, max_candidate_count=2)
    c = RekeyClient(gw)
    assert sum(len(answered(c, probe(c, i), CANDIDATE)) for i in range(10)) == 4  # burst
    clock.ms += 1_250  # a quarter interval: one probe's worth
    assert sum(len(answered(c, probe(c, i), CANDIDATE)) for i in range(10)) == 1
    clock.ms += 5_000
    assert sum(len(answered(c, probe(c, i), CANDIDATE)) for i in range(10)) == 4


def test_a_probe_reply_takes_its_counter_outside_the_control_lock(session):
    """The reply's send counter can write its block reservation to the
    store (set_floor); under handle_control's gateway-wide control lock a
    hung store would hold every session's reattach and rekey behind one
    probe. So the store call sees the lock free (review r14a F5)."""
    gw, _clock, c = session
    sc = c.live().channel.counter
    sc._durable = sc._next + 1  # at the block boundary: the next counter writes the floor
    seen, real = [], sc._reserve

    def reserve(floor):
        seen.append(gw.control._is_owned())  # an RLock: held by this thread
        return real(floor) if real else None
    sc._reserve = reserve
    assert len(answered(c, probe(c), CANDIDATE)) == 1
    assert seen == [False], "set_floor ran under the gateway-wide control lock"


def test_a_probe_without_a_send_counter_is_refused_and_spent(session):
    """No send counter (the store refused the reservation): no reply,
    counted refused; the probe's counter is still spent, so its copies get
    nothing either and the client's next probe asks again."""
    from jvpn.tunnel import CounterUnavailable  # noqa: PLC0415

    gw, _clock, c = session
    channel = c.live().channel

    def unavailable():
        raise CounterUnavailable("store down (test)")
    channel.next_counter, msg = unavailable, probe(c)
    assert answered(c, msg, CANDIDATE) == []
    assert gw.probes.counts["refused"] == 1 and gw.probes.counts["answered"] == 0
    del channel.next_counter  # the class's again
    assert answered(c, msg, ATTACKER) == [] and gw.probes.counts["replayed"] == 1
    assert len(answered(c, probe(c), CANDIDATE)) == 1


def test_the_echo_round_trips_and_an_older_gateways_still_parses():
    """wire.KEEPALIVE_ECHO: (counter, delivered, incarnation), 20 bytes; an
    older gateway's 16 bytes read as (counter, delivered, None): a count
    that falls is a new one; an oldest one's 8 as (counter, None, None): no
    delivery check; any other payload (a nudge's empty one, a path MTU
    announcement) is no echo."""
    top = 2**64 - 1
    assert wire.KEEPALIVE_ECHO.size == 20
    assert wire.parse_keepalive_echo(wire.KEEPALIVE_ECHO.pack(7, top, 2**32 - 1)) == (
        7, top, 2**32 - 1)
    assert wire.parse_keepalive_echo(wire.KEEPALIVE_ECHO_V2.pack(7, top)) == (7, top, None)
    assert wire.parse_keepalive_echo(wire.KEEPALIVE_ECHO_V1.pack(7)) == (7, None, None)
    assert wire.parse_keepalive_echo(b"") is None
    assert wire.parse_keepalive_echo(bytes(12)) is None


def test_junk_body_replays_of_one_paths_probe_leave_the_probes_of_another_answered(tmp_path):
    """Review E L1: the header tag does not cover the probe's body. An
    attacker on one candidate path drops a probe and replays its header
    with junk bodies: each passed the gate (its counter is not consumed
    there, so a copy cannot kill the genuine probe) and spent the session's
    one probe bucket, so the client's probes on its other paths died at the
    gate. Each probe counter now spends that bucket once; its copies spend
    a bucket of their own. The userspace gate is the model of the XDP one."""
    from jvpn.gate.config import GateConfig  # noqa: PLC0415
    from jvpn.gate.userspace import UserspaceGate  # noqa: PLC0415
    from kits.daemon_kit import Clock, make_gateway  # noqa: PLC0415

    clock = Clock()
    gate = UserspaceGate(GateConfig(session_probe_pps=1, session_probe_burst=3),
                         clock_ns=lambda: clock.ms * 1_000_000)
    gw = make_gateway(tmp_path, gate=gate, clock=clock, policy=policy())
    c = RekeyClient(gw)
    captured = probe(c, 1)  # sent on path A, dropped there by the attacker
    for i in range(50):
        junk = captured[:abi.HDR_LEN] + bytes([i]) * (len(captured) - abi.HDR_LEN)
        assert answered(c, junk, ATTACKER) == []
    assert 0 < gw.probes.counts["forged"] < 10  # the copies the gate let through: no HMAC held
    [(_reply, to)] = answered(c, probe(c, 2), CANDIDATE)  # the client's probe on path B
    assert to == CANDIDATE
    assert len(answered(c, captured, ATTACKER)) == 0  # the genuine one, late: its bucket is spent
