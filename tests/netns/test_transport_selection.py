"""Transport selection in the lab (issue 14; docs/protocol.md "Transport
selection"): the client with two uplinks (wifi preferred, lte) and a 1 ms
UDP echo stream through the tunnel. (a) wifi goes silent (an nftables drop
in the router: no link or route event): the client moves to lte and the
echoes resume within a second; (b) a planned move: on lte alone, wifi comes
up with its preferred route while lte works: the client moves to wifi and
no echo is lost; (c) wifi's link goes down: the client fails over as
before."""

from __future__ import annotations

import sys
import time

import pytest

from jvpn.bench.net import ECHO, ECHO_PORT, read_probes, start_prober, stop_prober
from jvpn.lab.addresses import (
    GW_INNER,
    LTE_IP,
    UPLINK_METRIC,
    UPLINK_ROUTER_IF,
    UPLINK_ROUTER_IP,
    WIFI_IP,
)
from jvpn.lab.running import lab_policy
from jvpn.lab.tunnel import TunnelLab

pytestmark = pytest.mark.kernel


def _bound(tl) -> str:
    [(_iface, sessions)] = tl.cli_json("sessions", "gw0").items()
    return sessions[0]["bound"]


def _client_events(tl, event_type: str) -> list[dict]:
    import json  # noqa: PLC0415

    if not tl.client_events.exists():
        return []
    return [e for e in map(json.loads, tl.client_events.read_text().splitlines())
            if e.get("event_type") == event_type]


@pytest.fixture
def tl(tmp_path):
    policy = lab_policy()
    t = TunnelLab(tmp_path, policy=policy).up()  # the client reads it too (running.py)
    yield t
    t.down()


def _echo_stream(tl, seconds: float):
    tl.lab.spawn("gw", sys.executable, "-c", ECHO, GW_INNER, str(ECHO_PORT))
    log = tl.tmp / "probe.txt"
    return start_prober(tl.lab, "cl", GW_INNER, seconds, log), log


def _first_echo_after(samples, t0: float) -> float | None:
    after = [got for _n, sent, got in samples if sent >= t0]
    return min(after) - t0 if after else None


def test_a_silent_uplink_is_left_within_a_second(tl):
    prober, log = _echo_stream(tl, 30)
    time.sleep(3.0)  # heartbeats and probes measured: lte proven
    assert _bound(tl).startswith(WIFI_IP)
    r1 = UPLINK_ROUTER_IF["wifi"]
    tl.lab.run("rt", "nft", "add table inet jb; add chain inet jb f { type filter hook forward "
               f"priority 0; }}; add rule inet jb f iifname {r1} drop; "
               f"add rule inet jb f oifname {r1} drop")
    t0 = time.monotonic()
    tl.wait(lambda: _bound(tl).startswith(LTE_IP), "the move to lte")
    time.sleep(1.5)
    stop_prober(prober, log)
    gap = _first_echo_after(read_probes(log), t0)
    assert gap is not None and gap < 1.0, gap
    [vol] = _client_events(tl, "PathVolatile")[:1]
    assert vol["reason_code"] in ("consecutive_drop_exceeded", "heartbeat_timeout")
    assert vol["interface"] == "wifi"
    [sel] = _client_events(tl, "PathSelected")[:1]
    assert sel["candidate_interface"] == "lte"


def test_a_planned_move_loses_no_echo(tmp_path):
    t = TunnelLab(tmp_path, policy=lab_policy())
    t.lab.up()
    try:
        t.lab.link("cl", "wifi", "down")  # the client starts on lte alone
        _start(t)
        assert _bound(t).startswith(LTE_IP)
        prober, log = _echo_stream(t, 40)
        time.sleep(1.0)
        t.lab.link("cl", "wifi", "up")
        t.lab.run("cl", "ip", "route", "replace", "default", "via", UPLINK_ROUTER_IP["wifi"],
                  "dev", "wifi", "metric", str(UPLINK_METRIC["wifi"]))
        t.wait(lambda: _bound(t).startswith(WIFI_IP), "the planned move to wifi", timeout=20)
        time.sleep(1.0)
        stop_prober(prober, log)
        samples = read_probes(log)
        sent_last = max(n for n, _s, _g in samples)
        got = {int(n) for n, _s, _g in samples}
        # from the first echo (start_prober waits for it: the echo server
        # may bind after the first probes left) to the last, which came back
        lost = [n for n in range(min(got), int(sent_last)) if n not in got]
        assert lost == [], f"{len(lost)} echoes lost: {lost[:20]}"
        # a planned move (or, on a loaded machine whose queues delay the
        # echoes past the loss timeout, a move off a path measured lossy)
        sel = _client_events(t, "PathSelected")
        assert any(e["candidate_interface"] == "wifi" for e in sel), sel
    finally:
        t.down()


def _start(t: TunnelLab) -> None:
    """TunnelLab.up's steps once the lab's namespaces exist."""
    from jvpn.lab.addresses import PORT, ROUTER_GW_IF  # noqa: PLC0415

    t.nat_on((ROUTER_GW_IF,))
    if t.xdp_on:
        out = t.jvpn_in("gw", t.env, "attach", "gw0", "--port", str(PORT))
        assert out.returncode == 0, out.stderr
    t.start_gateway()
    t.start_client()


def test_link_down_still_fails_over(tl):
    prober, log = _echo_stream(tl, 30)
    time.sleep(2.0)
    tl.lab.link("cl", "wifi", "down")
    t0 = time.monotonic()
    tl.wait(lambda: _bound(tl).startswith(LTE_IP), "the move to lte")
    time.sleep(1.5)
    stop_prober(prober, log)
    gap = _first_echo_after(read_probes(log), t0)
    assert gap is not None and gap < 1.0, gap
