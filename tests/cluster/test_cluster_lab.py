"""The cluster end to end (issue 5): two `jvpn-xdp gateway up` processes with
XDP gates on one etcd, a `jvpn-xdp client up` that moves between their
anycast catchments, a TCP stream to a backend behind both."""

from __future__ import annotations

import time

import pytest

from jvpn.bench.handoff import handoff_trials
from jvpn.lab.cluster import ClusterLab
from jvpn.lab.wait import wait_until
from kits.cluster_kit import need_etcd

pytestmark = pytest.mark.kernel




@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    need_etcd()
    c = ClusterLab(tmp_path_factory.mktemp("cluster"), gateway_extra="LeaseTTL = 2\n").up()
    try:
        c.start_all()
        yield c
    finally:
        c.down()


@pytest.fixture(autouse=True)
def ready(cl):
    """Each test starts from the same place (both gateways up, the session
    ATTACHED on A), whatever the test before it left behind."""
    cl.ready("a")


def _record(cl: ClusterLab):
    store = cl.store()
    try:
        [rec] = store.list()
        return rec
    finally:
        store.close()




def _reasons(cl: ClusterLab, name: str, event_type: str) -> list[str]:
    return [e["reason_code"] for e in cl.gateway_events(name) if e["event_type"] == event_type]


def test_stream_survives_a_to_b_to_a(cl):
    assert _record(cl).owner == "gw-a"
    finish = cl.stream(3_000_000, 6.0)
    time.sleep(1.5)
    cl.use_uplink("lte")
    wait_until(lambda: _record(cl).owner == "gw-b" and _record(cl).state.name == "ATTACHED",
               "the session on B")
    time.sleep(1.5)
    cl.use_uplink("wifi")
    wait_until(lambda: _record(cl).owner == "gw-a" and _record(cl).state.name == "ATTACHED",
               "the session back on A")
    sent, received = finish()
    assert sent == received and sent["bytes"] == 3_000_000
    assert "HANDOFF_RELEASED" in _reasons(cl, "a", "OwnershipHandoff")
    assert "HANDOFF_RELEASED" in _reasons(cl, "b", "OwnershipHandoff")
    assert "HANDOFF_REQUESTED" in _reasons(cl, "b", "OwnershipHandoff")


def test_sessions_shows_the_owner_on_each_gateway(cl):
    rec = _record(cl)
    sid = f"{rec.session_id:016x}"
    on_a = {s["session_id"]: s for s in cl.cli_json("a", "sessions")["gw0"]}
    on_b = {s["session_id"]: s for s in cl.cli_json("b", "sessions")["gw0"]}
    owner = rec.owner
    serving, standby = (on_a, on_b) if owner == "gw-a" else (on_b, on_a)
    assert serving[sid]["owner"] == owner and serving[sid]["state"] == rec.state.name
    assert serving[sid]["fence"] == rec.owner_lease != 0
    assert standby[sid]["owner"] == owner and standby[sid]["state"] == "REMOTE"


def test_no_packet_is_accepted_by_both_gateways_during_handoffs(cl):
    """Four handoffs with the client's traffic mirrored to the old owner from
    the old transport: the XDP taps of A and B never share a counter."""
    sid = _record(cl).session_id
    finish = cl.stream(4_000_000, 7.0, port=5002)
    time.sleep(0.5)
    got = handoff_trials(cl, sid, trials=4, settle_s=1.0)
    sent, received = finish()
    assert sent == received
    assert got["dual_active_packets"] == 0, got
    assert all(ms is not None for ms in got["to_owner_ms"]), got
    # the mirror reached the old owner, and both gateways carried the session
    assert got["mirrored"] > 0 and min(got["accepted"].values()) > 100, got


def test_sigkill_owner_b_takes_over_after_the_lease(cl):
    rec = _record(cl)
    assert rec.owner == "gw-a"
    finish = cl.stream(2_000_000, 5.0, port=5003)
    time.sleep(1.0)
    cl.kill_gateway("a")
    killed = time.monotonic()
    cl.use_uplink("lte")
    wait_until(lambda: _record(cl).owner == "gw-b" and _record(cl).state.name == "ATTACHED",
               "B to take over", 15)
    took = time.monotonic() - killed
    sent, received = finish()
    assert sent == received
    assert "OWNER_LEASE_EXPIRED" in _reasons(cl, "b", "OwnershipHandoff")
    # not before A's lease (2 s) could have run out, not long after
    assert 1.0 < took < 2 + 3, took
    on_b = cl.cli_json("b", "sessions")["gw0"]
    assert [s["owner"] for s in on_b] == ["gw-b"]
    cl.start_gateway("a")  # the restarted A stands by for B's session
    wait_until(lambda: [s["state"] for s in cl.cli_json("a", "sessions")["gw0"]] == ["REMOTE"],
               "A's standby element")
    cl.use_uplink("wifi")
    wait_until(lambda: _record(cl).owner == "gw-a", "the session back on the restarted A")


def test_a_stopped_owner_is_fenced_by_its_kernel(cl):
    """SIGSTOP: the daemon can do nothing, yet once its lease can no longer
    be proven its XDP program drops the session's data (the fence deadline
    the daemon wrote on its last refresh), and B can take over."""
    import signal

    owner = _record(cl).owner
    name = owner.removeprefix("gw-")
    uplink_to_other = "lte" if name == "a" else "wifi"
    proc = cl.gateways[name]
    proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(2.5)  # LeaseTTL = 2: past the deadline
        before = cl.cli_json(name, "stats")["gw0"]
        time.sleep(1.0)  # the client's keepalives and probes keep coming
        after = cl.cli_json(name, "stats")["gw0"]
        assert after["pass_data"]["packets"] == before["pass_data"]["packets"]
        assert after["pass_keepalive"]["packets"] == before["pass_keepalive"]["packets"]
        assert after["drop_state"]["packets"] > before["drop_state"]["packets"]
        cl.use_uplink(uplink_to_other)
        other = "gw-b" if name == "a" else "gw-a"
        wait_until(lambda: _record(cl).owner == other, "the other gateway to take over", 15)
    finally:
        proc.send_signal(signal.SIGCONT)


def test_ready_restarts_a_killed_owner_and_the_stream_survives(cl):
    """What a failed test may leave (its owner killed, the client elsewhere)
    is undone by ready() before the next test: the killed A restarts on its
    pinned maps, the session is ATTACHED on A again, and a TCP stream that
    was running through A all along completes intact."""
    finish = cl.stream(1_000_000, 3.0, port=5004)
    time.sleep(0.5)
    cl.kill_gateway("a")
    cl.ready("a")
    assert cl.gateways["a"].poll() is None
    sent, received = finish()
    assert sent == received and sent["bytes"] == 1_000_000
    assert _record(cl).owner == "gw-a"
