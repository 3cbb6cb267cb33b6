"""The XDP program itself, through BPF_PROG_TEST_RUN: a table of crafted frames
with the expected action, reason and map state (Katran style), the WireGuard
replay-window cases, rate limits and sampled events. The same tables run
against the Python model, so the two cannot drift apart."""

from __future__ import annotations

import ctypes
import struct

import pytest

from jvpn.gate import abi, testrun
from jvpn.gate.config import GateConfig
from jvpn.gate.model import Model
from jvpn.lab import frames
from kits.stacks import (
    DST,
    FIRST_FRAG,
    HOP,
    LATER_FRAG,
    NO_NEXT,
    RT,
    VLAN_AD,
    VLAN_Q,
    jvpn_frame,
    with_tags,
)
from kits.vectors import replay_cases
from kits.xdp_harness import CLIENT, CLIENT_PORT, GW, PORT, Gate, frame, session
from kits.xdp_lockstep import UNLIMITED

pytestmark = pytest.mark.kernel

PASS, DROP = testrun.XDP_PASS, testrun.XDP_DROP


@pytest.fixture
def fresh(gate):
    """The module's gate with a clean runtime and the default test sessions."""
    gate.set_config(GateConfig(ports=[PORT, 4500], **UNLIMITED))
    for k in list(gate.maps.sessions.keys()):
        gate.maps.sessions.delete(k)
    gate.reset_runtime()
    gate.put(7, session())
    gate.put(8, session(addr="2001:db8::10"))
    gate.put(9, session(state=abi.STATE_TERMINATED))
    gate.put(10, session(state=abi.STATE_BIRTH))
    gate.put(11, session(state=abi.STATE_DEGRADED))
    gate.put(12, session(bind_family=abi.AF_NONE))
    gate.put(13, session(state=abi.STATE_REMOTE))
    return gate


def _ipv4_options_frame():
    msg = frame(1)[42:]
    seg = frames.udp(CLIENT_PORT, PORT, msg)
    return frames.eth(frames.ETH_P_IP, frames.ipv4(CLIENT, GW, 17, seg, options=b"\x01" * 4))


def _ipv6_hopopt_frame():
    msg = frame(1, sid=8, src="2001:db8::10")[62:]
    seg = frames.udp(CLIENT_PORT, PORT, msg)
    hop = bytes([17, 0]) + b"\x01\x04\0\0\0\0"  # next=UDP, len 0 (8 bytes), PadN
    return frames.eth(frames.ETH_P_IPV6, frames.ipv6("2001:db8::10", "2001:db8::1", 0, hop + seg))


def _fragment(frag_off):
    seg = frames.udp(CLIENT_PORT, PORT, frame(1)[42:])
    return frames.eth(frames.ETH_P_IP, frames.ipv4(CLIENT, GW, 17, seg, frag_off=frag_off))


# (description, frame, expected action, expected reason)
SINGLE_PACKET_CASES = [
    ("TCP to the host (SSH) passes untouched", frames.tcp_frame(CLIENT, GW), PASS,
     abi.R_PASS_OTHER),
    ("UDP to another port passes", frame(1, dport=53), PASS, abi.R_PASS_OTHER),
    ("ARP passes", frames.eth(0x0806, b"\0" * 28), PASS, abi.R_PASS_OTHER),
    # (BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header)
    ("bare Ethernet header of IPv4: nothing proves it is not ours",
     frames.eth(frames.ETH_P_IP, b""), DROP, abi.R_DROP_UNPARSED),
    ("truncated IPv4: nothing proves it is not ours", frames.eth(frames.ETH_P_IP, b"\x45" * 10),
     DROP, abi.R_DROP_UNPARSED),
    ("later IPv4 fragment passes (no UDP header)", _fragment(10), PASS, abi.R_PASS_OTHER),
    ("first IPv4 fragment to our port: malformed", _fragment(0x2000), DROP,
     abi.R_DROP_MALFORMED),
    ("payload shorter than the header", frames.udp_frame(CLIENT, 1, GW, PORT, b"\x04" * 31),
     DROP, abi.R_DROP_MALFORMED),
    ("UDP length beyond the frame",
     frames.udp_frame(CLIENT, 1, GW, PORT, frame(1)[42:], udp_length=400), DROP,
     abi.R_DROP_MALFORMED),
    ("unknown wire version", frame(1, version=2), DROP, abi.R_DROP_MALFORMED),
    ("reserved bits set", frame(1, reserved=1), DROP, abi.R_DROP_MALFORMED),
    ("handshake init with a session id", frame(0, sid=5, t=abi.MSG_HANDSHAKE_INIT), DROP,
     abi.R_DROP_MALFORMED),
    ("handshake init", frame(0, sid=0, t=abi.MSG_HANDSHAKE_INIT), PASS,
     abi.R_PASS_HANDSHAKE),
    ("gateway-to-client type", frame(1, t=abi.MSG_HANDSHAKE_RESP), DROP, abi.R_DROP_BAD_TYPE),
    ("type 0", frame(1, t=0), DROP, abi.R_DROP_BAD_TYPE),
    ("type 200", frame(1, t=200), DROP, abi.R_DROP_BAD_TYPE),
    ("unknown session", frame(1, sid=0xDEAD), DROP, abi.R_DROP_UNKNOWN_SESSION),
    ("data for a TERMINATED session", frame(1, sid=9), DROP, abi.R_DROP_STATE),
    ("data for a BIRTH session", frame(1, sid=10), DROP, abi.R_DROP_STATE),
    ("data for a DEGRADED session", frame(1, sid=11), DROP, abi.R_DROP_STATE),
    ("reattach for a DEGRADED session", frame(1, sid=11, t=abi.MSG_REATTACH_REQ), PASS,
     abi.R_PASS_CONTROL),
    ("reattach for a TERMINATED session", frame(1, sid=9, t=abi.MSG_REATTACH_REQ), DROP,
     abi.R_DROP_STATE),
    ("data from the bound transport, session owned by another gateway", frame(1, sid=13),
     DROP, abi.R_DROP_STATE),
    ("reattach for a session owned by another gateway (handoff)",
     frame(1, sid=13, src="198.51.100.7", t=abi.MSG_REATTACH_REQ), PASS, abi.R_PASS_CONTROL),
    ("forged reattach for a session owned by another gateway",
     frame(1, sid=13, t=abi.MSG_REATTACH_REQ, key=bytes(16)), DROP, abi.R_DROP_BAD_TAG),
    ("forged tag", frame(1, key=bytes(16)), DROP, abi.R_DROP_BAD_TAG),
    ("wrong source port", frame(1, sport=CLIENT_PORT + 1), DROP, abi.R_DROP_WRONG_BINDING),
    ("wrong source address", frame(1, src="192.0.2.99"), DROP, abi.R_DROP_WRONG_BINDING),
    ("IPv6 source for an IPv4 binding", frame(1, src="2001:db8::10"), DROP,
     abi.R_DROP_WRONG_BINDING),
    ("session without a binding", frame(1, sid=12), DROP, abi.R_DROP_WRONG_BINDING),
    ("valid data over IPv4", frame(1), PASS, abi.R_PASS_DATA),
    ("valid keepalive", frame(1, t=abi.MSG_KEEPALIVE, payload=b""), PASS,
     abi.R_PASS_KEEPALIVE),
    ("valid data to the second configured port", frame(1, dport=4500), PASS, abi.R_PASS_DATA),
    ("valid data over IPv6", frame(1, sid=8, src="2001:db8::10"), PASS, abi.R_PASS_DATA),
    ("valid data behind a VLAN tag",
     frames.udp_frame(CLIENT, CLIENT_PORT, GW, PORT, frame(1)[42:], vlan=100), PASS,
     abi.R_PASS_DATA),
    ("valid data with IPv4 options", _ipv4_options_frame(), PASS, abi.R_PASS_DATA),
    ("valid data after an IPv6 hop-by-hop header", _ipv6_hopopt_frame(), PASS,
     abi.R_PASS_DATA),
    ("reattach from a new transport is not binding-checked",
     frame(1, src="198.51.100.7", sport=999, t=abi.MSG_REATTACH_REQ), PASS, abi.R_PASS_CONTROL),
    ("path response from a new transport", frame(1, src="198.51.100.7", t=abi.MSG_PATH_RESPONSE),
     PASS, abi.R_PASS_CONTROL),
    ("terminate", frame(1, t=abi.MSG_TERMINATE), PASS, abi.R_PASS_CONTROL),
    ("counter at the reject limit", frame(abi.reject_after()), DROP, abi.R_DROP_REPLAY),
]


V6 = "2001:db8::10"


def _v4(counter=1, **kw):
    return jvpn_frame(frame(counter)[42:], src=CLIENT, sport=CLIENT_PORT, **kw)


def _v6(counter=1, **kw):
    return jvpn_frame(frame(counter, sid=8, src=V6)[62:], src=V6, sport=CLIENT_PORT, **kw)


ARP = b"\0" * 28
# Issue 10 item 12 (every way in): a frame the parser cannot finish, that may
# be UDP to our port, is dropped; only frames proven not to be jvpn traffic pass.
# Item 1 (XDP side): UDP source port 0 is malformed.
GATE_COVERAGE_CASES = [
    ("valid data behind QinQ (802.1AD outer, VID-0 802.1Q inner)",
     _v4(tags=[(VLAN_AD, 100), (VLAN_Q, 0)]), PASS, abi.R_PASS_DATA),
    ("three VID-0 VLAN tags: the parser gives up, dropped", _v4(tags=[(VLAN_Q, 0)] * 3), DROP,
     abi.R_DROP_UNPARSED),
    ("three VLAN tags around ARP: dropped too (cannot be told apart)",
     with_tags(0x0806, ARP, [(VLAN_Q, 0)] * 3), DROP, abi.R_DROP_UNPARSED),
    ("two VLAN tags around ARP pass", with_tags(0x0806, ARP, [(VLAN_AD, 5), (VLAN_Q, 6)]),
     PASS, abi.R_PASS_OTHER),
    ("frame ends inside a VLAN tag", with_tags(frames.ETH_P_IP, b"", [(VLAN_Q, 0)])[:16],
     DROP, abi.R_DROP_UNPARSED),
    ("valid data after three IPv6 extension headers", _v6(chain=[HOP, RT, DST]), PASS,
     abi.R_PASS_DATA),
    ("four IPv6 extension headers: the parser gives up, dropped", _v6(chain=[DST] * 4), DROP,
     abi.R_DROP_UNPARSED),
    ("four IPv6 extension headers before TCP: dropped too",
     _v6(chain=[DST] * 4, l4_proto=abi.IPPROTO_TCP), DROP, abi.R_DROP_UNPARSED),
    ("IPv6 first fragment to our port: malformed", _v6(chain=[FIRST_FRAG]), DROP,
     abi.R_DROP_MALFORMED),
    ("IPv6 first fragment behind two options headers: malformed",
     _v6(chain=[HOP, DST, FIRST_FRAG]), DROP, abi.R_DROP_MALFORMED),
    ("IPv6 later fragment passes (checked through its first fragment)",
     _v6(chain=[LATER_FRAG]), PASS, abi.R_PASS_OTHER),
    ("IPv6 first fragment whose UDP header is in the next fragment",
     _v6(chain=[FIRST_FRAG, DST], cut=40 + 16), DROP, abi.R_DROP_UNPARSED),
    ("frame ends inside an IPv6 extension header", _v6(chain=[HOP], cut=40 + 1), DROP,
     abi.R_DROP_UNPARSED),
    ("frame ends inside the UDP header", _v6(cut=40 + 4), DROP, abi.R_DROP_UNPARSED),
    ("IPv6 with no next header passes", _v6(l4_proto=NO_NEXT, cut=40), PASS,
     abi.R_PASS_OTHER),
    ("IPv4 first fragment with a cut UDP header", _v4(frag_off=0x2000, cut=20 + 4), DROP,
     abi.R_DROP_UNPARSED),
    ("IPv4 with options, later fragment passes", _v4(frag_off=3, options=b"\x01" * 4), PASS,
     abi.R_PASS_OTHER),
    ("IPv4 header length past the frame", _v4(options=b"\x01" * 8, cut=24), DROP,
     abi.R_DROP_UNPARSED),
    ("handshake init from UDP source port 0: malformed",
     frame(0, sid=0, t=abi.MSG_HANDSHAKE_INIT, sport=0), DROP, abi.R_DROP_MALFORMED),
    ("reattach from UDP source port 0: malformed",
     frame(1, src="198.51.100.7", sport=0, t=abi.MSG_REATTACH_REQ), DROP, abi.R_DROP_MALFORMED),
    ("IPv6 data from UDP source port 0: malformed",
     jvpn_frame(frame(1, sid=8, src=V6)[62:], src=V6, sport=0), DROP, abi.R_DROP_MALFORMED),
]
SINGLE_PACKET_CASES += GATE_COVERAGE_CASES


def _model_for(gate: Gate) -> Model:
    m = Model(config=abi.Config.from_buffer_copy(bytes(gate.config)),
              max_sessions=gate.max_sessions, fence=gate.maps.read_fence())
    for sid, s in gate.maps.list_sessions():
        m.sessions[sid] = s
    return m


@pytest.mark.parametrize("desc,pkt,action,reason", SINGLE_PACKET_CASES,
                         ids=[c[0] for c in SINGLE_PACKET_CASES])
def test_single_packet_verdicts(fresh, desc, pkt, action, reason):
    model = _model_for(fresh)
    assert model.run(pkt, fresh.now) == reason, f"model: {desc}"
    assert fresh.run(pkt) == (action, reason), desc


def _rt_state(rt) -> bytes:
    return bytes(rt)[8:]  # everything but the lock word


def test_accepted_data_updates_runtime_state(fresh):
    pkt = frame(41)
    assert fresh.run(pkt) == (PASS, abi.R_PASS_DATA)
    rt = fresh.maps.get_runtime(7)
    assert rt.replay_top == 42 and rt.rx_packets == 1 and rt.rx_bytes == len(pkt) - 42
    assert rt.last_rx_ns == fresh.now
    assert fresh.maps.get_runtime(0xDEAD) is None


def test_counters_count_bytes(fresh):
    before = fresh.counters()[abi.R_PASS_DATA]
    fresh.run(frame(1))
    after = fresh.counters()[abi.R_PASS_DATA]
    assert after == (before[0] + 1, before[1] + len(frame(1)))


@pytest.mark.parametrize("attack", [
    dict(key=bytes(16)),                      # forged tag from the bound address
    dict(key=bytes(16), src="203.0.113.5"),   # forged tag from elsewhere
    dict(src="203.0.113.5"),                   # authentic, but wrong binding
], ids=["forged-from-bound", "forged-from-elsewhere", "wrong-binding"])
def test_rejected_packets_do_not_move_the_window(fresh, attack):
    fresh.run(frame(100))
    before = _rt_state(fresh.maps.get_runtime(7))
    action, _ = fresh.run(frame(1 << 40, **attack))
    assert action == DROP
    assert _rt_state(fresh.maps.get_runtime(7)) == before
    assert fresh.run(frame(101)) == (PASS, abi.R_PASS_DATA)  # the window did not jump


@pytest.mark.parametrize("name,steps", replay_cases(), ids=[c[0] for c in replay_cases()])
def test_replay_window_wireguard_cases_in_kernel(fresh, name, steps):
    for i, (counter, ok) in enumerate(steps):
        want = (PASS, abi.R_PASS_DATA) if ok else (DROP, abi.R_DROP_REPLAY)
        res = testrun.run(fresh.prog.prog_fd, frame(counter))
        assert res.action == want[0], f"{name}: step {i}, counter {counter}"


def test_replay_window_small_build():
    g = Gate(GateConfig(**UNLIMITED), replay_bits=128)
    try:
        g.put(7, session())
        for name, steps in replay_cases(128):
            g.reset_runtime()
            got = [testrun.run(g.prog.prog_fd, frame(c)).action == PASS for c, _ in steps]
            assert got == [ok for _, ok in steps], name
    finally:
        g.close()


def test_session_packet_rate_limit(fresh):
    fresh.set_config(GateConfig(session_pps=1000, session_burst_packets=1,
                                session_bytes_per_sec=0))
    # burst tolerance is at least 10 ms: 1 + 10 packets at one instant
    verdicts = [fresh.run(frame(c))[1] for c in range(1, 16)]
    assert verdicts.count(abi.R_PASS_DATA) == 11
    assert verdicts[11:] == [abi.R_DROP_RATE_SESSION] * 4
    fresh.tick(1_000_000)
    assert fresh.run(frame(100))[1] == abi.R_PASS_DATA
    assert fresh.run(frame(101))[1] == abi.R_DROP_RATE_SESSION
    # a refused packet still consumed its counter: replaying it later fails
    fresh.tick(1_000_000_000)
    assert fresh.run(frame(101))[1] == abi.R_DROP_REPLAY


def test_session_byte_rate_limit(fresh):
    # 1000 bytes/s, minimum tolerance 10 ms: the second 80-byte message waits
    fresh.set_config(GateConfig(session_pps=0, session_bytes_per_sec=1000,
                                session_burst_bytes=1))
    assert fresh.run(frame(1))[1] == abi.R_PASS_DATA
    assert fresh.run(frame(2))[1] == abi.R_DROP_RATE_SESSION
    fresh.tick(80_000_000)
    assert fresh.run(frame(3))[1] == abi.R_PASS_DATA


def test_source_prefix_rate_limit(fresh):
    fresh.set_config(GateConfig(source_control_pps=1, source_control_burst=1,
                                global_control_pps=0))
    hs = dict(sid=0, t=abi.MSG_HANDSHAKE_INIT)
    assert fresh.run(frame(0, src="198.51.100.1", **hs))[1] == abi.R_PASS_HANDSHAKE
    assert fresh.run(frame(0, src="198.51.100.1", **hs))[1] == abi.R_DROP_RATE_SOURCE
    assert fresh.run(frame(0, src="198.51.100.2", **hs))[1] == abi.R_PASS_HANDSHAKE
    # IPv6: one bucket per /64
    assert fresh.run(frame(0, src="2001:db8:1:1::1", **hs))[1] == abi.R_PASS_HANDSHAKE
    assert fresh.run(frame(0, src="2001:db8:1:1::2", **hs))[1] == abi.R_DROP_RATE_SOURCE
    assert fresh.run(frame(0, src="2001:db8:1:2::1", **hs))[1] == abi.R_PASS_HANDSHAKE
    fresh.tick(1_000_000_000)
    assert fresh.run(frame(0, src="198.51.100.1", **hs))[1] == abi.R_PASS_HANDSHAKE
    key = abi.SrcKey(family=abi.AF_INET, addr=abi.addr_words("198.51.100.1"))
    assert fresh.maps.sources.lookup(key).tat == fresh.now + 1_000_000_000


def test_global_control_budget(fresh):
    fresh.set_config(GateConfig(source_control_pps=0, global_control_pps=100,
                                global_control_burst=2))
    hs = dict(sid=0, t=abi.MSG_HANDSHAKE_INIT)
    got = [fresh.run(frame(0, src=f"198.51.100.{i}", **hs))[1] for i in range(1, 6)]
    assert got == [abi.R_PASS_HANDSHAKE] * 2 + [abi.R_DROP_RATE_GLOBAL] * 3
    # authenticated control messages have their own budget (issue 10 item 3)
    assert fresh.run(frame(5, t=abi.MSG_REATTACH_REQ))[1] == abi.R_PASS_CONTROL


def _both(gate: Gate, model: Model, pkt: bytes) -> int:
    """One frame through the kernel and the model: the same reason, returned."""
    want = model.run(pkt, gate.now)
    got = gate.run(pkt)[1]
    assert got == want, f"kernel {got}, model {want}"
    return got


def test_handshake_flood_does_not_starve_authenticated_control(fresh):
    """Issue 10 item 3 (seed 4.3, S7): spoofed initiations, one per source, at
    a little over the global handshake rate for two seconds. Every proven
    reattach request and path response of a moving client passes meanwhile,
    in the kernel and in the model alike."""
    fresh.set_config(GateConfig(ports=[PORT], global_control_pps=200, global_control_burst=20))
    model = _model_for(fresh)
    hs = dict(sid=0, t=abi.MSG_HANDSHAKE_INIT)
    seen = {}
    counter = 1
    for i in range(500):  # 250 initiations/s against a budget of 200/s
        fresh.tick(4_000_000)
        src = f"198.51.{100 + i // 200}.{i % 200 + 1}"
        r = _both(fresh, model, frame(0, src=src, **hs))
        seen[r] = seen.get(r, 0) + 1
        if i % 50 == 49:  # every 200 ms: a reattach and its path response
            for t in (abi.MSG_REATTACH_REQ, abi.MSG_PATH_RESPONSE):
                pkt = frame(counter, src="203.0.113.77", sport=4242, t=t)
                assert _both(fresh, model, pkt) == abi.R_PASS_CONTROL, f"packet {i}"
                counter += 1
    assert seen[abi.R_DROP_RATE_GLOBAL] > 50  # the flood did exhaust the handshake budget
    assert seen[abi.R_PASS_HANDSHAKE] > 350


def test_authenticated_control_budgets(fresh):
    """Authenticated control is limited per session (no other session and no
    unauthenticated source can spend that bucket), then by its own
    gateway-wide budget. Kernel and model agree."""
    fresh.set_config(GateConfig(session_control_pps=1, session_control_burst=1,
                                authed_control_pps=0, global_control_pps=0))
    model = _model_for(fresh)
    ra = dict(t=abi.MSG_REATTACH_REQ, src="198.51.100.7")
    assert _both(fresh, model, frame(1, **ra)) == abi.R_PASS_CONTROL
    assert _both(fresh, model, frame(2, **ra)) == abi.R_DROP_RATE_SESSION
    assert _both(fresh, model, frame(1, sid=8, **ra)) == abi.R_PASS_CONTROL  # another session
    fresh.tick(1_000_000_000)
    assert _both(fresh, model, frame(3, **ra)) == abi.R_PASS_CONTROL
    # control counters are not consumed in the gate (issue 10 item 5): the
    # refused one may pass later; the daemon's window records it once verified
    assert _both(fresh, model, frame(2, **ra)) == abi.R_DROP_RATE_SESSION

    fresh.set_config(GateConfig(session_control_pps=0, authed_control_pps=100,
                                authed_control_burst=2, global_control_pps=100,
                                global_control_burst=2))
    model = _model_for(fresh)
    fresh.tick(1_000_000_000)
    got = [_both(fresh, model, frame(10, sid=sid, **ra)) for sid in (7, 8, 11)]
    assert got == [abi.R_PASS_CONTROL] * 2 + [abi.R_DROP_RATE_AUTHED]
    # the handshake budget is a different bucket: still full
    hs = dict(sid=0, t=abi.MSG_HANDSHAKE_INIT, src="198.51.100.9")
    assert _both(fresh, model, frame(0, **hs)) == abi.R_PASS_HANDSHAKE


def test_security_drops_are_sampled_into_events(fresh):
    fresh.set_config(GateConfig(events_per_sec=1, events_burst=1, **UNLIMITED))
    c0 = fresh.counters()
    fresh.run(frame(1, src="203.0.113.9", sport=4444))  # wrong binding
    fresh.run(frame(2, key=bytes(16)))                  # bad tag: over the event budget
    fresh.run(frame(3, sid=0xDEAD))                     # unknown session: no event
    events = fresh.prog.drain_events()
    assert len(events) == 1
    ev = events[0]
    assert (ev.session_id, ev.counter, ev.reason, ev.msg_type) == (
        7, 1, abi.R_DROP_WRONG_BINDING, abi.MSG_DATA)
    assert abi.words_addr(ev.saddr, ev.family) == "203.0.113.9"
    assert abi.word_port(ev.sport) == 4444 and ev.ts_ns == fresh.now
    c1 = fresh.counters()
    assert c1[abi.C_EVENT_SENT][0] - c0[abi.C_EVENT_SENT][0] == 1
    assert c1[abi.C_EVENT_SUPPRESSED][0] - c0[abi.C_EVENT_SUPPRESSED][0] == 1


def test_binding_switch_is_one_element_replacement(fresh):
    assert fresh.run(frame(1))[1] == abi.R_PASS_DATA
    fresh.put(7, session(addr="198.51.100.50", port=7777, version=2))
    assert fresh.run(frame(2))[1] == abi.R_DROP_WRONG_BINDING  # old binding retired
    assert fresh.run(frame(3, src="198.51.100.50", sport=7777))[1] == abi.R_PASS_DATA
    assert fresh.maps.get_runtime(7).replay_top == 4  # the window survived the switch


def test_config_ports_are_runtime_settings(fresh):
    fresh.set_config(GateConfig(ports=[4500], **UNLIMITED))
    assert fresh.run(frame(1))[1] == abi.R_PASS_OTHER  # 51900 no longer ours
    assert fresh.run(frame(1, dport=4500))[1] == abi.R_PASS_DATA
    raw = fresh.maps.read_config()
    assert [p for p in raw.ports if p] == [abi.port_word(4500)]
    assert struct.unpack("<H", bytes(raw)[:2])[0] == abi.port_word(4500)
    assert ctypes.sizeof(raw) == 160


def test_cluster_fence_in_the_kernel(fresh):
    """With a fence configured, data passes only for elements under the
    gateway's current lease and only before the lease's deadline; control
    messages (a handoff's reattach) are not fenced. Kernel and model agree."""
    fresh.put(21, session(fence=5))
    fresh.put(22, session(fence=4))  # installed under an older lease
    fresh.maps.write_fence(abi.Fence(token=5, deadline_ns=fresh.now + 1_000_000))
    cases = [(frame(1, sid=21), abi.R_PASS_DATA),
             (frame(1, sid=22), abi.R_DROP_STATE),
             (frame(2, sid=22, t=abi.MSG_REATTACH_REQ, src="198.51.100.7"), abi.R_PASS_CONTROL)]
    for pkt, reason in cases:
        model = _model_for(fresh)
        assert model.run(pkt, fresh.now) == reason
        assert fresh.run(pkt)[1] == reason
    fresh.tick(1_000_000)  # the lease deadline: nothing passes any more
    pkt = frame(3, sid=21)
    assert _model_for(fresh).run(pkt, fresh.now) == abi.R_DROP_STATE
    assert fresh.run(pkt) == (DROP, abi.R_DROP_STATE)
    # fencing off (a single gateway): the token is not looked at
    fresh.maps.write_fence(abi.Fence(token=5, deadline_ns=0))
    assert fresh.run(frame(4, sid=22)) == (PASS, abi.R_PASS_DATA)


# ---- the runtime slot protocol: the daemon names (slot, generation, floor) in
# its element; XDP alone initializes the slot (jvpn_abi.h, jvpn_sessions).
# Steps: ("put", sid, element fields) | ("del", sid) | (counter, sid, reason).
SLOT_CASES = [
    ("a new window starts above the element's floor",
     [("put", 30, dict(rt_slot=40, rt_gen=5, replay_floor=100)),
      (99, 30, abi.R_DROP_REPLAY), (50, 30, abi.R_DROP_REPLAY), (100, 30, abi.R_PASS_DATA)]),
    ("the same generation rewritten keeps the window (a binding or state change)",
     [("put", 30, dict(rt_slot=40, rt_gen=5)), (10, 30, abi.R_PASS_DATA),
      ("put", 30, dict(rt_slot=40, rt_gen=5, replay_floor=3)), (9, 30, abi.R_PASS_DATA),
      (10, 30, abi.R_DROP_REPLAY)]),
    ("a new generation of the same session starts above its own top and the floor",
     [("put", 30, dict(rt_slot=40, rt_gen=5)), (10, 30, abi.R_PASS_DATA),
      (20, 30, abi.R_PASS_DATA),
      ("put", 30, dict(rt_slot=40, rt_gen=6, replay_floor=5)),
      (15, 30, abi.R_DROP_REPLAY), (20, 30, abi.R_DROP_REPLAY), (21, 30, abi.R_PASS_DATA)]),
    ("a new generation above a higher floor (a handoff back)",
     [("put", 30, dict(rt_slot=40, rt_gen=5)), (10, 30, abi.R_PASS_DATA),
      ("put", 30, dict(rt_slot=40, rt_gen=6, replay_floor=500)),
      (499, 30, abi.R_DROP_REPLAY), (500, 30, abi.R_PASS_DATA)]),
    ("a reused slot starts at the new session's floor, not the old window",
     [("put", 30, dict(rt_slot=40, rt_gen=5)), (1000, 30, abi.R_PASS_DATA), ("del", 30),
      ("put", 31, dict(rt_slot=40, rt_gen=7)), (1, 31, abi.R_PASS_DATA),
      (1, 31, abi.R_DROP_REPLAY)]),
    ("a slot beyond the runtime array fails closed",
     [("put", 30, dict(rt_slot=Gate.max_sessions, rt_gen=5)), (1, 30, abi.R_DROP_REPLAY)]),
]


def _slot_step(gate: Gate, model: Model, step) -> None:
    if step[0] == "put":
        _, sid, fields = step
        gate.put(sid, session(**fields))
        model.sessions[sid] = gate.maps.get_session(sid)
    elif step[0] == "del":
        gate.maps.remove_session(step[1])
        model.sessions.pop(step[1])
    else:
        counter, sid, reason = step
        pkt = frame(counter, sid=sid)
        assert model.run(pkt, gate.now) == reason, f"model: {sid} counter {counter}"
        assert gate.run(pkt)[1] == reason, f"kernel: {sid} counter {counter}"


@pytest.mark.parametrize("name,steps", SLOT_CASES, ids=[c[0] for c in SLOT_CASES])
def test_runtime_slot_protocol(fresh, name, steps):
    model = _model_for(fresh)
    for step in steps:
        _slot_step(fresh, model, step)
    for sid in (30, 31):
        got, want = fresh.maps.get_runtime(sid), model.runtime_of(sid)
        assert (got and bytes(got)[8:]) == (want and bytes(want)[8:]), name


def test_a_reused_slot_starts_with_a_full_control_bucket(fresh):
    """The per-session authenticated-control bucket lives in the runtime slot:
    a session that takes over a slot must not inherit the previous owner's
    empty bucket (nor a new generation its own). Kernel and model agree."""
    fresh.set_config(GateConfig(session_control_pps=1, session_control_burst=1,
                                authed_control_pps=0, global_control_pps=0))
    model = _model_for(fresh)
    ra = dict(t=abi.MSG_REATTACH_REQ, src="198.51.100.7")
    _slot_step(fresh, model, ("put", 30, dict(rt_slot=40, rt_gen=5)))
    assert _both(fresh, model, frame(1, sid=30, **ra)) == abi.R_PASS_CONTROL
    assert _both(fresh, model, frame(2, sid=30, **ra)) == abi.R_DROP_RATE_SESSION
    _slot_step(fresh, model, ("del", 30))
    _slot_step(fresh, model, ("put", 31, dict(rt_slot=40, rt_gen=7)))  # no clock tick
    assert _both(fresh, model, frame(1, sid=31, **ra)) == abi.R_PASS_CONTROL
    assert _both(fresh, model, frame(2, sid=31, **ra)) == abi.R_DROP_RATE_SESSION
    _slot_step(fresh, model, ("put", 31, dict(rt_slot=40, rt_gen=8)))  # handed back
    assert _both(fresh, model, frame(3, sid=31, **ra)) == abi.R_PASS_CONTROL
    assert bytes(fresh.maps.get_runtime(31))[8:] == bytes(model.runtime_of(31))[8:]


def test_writing_an_element_never_touches_its_runtime(fresh):
    assert fresh.run(frame(10)) == (PASS, abi.R_PASS_DATA)
    before = bytes(fresh.maps.runtime_slot(7))
    fresh.put(7, session(rt_slot=7, rt_gen=9, replay_floor=300))
    assert bytes(fresh.maps.runtime_slot(7)) == before  # XDP re-initializes it, later
    assert fresh.maps.counter_top(7) == 300  # what the next packet will meet
    assert fresh.run(frame(299)) == (DROP, abi.R_DROP_REPLAY)
    assert fresh.maps.get_runtime(7).replay_top == 300


# ---- issue 10 item 5: a header-only copy must not delete the genuine message.
# The 24 tagged header bytes do not cover the body: anyone who saw a message
# can send its header with another body. The gate cannot tell the two apart,
# so for keepalives and control messages it only checks freshness (a counter
# data already consumed, or below the window, is dropped) and marks nothing;
# the daemon marks the counter after the AEAD / HMAC verified (docs/xdp.md).
NEW_PATH = dict(src="198.51.100.7", sport=6000)
HEADER_COPY_CASES = [
    ("reattach request", dict(t=abi.MSG_REATTACH_REQ, **NEW_PATH), b"r" * 72,
     abi.R_PASS_CONTROL),
    ("path response", dict(t=abi.MSG_PATH_RESPONSE, **NEW_PATH), b"p" * 64, abi.R_PASS_CONTROL),
    ("keepalive", dict(t=abi.MSG_KEEPALIVE), b"k" * 16, abi.R_PASS_KEEPALIVE),
    ("terminate", dict(t=abi.MSG_TERMINATE), b"t" * 40, abi.R_PASS_CONTROL),
]


@pytest.mark.parametrize("name,kw,body,passed", HEADER_COPY_CASES,
                         ids=[c[0] for c in HEADER_COPY_CASES])
def test_a_header_only_copy_does_not_consume_the_counter(fresh, name, kw, body, passed):
    """The copy (the genuine header, a garbage body) arrives first, then the
    genuine message: both pass the gate, in the kernel and in the model, and
    the copy changed no replay state."""
    model = _model_for(fresh)
    assert _both(fresh, model, frame(50, t=abi.MSG_DATA)) == abi.R_PASS_DATA
    before = fresh.maps.get_runtime(7)
    copy, genuine = frame(60, payload=b"\xee" * len(body), **kw), frame(60, payload=body, **kw)
    assert _both(fresh, model, copy) == passed, f"{name}: the copy"
    assert _both(fresh, model, genuine) == passed, f"{name}: the genuine message after a copy"
    after = fresh.maps.get_runtime(7)
    assert (after.replay_top, list(after.replay_bitmap)) == (
        before.replay_top, list(before.replay_bitmap))
    assert bytes(after)[8:] == bytes(model.runtime_of(7))[8:]


@pytest.mark.parametrize("name,kw,body,passed", HEADER_COPY_CASES,
                         ids=[c[0] for c in HEADER_COPY_CASES])
def test_keepalives_and_control_still_drop_stale_counters_cheaply(fresh, name, kw, body, passed):
    """What the gate can still refuse without the body: a counter a data
    packet consumed, and a counter below the window."""
    model = _model_for(fresh)
    far = abi.replay_window() + 100
    for c in (5, far):
        assert _both(fresh, model, frame(c)) == abi.R_PASS_DATA
    assert _both(fresh, model, frame(5, payload=body, **kw)) == abi.R_DROP_REPLAY, name
    assert _both(fresh, model, frame(far, payload=body, **kw)) == abi.R_DROP_REPLAY, name
    assert _both(fresh, model, frame(50, payload=body, **kw)) == abi.R_DROP_REPLAY, name
    assert _both(fresh, model, frame(far - 5, payload=body, **kw)) == passed, name


# ---- issue 12: the client's own TERMINATE (client -> gateway, CLIENT_STOPPED)
# is control as any other: it passes for a session in a state that takes
# control, from any transport (the client may have moved before it stopped:
# the daemon's MAC says who sent it), within the session's control bucket;
# nothing for a TERMINATED or BIRTH session, nothing without the tag.
TERMINATE_CASES = [
    ("from the bound transport", dict(), abi.R_PASS_CONTROL),
    ("from another transport", dict(NEW_PATH), abi.R_PASS_CONTROL),
    ("for a DEGRADED session", dict(sid=11), abi.R_PASS_CONTROL),
    ("for a TERMINATED session", dict(sid=9), abi.R_DROP_STATE),
    ("for a BIRTH (unconfirmed) session", dict(sid=10), abi.R_DROP_STATE),
    ("for an unknown session", dict(sid=0xDEAD), abi.R_DROP_UNKNOWN_SESSION),
    ("under a forged tag", dict(key=bytes(16)), abi.R_DROP_BAD_TAG),
]


@pytest.mark.parametrize("name,kw,reason", TERMINATE_CASES, ids=[c[0] for c in TERMINATE_CASES])
def test_a_clients_terminate(fresh, name, kw, reason):
    model = _model_for(fresh)
    assert _both(fresh, model, frame(1, t=abi.MSG_TERMINATE, payload=b"t" * 40, **kw)) == reason


def test_a_clients_terminate_spends_the_sessions_control_bucket(fresh):
    fresh.set_config(GateConfig(session_control_pps=1, session_control_burst=1,
                                authed_control_pps=0, global_control_pps=0))
    model = _model_for(fresh)
    t = dict(t=abi.MSG_TERMINATE, payload=b"t" * 40)
    assert _both(fresh, model, frame(1, **t)) == abi.R_PASS_CONTROL
    assert _both(fresh, model, frame(2, **t)) == abi.R_DROP_RATE_SESSION


def test_data_still_consumes_its_counter_in_the_gate(fresh):
    """The residual risk docs/xdp.md states: a header-only copy of a DATA
    message that wins the race deletes that one packet (TCP retransmits it);
    replays of data stay dropped in XDP, before the daemon's AEAD."""
    model = _model_for(fresh)
    assert _both(fresh, model, frame(70, payload=b"\xee" * 48)) == abi.R_PASS_DATA
    assert _both(fresh, model, frame(70)) == abi.R_DROP_REPLAY


# ---- the review of the first item-5 fix: the gate recorded no keepalive or
# control counter, so one captured message, replayed, passed every time and
# spent the session's buckets. The daemon raises the element's ctl_floor once
# it verified one (jvpn/gate/element.py:raised_ctl_floor, the table's only
# hook); at or below it the gate drops keepalives and control as replays,
# before any bucket. Default buckets here: what an attacker meets.
def _daemon_verified(gate: Gate, model: Model, sid: int, counter: int) -> None:
    from jvpn.gate.element import raised_ctl_floor  # noqa: PLC0415

    new = raised_ctl_floor(gate.maps.get_session(sid), counter)
    assert new is not None
    gate.maps.put_session(sid, new)
    model.sessions[sid] = abi.Session.from_buffer_copy(new)


def test_a_replayed_keepalive_dies_in_the_gate_and_spends_no_bucket(fresh):
    fresh.set_config(GateConfig(ports=[PORT, 4500]))
    model = _model_for(fresh)
    assert _both(fresh, model, frame(1)) == abi.R_PASS_DATA
    ka = frame(2, t=abi.MSG_KEEPALIVE, payload=b"k" * 16)
    assert _both(fresh, model, ka) == abi.R_PASS_KEEPALIVE
    _daemon_verified(fresh, model, 7, 2)
    before = bytes(fresh.maps.get_runtime(7))
    for _ in range(4000):
        assert _both(fresh, model, ka) == abi.R_DROP_REPLAY
    assert bytes(fresh.maps.get_runtime(7)) == before  # no bucket, no window moved
    assert bytes(model.runtime_of(7))[8:] == before[8:]
    assert _both(fresh, model, frame(3)) == abi.R_PASS_DATA


def test_a_replayed_reattach_request_does_not_starve_genuine_retries(fresh):
    """1000 replays/s of one captured request from ever new sources while the
    client retries every 400 ms: every retry passes, every replay dies as a
    replay (kernel = model)."""
    fresh.set_config(GateConfig(ports=[PORT, 4500]))
    fresh.put(7, session(state=abi.STATE_VOLATILE))
    model = _model_for(fresh)
    captured = frame(10, t=abi.MSG_REATTACH_REQ, payload=b"r" * 72, **NEW_PATH)
    assert _both(fresh, model, captured) == abi.R_PASS_CONTROL
    _daemon_verified(fresh, model, 7, 10)
    counter, verdicts = 10, {}
    for ms in range(3000):
        fresh.tick(1_000_000)
        replay = frame(10, t=abi.MSG_REATTACH_REQ, payload=b"r" * 72,
                       src=f"203.0.{(ms >> 8) & 255}.{ms & 255}", sport=1000 + ms)
        r = _both(fresh, model, replay)
        verdicts[r] = verdicts.get(r, 0) + 1
        if ms % 400 == 7:
            counter += 1
            retry = frame(counter, t=abi.MSG_REATTACH_REQ, payload=b"r" * 72, **NEW_PATH)
            assert _both(fresh, model, retry) == abi.R_PASS_CONTROL, f"retry {counter}"
            _daemon_verified(fresh, model, 7, counter)
    assert verdicts == {abi.R_DROP_REPLAY: 3000}
