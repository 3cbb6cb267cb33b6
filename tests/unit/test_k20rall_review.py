"""Review k20rall (the range 7de95b1..4b0670b as one piece): failing tests
that reproduce its findings. Each test FAILS on main (4b0670b); none fixes
product code. Clocks are injected as in test_capacity_answerable.py."""

from __future__ import annotations

import types

MS = 1_000_000


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
