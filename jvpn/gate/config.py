"""The XDP gate's run-time settings (the jvpn_config map) in operator units.

Rates become GCRA (interval, burst tolerance) pairs in nanoseconds: see
bpf/include/gcra.h. Burst tolerances are kept at or above one coarse-clock
tick (a jiffy, up to 10 ms) so that a tick boundary never refuses a burst the
operator allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jvpn.gate import abi

NS = 1_000_000_000
MIN_BURST_NS = 10_000_000


def _interval(per_second: float) -> int:
    if per_second <= 0:
        return 0  # disabled
    return max(1, int(NS / per_second))


def _burst(interval_ns: int, units: float) -> int:
    if not interval_ns:
        return 0
    return max(int(interval_ns * max(units - 1, 0)), MIN_BURST_NS)


@dataclass
class GateConfig:
    ports: list[int] = field(default_factory=lambda: [abi.DEFAULT_PORT])
    session_pps: float = 200_000
    session_burst_packets: float = 4_000
    session_bytes_per_sec: float = 1_000_000_000  # 8 Gbit/s: the finest 1 ns/byte
    session_burst_bytes: float = 16_000_000
    source_control_pps: float = 20  # handshake initiations per source prefix
    source_control_burst: float = 10
    global_control_pps: float = 2_000  # handshake initiations, whole gateway
    global_control_burst: float = 200
    # Authenticated control (reattach, path response, terminate with a valid
    # tag): budgets no unauthenticated packet can spend (issue 10 item 3).
    session_control_pps: float = 20  # per session
    session_control_burst: float = 10
    # PATH_PROBE: a per-session bucket of its own (issue 14), so probes never
    # starve the session's reattach; 10/s = jvpn.policy.MAX_PROBES_PER_S, the
    # most a policy may have the daemon answer.
    session_probe_pps: float = 10
    session_probe_burst: float = 10
    authed_control_pps: float = 2_000  # whole gateway: protects the daemon
    authed_control_burst: float = 200
    # PATH_PROBE, whole gateway: a bucket of its own, never the authenticated
    # one (every multi-homed client probes ~1/s: 2 000 of them would take the
    # whole authenticated budget from other sessions' reattaches). 20 000/s:
    # ~10 000 dual-candidate clients at their 1-2 probes a second; a probe
    # costs the daemon one HMAC and one reply, no store write, so this
    # still bounds it well below its datagram rate.
    global_probe_pps: float = 20_000
    global_probe_burst: float = 2_000
    events_per_sec: float = 100
    events_burst: float = 100
    event_sample_every: int = 1
    ns_per_jiffy: int = 0  # the gate's clock; 0 = coarse ktime (attach measures it)

    def validate(self) -> None:
        if not 1 <= len(self.ports) <= abi.MAX_PORTS:
            raise ValueError(f"between 1 and {abi.MAX_PORTS} ports, got {len(self.ports)}")
        for p in self.ports:
            if not 1 <= p <= 65535:
                raise ValueError(f"port {p} is not in 1..65535")
        if self.event_sample_every < 1:
            raise ValueError("event_sample_every must be >= 1")

    def to_abi(self) -> abi.Config:
        self.validate()
        pkt = _interval(self.session_pps)
        byte = _interval(self.session_bytes_per_sec)
        src = _interval(self.source_control_pps)
        glob = _interval(self.global_control_pps)
        sess_ctl = _interval(self.session_control_pps)
        sess_probe = _interval(self.session_probe_pps)
        authed = _interval(self.authed_control_pps)
        probes = _interval(self.global_probe_pps)
        ev = _interval(self.events_per_sec)
        ports = [abi.port_word(p) for p in self.ports] + [0] * (abi.MAX_PORTS - len(self.ports))
        return abi.Config(
            ports=ports,
            session_pkt_interval_ns=pkt,
            session_pkt_burst_ns=_burst(pkt, self.session_burst_packets),
            session_byte_interval_ns=byte,
            session_byte_burst_ns=_burst(byte, self.session_burst_bytes),
            source_interval_ns=src,
            source_burst_ns=_burst(src, self.source_control_burst),
            global_interval_ns=glob,
            global_burst_ns=_burst(glob, self.global_control_burst),
            session_control_interval_ns=sess_ctl,
            session_control_burst_ns=_burst(sess_ctl, self.session_control_burst),
            session_probe_interval_ns=sess_probe,
            session_probe_burst_ns=_burst(sess_probe, self.session_probe_burst),
            authed_interval_ns=authed,
            authed_burst_ns=_burst(authed, self.authed_control_burst),
            global_probe_interval_ns=probes,
            global_probe_burst_ns=_burst(probes, self.global_probe_burst),
            event_interval_ns=ev,
            event_burst_ns=_burst(ev, self.events_burst),
            event_sample_every=self.event_sample_every,
            ns_per_jiffy=self.ns_per_jiffy,
        )
