"""Review k20rall (the range 7de95b1..4b0670b as one piece): failing tests
that reproduce its findings. Each test FAILS on main (4b0670b); none fixes
product code. Clocks are injected as in test_capacity_answerable.py."""

from __future__ import annotations

import types

from test_capacity_answerable import T0_NS, Link, _full_gateway

from jvpn import client_handshake
from jvpn.client import Client as JvpnClient
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.handshake import Initiator
from kits.daemon_kit import GW_PUB, LISTEN, PEER_KEYS

MS = 1_000_000


# ----------------------------------------------------------------- F1
def test_k20rall_f1_a_wall_clock_step_at_capacity_leaves_the_client_a_session_gone(
        monkeypatch, tmp_path):
    """At MaxSessions the attempt of the client's first initiation is
    replaced once the retry's TIMESTAMP (the client's wall clock) is
    ANSWER_WINDOW_MS + 100 ms past the first's (new_session.answerable),
    while the client's own answer window runs on its TIMER clock
    (client_handshake._opened). A wall clock stepped forward between the
    two initiations (NTP/timesyncd stepping the clock at boot, exactly when
    `client up` runs) makes the gateway end the first attempt 0.3 s after
    it was made; the first answer, delayed 0.6 s (a slow store, a long
    path), is still inside the client's window: it takes it and holds a
    session the gateway ended (the k18rall F2 failure, again)."""
    gw, peer0 = _full_gateway(tmp_path)
    link = Link(gw, peer0.clock, [0.6, 0.6, 0.6])
    monkeypatch.setattr(client_handshake, "time", types.SimpleNamespace(monotonic=link.monotonic))
    step_ns = 5_000 * MS  # the wall clock stepped 5 s forward after the first initiation
    made = []

    def initiator(private, gateway_public):
        stamp = T0_NS + link.clock_ms() * MS + (step_ns if made else 0)
        made.append(stamp)
        return Initiator(private, gateway_public, clock_ns=lambda: stamp)

    monkeypatch.setattr(client_handshake, "Initiator", initiator)
    client = JvpnClient(private_key=PEER_KEYS[0], gateway_public=GW_PUB, endpoint=LISTEN,
                        events=EventLog("client-test", clock_ms=link.clock_ms),
                        clock_ms=link.clock_ms, socket_factory=lambda: link,
                        rand=lambda: 0.0)
    client.sock = link
    client.handshake()
    link.sendto(client.channel.seal(b"", abi.MSG_KEEPALIVE), LISTEN)
    assert len(made) >= 2 and link.now < 1.0  # a retry went out; the first answer taken
    live = gw.sessions.get(client.session_id)
    assert live is not None and live.confirmed, \
        "the client took the first attempt's answer; the gateway had ended that attempt"


# ----------------------------------------------------------------- F3
def test_k20rall_f3_bench_scale_quiet_runs_use_a_session_the_smallest_sizes_lack(monkeypatch):
    """`bench scale --sizes 1` (or 2) is accepted (cli/bench.py _sizes:
    1 <= count), but the quiet XDP runs (0e92578) send session n // 2 + 1's
    packets: session 1 of a store of one (0 only), session 2 of two: an
    unknown session, so _require_action fails the size after its whole
    run. Every session index measure_size uses must be below n."""
    from jvpn.bench import scale

    used: list[tuple[int, int]] = []

    class Daemon:
        def rss(self):
            return 0

        def event(self, _name):
            return {}

        def events_of(self, _name):
            return []

        def cpu_s(self):
            return 0.0

        def wait_quiet(self):
            return 0.0

    for n in (1, 2, 1000):
        lab = types.SimpleNamespace(sessions=n, capacity=n, pin_dir=None, seed=None,
                                    start=lambda _label: Daemon(), stop=lambda **_k: None,
                                    fill_store=lambda: 0.0)
        monkeypatch.setattr(scale.time, "sleep", lambda _s: None)
        monkeypatch.setattr(scale, "kernel_bytes", lambda _p: {"total": 0, "per_session_maps": 0,
                                                               "maps": {}})
        monkeypatch.setattr(scale, "listing_figures", lambda *_a, **_k: {})
        monkeypatch.setattr(scale, "xdp_figures",
                            lambda _p, _s, n, i: used.append((n, i)) or {})
        scale.measure_size(lab, lambda _m: None)
    assert all(0 <= i < n for n, i in used), f"(sessions, session index) used: {used}"
