"""``bench tunnel --rekey-interval-ms N`` (issue 13): the goodput cost of
rekeying. Policy is per gateway, so the run has two jvpn labs side by side
(their own namespaces, the same addresses inside them): the main one never
rekeys, the second one rekeys every N ms; each round measures both, back to
back in alternating order, so the ratio compares like with like."""

from __future__ import annotations

import statistics
from pathlib import Path

from jvpn.lab.running import read_jsonl, rekey_policy
from jvpn.lab.tunnel import TunnelLab

DAY_MS = 24 * 3600 * 1000
# "none": the longest key lifetime a policy takes (keys.reject_after_ms is at
# most 7 days and must exceed keys.rekey_after_ms)
NEVER_MS, NEVER_REJECT_MS = 7 * DAY_MS - 3600 * 1000, 7 * DAY_MS


def no_rekey_policy() -> str:
    return rekey_policy(NEVER_MS, NEVER_REJECT_MS, 5_000)


def rekey_lab(tmp: Path, interval_ms: int, path_mtu: int | None) -> TunnelLab:
    """The second lab, rekeying every ``interval_ms``, up."""
    d = tmp / "rekey"
    d.mkdir()
    rk = TunnelLab(d, policy=rekey_policy(interval_ms))
    rk.up(before_client=(lambda: rk.lab.narrow_uplink("wifi", path_mtu)) if path_mtu else None)
    return rk


def alternate(targets: list, round_no: int) -> list:
    """This round's order: jvpn and jvpn_rekey swap places every other round
    (neither always runs first after veth)."""
    if round_no % 2 == 0:
        return targets
    names = [t[0] for t in targets]
    if "jvpn_rekey" not in names:
        return targets
    i, j = names.index("jvpn"), names.index("jvpn_rekey")
    out = list(targets)
    out[i], out[j] = out[j], out[i]
    return out


def _rotations(tl: TunnelLab) -> int:
    """Key epochs reached (the gateway may write KeyRotated twice per epoch:
    at the confirmation and at the overlap's end)."""
    return len({e.get("key_epoch") for e in read_jsonl(tl.events_file)
                if e["event_type"] == "KeyRotated"})


def rekey_figures(tl: TunnelLab, rk: TunnelLab, interval_ms: int) -> dict:
    """How many rekeys each lab did (the main one: none), and whether the
    rekeying one's session lived through them (a single handshake)."""
    handshakes = sum(1 for e in read_jsonl(rk.events_file)
                     if e.get("reason_code") == "HANDSHAKE_OK")
    counters = rk.cli_json("stats", "gw0")["gw0"]
    return {"rekey_interval_ms": interval_ms, "rekeys": _rotations(rk),
            "rekeys_in_none": _rotations(tl), "rekey_lab_handshakes": handshakes,
            # what its gate dropped (drop_key_phase: old-phase packets after an overlap)
            "rekey_lab_drops": {k: v["packets"] for k, v in counters.items()
                                if k.startswith("drop_") and v["packets"]}}


def rekey_summary(med: dict, figures: dict, rekeyed: dict) -> dict:
    """The ratio of the medians (rekeying / none), and per round."""
    if not rekeyed:
        return {}
    per_round = [round(a / b, 3) for a, b in zip(figures["jvpn_rekey"], figures["jvpn"],
                                                 strict=True) if b]
    return {"jvpn_rekey_mbps": med["jvpn_rekey"],
            "rekey_over_none": round(med["jvpn_rekey"] / med["jvpn"], 3) if med["jvpn"] else None,
            "rekey_over_none_per_round": per_round,
            "rekey_over_none_mean": round(statistics.mean(per_round), 3) if per_round else None,
            **rekeyed}
