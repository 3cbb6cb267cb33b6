"""Reference model of the XDP verdict logic (bpf/jvpn_xdp.c), step for step,
with the same reason codes and the same map state.

The model is what the kernel program is tested against: the property tests
feed both the same packet sequences and demand the same verdicts, counters and
per-session runtime state. Keep the two in the same order; docs/xdp.md lists
the steps. Its state uses the ctypes mirrors of jvpn/abi.py, so comparing it
with what the kernel maps hold is a field-by-field comparison.
"""

from __future__ import annotations

import ctypes
import ipaddress
import random
import struct
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from jvpn.gate import abi
from jvpn.replay import replay_accept, replay_fresh, seed_floor
from jvpn.wire import header_tag

_U64 = (1 << 64) - 1
_ETH_P_8021AD = 0x88A8
_IPV6_EXT_OPTS = (0, 43, 60)  # hop-by-hop, routing, destination options
_IPV6_FRAGMENT = 44

# The kernel's bounds (bpf/jvpn_xdp.c, BuildOptions in maps.py): the model
# holds no more than the kernel can, so a flood of spoofed sources costs the
# userspace gate what it costs XDP (threat 4.3, bounded memory).
MAX_SOURCES = 65536  # JVPN_MAX_SOURCES: the jvpn_src_rl LRU hash
MAX_REMOTE_BUCKETS = 16384  # JVPN_MAX_REMOTE_BUCKETS: the jvpn_remote_rl LRU hash
EVENT_PAGES = 64  # JVPN_EVENT_PAGES: the jvpn_events ring buffer
# A ring buffer record is the 8-byte header plus the event rounded up to 8.
EVENT_RING_CAPACITY = EVENT_PAGES * 4096 // (8 + (ctypes.sizeof(abi.Event) + 7) // 8 * 8)

PARSE_OTHER, PARSE_OK, PARSE_MALFORMED, PARSE_UNPARSED = 0, 1, 2, 3
# L4 results of the IP parsers besides a protocol number (parse.h JVPN_L4_*)
_NOT_OURS, _GAVE_UP = -1, -2
_VLAN = (abi.ETH_P_8021Q, _ETH_P_8021AD)


@dataclass
class Parsed:
    family: int = 0
    saddr: tuple = (0, 0, 0, 0)
    sport: int = 0  # network-order word, as the maps hold it
    msg: bytes = b""
    first_frag: bool = False


def parse(frame: bytes, ports: set[int]) -> tuple[int, Parsed]:
    """Mirror of parse.h:jvpn_parse. ``ports`` in host order."""
    p = Parsed()
    if len(frame) < 14:
        return PARSE_OTHER, p
    (proto,) = struct.unpack_from("!H", frame, 12)
    pos = 14
    for _ in range(2):
        if proto not in _VLAN:
            break
        if pos + 4 > len(frame):
            return PARSE_UNPARSED, p
        (proto,) = struct.unpack_from("!H", frame, pos + 2)
        pos += 4
    if proto in _VLAN:
        return PARSE_UNPARSED, p  # a third tag
    if proto == abi.ETH_P_IP:
        l4, pos = _parse_ipv4(frame, pos, p)
    elif proto == abi.ETH_P_IPV6:
        l4, pos = _parse_ipv6(frame, pos, p)
    else:
        return PARSE_OTHER, p
    if l4 == _GAVE_UP:
        return PARSE_UNPARSED, p
    if l4 != abi.IPPROTO_UDP:
        return PARSE_OTHER, p
    if pos + 8 > len(frame):
        return PARSE_UNPARSED, p
    sport, dport, ulen = struct.unpack_from("!HHH", frame, pos)
    if dport == 0 or dport not in ports:
        return PARSE_OTHER, p
    if p.first_frag or sport == 0:
        return PARSE_MALFORMED, p
    p.sport = abi.port_word(sport)
    if ulen < 8 + abi.HDR_LEN or pos + ulen > len(frame):
        return PARSE_MALFORMED, p
    p.msg = frame[pos + 8: pos + ulen]
    return PARSE_OK, p


def _parse_ipv4(frame: bytes, pos: int, p: Parsed) -> tuple[int, int]:
    if pos + 20 > len(frame):
        return _GAVE_UP, pos
    vihl, _, _, _, frag, _, proto, _, src = struct.unpack_from("!BBHHHBBH4s", frame, pos)
    ihl = (vihl & 0xF) * 4
    if vihl >> 4 != 4 or ihl < 20 or pos + ihl > len(frame):
        return _GAVE_UP, pos
    if frag & 0x1FFF:
        return _NOT_OURS, pos
    p.first_frag = bool(frag & 0x2000)
    p.family = abi.AF_INET
    p.saddr = abi.addr_words(ipaddress.IPv4Address(src))
    return proto, pos + ihl


def _parse_ipv6(frame: bytes, pos: int, p: Parsed) -> tuple[int, int]:
    if pos + 40 > len(frame) or frame[pos] >> 4 != 6:
        return _GAVE_UP, pos
    p.family = abi.AF_INET6
    p.saddr = abi.addr_words(ipaddress.IPv6Address(frame[pos + 8: pos + 24]))
    nexthdr = frame[pos + 6]
    pos += 40
    for _ in range(3):
        if nexthdr in _IPV6_EXT_OPTS:
            if pos + 2 > len(frame):
                return _GAVE_UP, pos
            nexthdr, hdrlen = frame[pos], frame[pos + 1]
            pos += (hdrlen + 1) * 8
        elif nexthdr == _IPV6_FRAGMENT:
            if pos + 8 > len(frame):
                return _GAVE_UP, pos
            (off,) = struct.unpack_from("!H", frame, pos + 2)
            if off & 0xFFF8:
                return _NOT_OURS, pos
            p.first_frag = True
            nexthdr = frame[pos]
            pos += 8
        else:
            break
    if nexthdr in _IPV6_EXT_OPTS or nexthdr == _IPV6_FRAGMENT:
        return _GAVE_UP, pos  # a longer chain than the kernel program walks
    return nexthdr, pos


def gcra_next(tat: int, now: int, interval: int, burst: int, cost: int) -> int:
    """Mirror of gcra.h:jvpn_gcra_next: new TAT, or 0 to refuse."""
    base = max(tat, now)
    if base - now > burst:
        return 0
    nxt = (base + interval * cost) & _U64
    return nxt or 1


def gcra_allow(obj, attr: str, now: int, interval: int, burst: int, cost: int = 1) -> bool:
    if not interval:
        return True
    nxt = gcra_next(getattr(obj, attr), now, interval, burst, cost)
    if not nxt:
        return False
    setattr(obj, attr, nxt)
    return True


class SourceTable(OrderedDict):
    """The per-source buckets, bounded like the kernel's LRU hash: at most
    ``capacity`` entries; a new source evicts the least recently used one
    (a lookup counts as a use, as it sets the kernel element's ref bit).

    The kernel's LRU is approximate, not this exact order: it evicts in
    batches from per-CPU free lists, gives referenced elements a second
    chance, and may evict before the map is full. Tests that compare the two
    therefore stay below the capacity; above it, both hold at most
    ``capacity`` sources and an evicted source starts with a fresh bucket."""

    def __init__(self, capacity: int = MAX_SOURCES, items=()):
        super().__init__(items)
        self.capacity = capacity

    def setdefault(self, key, default=None):
        if key in self:
            self.move_to_end(key)
            return self[key]
        while len(self) >= self.capacity:
            self.popitem(last=False)
        self[key] = default
        return default


class EventRing:
    """The sampled security events, bounded like the kernel's ring buffer:
    at most ``capacity`` wait for the daemon to drain them; what does not fit
    is counted in ``dropped`` (and in events_suppressed, as the kernel does)."""

    def __init__(self, capacity: int = EVENT_RING_CAPACITY, items=()):
        self.capacity = capacity
        self.dropped = 0
        self._q: deque = deque()
        for ev in items:
            self.push(ev)

    def push(self, ev) -> bool:
        if len(self._q) >= self.capacity:
            self.dropped += 1
            return False
        self._q.append(ev)
        return True

    def drain(self) -> list:
        """Every waiting event, oldest first; the ring is empty after."""
        got = list(self._q)
        self._q.clear()
        return got

    def __len__(self) -> int:
        return len(self._q)

    def __iter__(self):
        return iter(self._q)


@dataclass
class Model:
    """The gateway's XDP state and verdict function, in Python."""

    config: abi.Config
    replay_bits: int = abi.REPLAY_BITS
    rand: Callable[[], int] = field(default_factory=lambda: random.Random(0).getrandbits(32))
    sessions: dict = field(default_factory=dict)  # sid -> abi.Session
    runtime: dict = field(default_factory=dict)  # rt slot -> SessionRt (absent: all zero)
    max_sessions: int = 65536  # runtime slots (JVPN_MAX_SESSIONS)
    fence: abi.Fence = field(default_factory=abi.Fence)
    remote: dict = field(default_factory=dict)  # sid -> abi.Remote (others' sessions)
    remote_buckets: dict = field(default_factory=dict)  # sid -> abi.RemoteRl; LRU
    max_remote_buckets: int = MAX_REMOTE_BUCKETS
    sources: dict = field(default_factory=dict)  # (family, addr words) -> abi.SrcRl; LRU
    glob: abi.Global = field(default_factory=abi.Global)
    counters: list = field(default_factory=lambda: [[0, 0] for _ in range(abi.C_MAX)])
    events: list = field(default_factory=list)  # becomes an EventRing: drain() it
    max_sources: int = MAX_SOURCES
    event_capacity: int = EVENT_RING_CAPACITY

    def __post_init__(self):
        self._rt_type = abi.session_rt_type(self.replay_bits)
        self.sources = SourceTable(self.max_sources, self.sources)
        self.remote_buckets = SourceTable(self.max_remote_buckets, self.remote_buckets)
        self.events = EventRing(self.event_capacity, self.events)

    @property
    def ports(self) -> set[int]:
        return {abi.word_port(w) for w in self.config.ports if w}

    # -- the program --
    def run(self, frame: bytes, now: int) -> int:
        """One packet; returns the reason code (abi.R_*), updates the state."""
        status, p = parse(frame, self.ports)
        if status == PARSE_OTHER:
            return self._count(abi.R_PASS_OTHER, len(frame))
        if status == PARSE_MALFORMED:
            return self._count(abi.R_DROP_MALFORMED, len(frame))
        if status == PARSE_UNPARSED:
            return self._count(abi.R_DROP_UNPARSED, len(frame))
        reason = self._verdict(p, now)
        self._count(reason, len(frame))
        if reason in abi.SECURITY_DROPS:
            self._emit(reason, p, now)
        return reason

    def run_message(self, msg: bytes, src_ip: str, src_port: int, now: int) -> int:
        """The same verdict for a message already received on a UDP socket
        (the gateway's userspace-only gate, for hosts without XDP)."""
        if len(msg) < abi.HDR_LEN or src_port == 0:
            return self._count(abi.R_DROP_MALFORMED, len(msg))
        ip = ipaddress.ip_address(src_ip)
        p = Parsed(family=abi.AF_INET if ip.version == 4 else abi.AF_INET6,
                   saddr=abi.addr_words(ip), sport=abi.port_word(src_port), msg=msg)
        reason = self._verdict(p, now)
        self._count(reason, len(msg))
        if reason in abi.SECURITY_DROPS:
            self._emit(reason, p, now)
        return reason

    def _count(self, slot: int, nbytes: int) -> int:
        self.counters[slot][0] += 1
        self.counters[slot][1] += nbytes
        return slot

    def _verdict(self, p: Parsed, now: int) -> int:
        t, ver, _flags, reserved = struct.unpack_from("<BBHI", p.msg)
        (sid,) = struct.unpack_from("<Q", p.msg, 8)
        if ver != abi.WIRE_VERSION or reserved != 0:
            return abi.R_DROP_MALFORMED
        if t == abi.MSG_HANDSHAKE_INIT:
            if sid != 0:
                return abi.R_DROP_MALFORMED
            return self._handshake_budget(p, now) or abi.R_PASS_HANDSHAKE
        if t in (abi.MSG_DATA, abi.MSG_KEEPALIVE, abi.MSG_REATTACH_REQ,
                 abi.MSG_PATH_RESPONSE, abi.MSG_TERMINATE, abi.MSG_REKEY_INIT,
                 abi.MSG_PATH_PROBE):
            return self._session_verdict(p, t, sid, now)
        return abi.R_DROP_BAD_TYPE

    def _session_verdict(self, p: Parsed, t: int, sid: int, now: int) -> int:
        counter, tag = struct.unpack_from("<QQ", p.msg, 16)
        is_data = t in (abi.MSG_DATA, abi.MSG_KEEPALIVE)
        s = self.sessions.get(sid)
        if s is None:
            return self._remote_verdict(p, t, sid, now)
        if not abi.STATE_ALLOW.get(s.state, 0) & (1 << t):
            return abi.R_DROP_STATE
        verdict = _tag_verdict(s, p, tag)  # key phase, then tag: nothing moved before
        if verdict:
            return verdict
        if is_data and not self._bound_here(s, p):
            return abi.R_DROP_WRONG_BINDING
        cfg, fence = self.config, self.fence
        if is_data and fence.deadline_ns and (s.fence != fence.token
                                              or now >= fence.deadline_ns):
            return abi.R_DROP_STATE  # fenced: not our lease, or not certainly alive
        if s.rt_slot >= self.max_sessions:
            return abi.R_DROP_REPLAY  # no window to prove freshness: fail closed
        rt = self.runtime.setdefault(s.rt_slot, self._rt_type())
        self._claim(rt, sid, s)
        # only DATA consumes its counter; keepalives and control are checked,
        # also against the floor the daemon raised once it verified one
        # (their bodies are not tagged: item 5); a probe against its own
        # floor, which only a verified probe raises (issue 14)
        if t == abi.MSG_DATA:
            fresh = replay_accept(rt, counter, self.replay_bits)
        else:
            floor = s.probe_floor if t == abi.MSG_PATH_PROBE else s.ctl_floor
            fresh = counter > floor and replay_fresh(rt, counter, self.replay_bits)
        if not fresh:
            return abi.R_DROP_REPLAY
        if is_data:
            if not (
                gcra_allow(rt, "rate_pkt_tat", now, cfg.session_pkt_interval_ns,
                           cfg.session_pkt_burst_ns)
                and gcra_allow(rt, "rate_byte_tat", now, cfg.session_byte_interval_ns,
                               cfg.session_byte_burst_ns, len(p.msg))
            ):
                return abi.R_DROP_RATE_SESSION
            rt.rx_packets += 1
            rt.rx_bytes += len(p.msg)
            rt.last_rx_ns = now
            return abi.R_PASS_DATA if t == abi.MSG_DATA else abi.R_PASS_KEEPALIVE
        if not self._session_control_budget(rt, t, counter, now):
            return abi.R_DROP_RATE_SESSION
        return self._gateway_control_budget(t, now)

    def _remote_verdict(self, p: Parsed, t: int, sid: int, now: int) -> int:
        """Mirror of jvpn_xdp.c:jvpn_remote_verdict: a session id the
        sessions map does not hold, unknown or owned by another gateway
        (jvpn_remote): its client's reattach traffic only, never data."""
        r = self.remote.get(sid)
        if r is None:
            return abi.R_DROP_UNKNOWN_SESSION
        if not abi.STATE_ALLOW[abi.STATE_REMOTE] & (1 << t):
            return abi.R_DROP_STATE
        counter, tag = struct.unpack_from("<QQ", p.msg, 16)
        verdict = _tag_verdict(r, p, tag)
        if verdict:
            return verdict
        if counter <= r.ctl_floor or counter >= abi.reject_after(self.replay_bits):
            return abi.R_DROP_REPLAY
        cfg = self.config
        if cfg.session_control_interval_ns:
            bucket = self.remote_buckets.setdefault(sid, abi.RemoteRl())
            if not gcra_allow(bucket, "control_tat", now, cfg.session_control_interval_ns,
                              cfg.session_control_burst_ns):
                return abi.R_DROP_RATE_SESSION
        if not gcra_allow(self.glob, "authed_control_tat", now, cfg.authed_interval_ns,
                          cfg.authed_burst_ns):
            return abi.R_DROP_RATE_AUTHED
        return abi.R_PASS_CONTROL

    def _session_control_budget(self, rt, t: int, counter: int, now: int) -> bool:
        """A PATH_PROBE spends only the session's probe bucket, the other
        control types only its control bucket: probes never starve the
        session's reattach (issue 14)."""
        cfg = self.config
        if t == abi.MSG_PATH_PROBE:
            return self._probe_allow(rt, counter, now)
        return gcra_allow(rt, "control_tat", now, cfg.session_control_interval_ns,
                          cfg.session_control_burst_ns)

    def _probe_allow(self, rt, counter: int, now: int) -> bool:
        """Mirror of jvpn_probe_allow: each counter above probe_top spends
        probe_tat (then it is probe_top); copies at or below it, junk bodies
        included, spend it only while at most half its burst is spent (one
        path's replays cannot starve the probes of another: review E L1),
        then one per refill of the whole bucket on probe_dup_tat: at most
        the burst + 1 per session (review k16r1)."""
        interval, burst = self.config.session_probe_interval_ns, self.config.session_probe_burst_ns
        if counter > rt.probe_top:
            if not gcra_allow(rt, "probe_tat", now, interval, burst):
                return False
            rt.probe_top = counter
            return True
        if gcra_allow(rt, "probe_tat", now, interval, burst // 2):
            return True
        return gcra_allow(rt, "probe_dup_tat", now, interval + burst, 0)

    def _gateway_control_budget(self, t: int, now: int) -> int:
        """Mirror of jvpn_probe_budget / jvpn_authed_budget: a PATH_PROBE
        spends the gateway's probe bucket, never the authenticated one, so
        many clients' probes cannot starve other sessions' reattaches."""
        cfg = self.config
        if t == abi.MSG_PATH_PROBE:
            if not gcra_allow(self.glob, "probe_tat", now, cfg.global_probe_interval_ns,
                              cfg.global_probe_burst_ns):
                return abi.R_DROP_RATE_GLOBAL
        elif not gcra_allow(self.glob, "authed_control_tat", now, cfg.authed_interval_ns,
                            cfg.authed_burst_ns):
            return abi.R_DROP_RATE_AUTHED
        return abi.R_PASS_CONTROL

    def _claim(self, rt, sid: int, s) -> None:
        """Mirror of jvpn_xdp.c:jvpn_rt_claim."""
        if rt.session_id == sid and rt.gen == s.rt_gen:
            return
        top = s.replay_floor
        if rt.session_id == sid and rt.replay_top > top:
            top = rt.replay_top
        rt.session_id, rt.gen = sid, s.rt_gen
        rt.rate_pkt_tat = rt.rate_byte_tat = rt.rx_packets = rt.rx_bytes = rt.last_rx_ns = 0
        rt.control_tat = rt.probe_tat = 0  # a previous owner's buckets are not this one's
        rt.probe_top = rt.probe_dup_tat = 0
        seed_floor(rt, top, self.replay_bits)

    def runtime_of(self, sid: int):
        """The runtime of this session's element, as GateMaps.get_runtime."""
        s = self.sessions.get(sid)
        rt = self.runtime.get(s.rt_slot) if s is not None else None
        if rt is None or rt.session_id != sid or rt.gen != s.rt_gen:
            return None
        return rt

    @staticmethod
    def _bound_here(s, p: Parsed) -> bool:
        return (s.bind_family == p.family and s.bind_port == p.sport
                and tuple(s.bind_addr) == tuple(p.saddr))

    def _handshake_budget(self, p: Parsed, now: int) -> int | None:
        """Unauthenticated: per source prefix, then global. Authenticated
        control never draws on these (anyone can spend them)."""
        cfg = self.config
        words = (p.saddr[0], p.saddr[1] if p.family == abi.AF_INET6 else 0, 0, 0)
        src = self.sources.setdefault((p.family, words), abi.SrcRl())
        if not gcra_allow(src, "tat", now, cfg.source_interval_ns, cfg.source_burst_ns):
            return abi.R_DROP_RATE_SOURCE
        if not gcra_allow(self.glob, "control_tat", now, cfg.global_interval_ns,
                          cfg.global_burst_ns):
            return abi.R_DROP_RATE_GLOBAL
        return None

    def _emit(self, reason: int, p: Parsed, now: int) -> None:
        cfg = self.config
        if cfg.event_sample_every > 1 and self.rand() % cfg.event_sample_every:
            self._count(abi.C_EVENT_SUPPRESSED, 0)
            return
        if not gcra_allow(self.glob, "event_tat", now, cfg.event_interval_ns, cfg.event_burst_ns):
            self._count(abi.C_EVENT_SUPPRESSED, 0)
            return
        t = p.msg[0]
        sid, counter = struct.unpack_from("<QQ", p.msg, 8)
        ev = abi.Event(ts_ns=now, session_id=sid, counter=counter, saddr=p.saddr,
                       sport=p.sport, family=p.family, msg_type=t, reason=reason)
        # a full ring refuses the event and the kernel counts it suppressed
        self._count(abi.C_EVENT_SENT if self.events.push(ev) else abi.C_EVENT_SUPPRESSED, 0)


def _tag_verdict(keyed, p: Parsed, tag: int) -> int:
    """keyphase.h, then the header tag, for an element or a remote entry
    (both carry tag_key, tag_key_phase1 and key_phases): the header's key
    phase picks the key; a phase it does not accept, or a slot holding the
    public zero key (a torn read), drops before the tag. 0: the tag holds."""
    (flags,) = struct.unpack_from("<H", p.msg, 2)
    phase = 1 if flags & abi.FLAG_KEY_PHASE else 0
    words = keyed.tag_key_phase1 if phase else keyed.tag_key
    if not keyed.key_phases & abi.key_phase_bit(phase) or not (words[0] | words[1]):
        return abi.R_DROP_KEY_PHASE
    if header_tag(struct.pack("<QQ", words[0], words[1]), p.msg[: abi.TAGGED_LEN]) != tag:
        return abi.R_DROP_BAD_TAG
    return 0
