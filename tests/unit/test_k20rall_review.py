"""Review k20rall (the range 7de95b1..4b0670b as one piece): failing tests
that reproduce its findings. Each test FAILS on main (4b0670b); none fixes
product code. Clocks are injected as in test_capacity_answerable.py."""

from __future__ import annotations

import json
import sqlite3
import types

from test_capacity_answerable import CLIENT, T0_NS, Link, _full_gateway

from jvpn import client_handshake
from jvpn.client import Client as JvpnClient
from jvpn.config import ATTEMPTS_KEPT
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.handshake import Initiator
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import GW_PUB, LISTEN, PEER_KEYS, AdmitAll, Clock, make_gateway

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


# ----------------------------------------------------------------- F2
def _gateway(tmp_path, store, clock, max_sessions: int = 10):
    gate = AdmitAll()
    gate.max_sessions = max_sessions
    return make_gateway(tmp_path, gate=gate, clock=clock, cookie_threshold_per_s=10_000,
                        store=store)


def _initiate(gw, sid: int, at_ms: int) -> None:
    gw.controlpath.randbits = lambda _bits: sid
    init = Initiator(PEER_KEYS[0], GW_PUB, clock_ns=lambda: T0_NS + at_ms * MS)
    gw.datapath.datagram(init.initiation(), CLIENT)


def test_k20rall_f2_an_integer_inner_address_escapes_attempts_kept_at_a_restart(tmp_path):
    """A damaged or hostile store: an attempt whose inner_addr is the
    peer's address written as a JSON integer (e.g. 174260226 for
    10.99.0.2). record_from_json takes any JSON type there (only the fast
    path insists on a string), reconcile._by_peer files a non-string
    address under the session's own id (its docstring: 'no text: each
    alone, and its own failure to read') -- but _inner_packed's
    ipaddress.IPv4Address(int) DOES read it, as the peer's address. The
    peer's attempts come back in two groups, ATTEMPTS_KEPT each: more than
    ATTEMPTS_KEPT attempts of one peer, which admission and
    _restore_attempts' docstring promise never happens."""
    store = SqliteStore(tmp_path / "s.db")
    clock = Clock()
    first = _gateway(tmp_path, store, clock)
    for i, sid in enumerate([11, 12, 13]):
        _initiate(first, sid, 100 * i)
    inner = next(iter(first.table.attempts))
    db = sqlite3.connect(str(tmp_path / "s.db"))
    (text,) = db.execute("SELECT record FROM sessions WHERE session_id = 11").fetchone()
    rec = json.loads(text)
    rec["inner_addr"] = int.from_bytes(inner, "big")  # the same address, as a JSON integer
    db.execute("UPDATE sessions SET record = ? WHERE session_id = 11", (json.dumps(rec),))
    db.commit()
    db.close()
    # another process (a restart without a reconcile yet, or a second gateway
    # of the store) answers the client's next initiation: a 4th attempt stored
    _initiate(_gateway(tmp_path, store, clock), 14, 300)
    again = _gateway(tmp_path, store, clock)
    again.reconcile()
    restored = [live.record.session_id for live in again.table.attempts_of(inner)]
    assert len(restored) <= ATTEMPTS_KEPT, f"attempts of one peer restored: {restored}"
    store.close()


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
