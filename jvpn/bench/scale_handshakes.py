"""`bench scale`'s handshake figures (issue 15: "handshakes per second that
one daemon core completes, with and without cookies; how many a spoofed
flood needs to take from a legitimate client"): `bench handshake`'s run
(jvpn/bench/handshake.py), after the sizes, in the same JSON."""

from __future__ import annotations

from collections.abc import Callable

from jvpn.bench.handshake import run_handshake_bench

FLOOD_TRIES = 5  # legitimate handshakes under the flood, one after another


def with_handshakes(scale: Callable[[Callable[[str], None]], dict], handshakes: int,
                    tries: int = FLOOD_TRIES) -> Callable[[Callable[[str], None]], dict]:
    """``scale``'s run, then ``handshakes`` handshakes (0: none) whose
    per-second figures join its result at the top level and whole under
    "handshakes"."""
    def run(progress: Callable[[str], None]) -> dict:
        result = scale(progress)
        if handshakes:
            hs = run_handshake_bench(handshakes, tries, progress)
            result.update({k: hs[k] for k in ("handshakes_per_s", "handshakes_per_s_cookie",
                                               "handshakes_per_cpu_s",
                                               "handshakes_per_cpu_s_cookie",
                                               "legit_under_flood_ms")})
            result["handshakes"] = hs
        return result
    return run
