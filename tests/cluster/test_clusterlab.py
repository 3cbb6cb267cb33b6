"""The cluster lab's topology itself (jvpn/clusterlab.py): the anycast VIP
lands on gateway A from Wi-Fi and on B from LTE, both gateways reach etcd over
their management links, the backend's route follows the session owner in
etcd, and down() leaves nothing behind. Most tests run no jvpn process; the
last one (smoke) starts both gateways and the client."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from jvpn.lab.addresses import CLIENT_INNER, LTE_IP, SITES, SVC_IP, VIP, WIFI_IP
from jvpn.lab.cluster import ClusterLab
from jvpn.lab.netns import NS_PATTERN
from jvpn.lab.wait import wait_until
from kits.cluster_kit import need_etcd

pytestmark = pytest.mark.kernel

# replies with its namespace role, so the prober knows which gateway answered
RESPONDER = r"""
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[2])))
print("ready", flush=True)
while True:
    b, a = s.recvfrom(100); s.sendto(json.dumps([sys.argv[1], a[0]]).encode(), a)
"""

HEALTH = ("import sys, urllib.request; "
          "print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())")
PROBE_PORT = 7070
A_SVC, B_SVC = SITES["a"].svc_ip, SITES["b"].svc_ip




@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    """The topology with etcd and the announcer, no XDP, no jvpn process."""
    need_etcd()
    c = ClusterLab(tmp_path_factory.mktemp("cluster"), xdp=False).up()
    yield c
    c.down()


def _responders(c: ClusterLab) -> list[subprocess.Popen]:
    out = []
    for role in ("gw", "gwb"):
        p = subprocess.Popen(c.lab.cmd(role, sys.executable, "-u", "-c", RESPONDER, role,
                                       str(PROBE_PORT)), stdout=subprocess.PIPE, text=True)
        c.lab.procs.append(p)
        assert p.stdout.readline().strip() == "ready"
        out.append(p)
    return out


def _probe(c: ClusterLab, role: str = "cl") -> tuple[str, str, tuple]:
    """(responder's role, the source it saw, the reply's source address)."""
    with c.lab.socket(role, socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        for _ in range(10):  # the first packets after an uplink change may wait for ARP
            s.sendto(b"?", (VIP, PROBE_PORT))
            try:
                data, addr = s.recvfrom(200)
            except TimeoutError:
                continue
            who, seen = json.loads(data)
            return who, seen, addr
    raise AssertionError(f"no answer from {VIP} in {role}")


def _svc_route(c: ClusterLab, addr: str) -> str:
    return c.lab.run("svc", "ip", "-4", "route", "show", f"{addr}/32").stdout.strip()


def _put(c: ClusterLab, sid: int, owner: str, state: str, inner: str) -> None:
    import etcd3gw

    rec = {"session_id": sid, "owner": owner, "state": state, "inner_addr": inner}
    etcd3gw.client(host="127.0.0.1", port=c.etcd.port).put(
        f"/jvpn/sessions/{sid:016x}", json.dumps({"record": json.dumps(rec), "secrets": ""}))




def test_the_new_roles_are_cleaned_up_after_a_crash():
    assert NS_PATTERN.match("jl4194300x0abc-gwb") and NS_PATTERN.match("jl4194300x0abc-svc")


def test_anycast_wifi_lands_on_a_lte_on_b(cl):
    procs = _responders(cl)
    try:
        assert _probe(cl) == ("gw", WIFI_IP, (VIP, PROBE_PORT))  # replies leave from the VIP
        assert _probe(cl, "atk")[0] == "gw"
        cl.use_uplink("lte")
        assert _probe(cl) == ("gwb", LTE_IP, (VIP, PROBE_PORT))
        cl.use_uplink("wifi")
        assert _probe(cl)[:2] == ("gw", WIFI_IP)
    finally:
        cl.use_uplink("wifi")
        for p in procs:
            p.kill()
            p.wait()


def test_the_backend_is_reachable_from_both_gateways(cl):
    for s in SITES.values():
        assert cl.lab.run(s.role, "ping", "-c", "1", "-W", "2", SVC_IP, check=False).returncode \
            == 0, s.role


def test_both_gateways_reach_etcd_over_their_management_link(cl):
    for name, s in SITES.items():
        url = f"http://{cl.mgmt_root_ip(name)}:{cl.etcd.port}/health"
        out = cl.lab.run(s.role, sys.executable, "-c", HEALTH, url, timeout=20)
        assert '"health":"true"' in out.stdout.replace(" ", ""), (name, out.stdout)
    # and the configs point each gateway at its own link
    conf = (cl.tmp / "gateway-b.conf").read_text()
    assert f"Store = etcd://{cl.mgmt_root_ip('b')}:{cl.etcd.port}" in conf


def test_the_backend_route_follows_the_owner_in_etcd(cl):
    inner = "10.99.0.77"
    before = cl.announcer.announced
    _put(cl, 0xAA, "gw-a", "ATTACHED", inner)
    wait_until(lambda: f"via {A_SVC}" in _svc_route(cl, inner), "route via A")
    _put(cl, 0xAA, "gw-b", "VOLATILE", inner)  # not attached: no announcement
    time.sleep(0.5)
    assert f"via {A_SVC}" in _svc_route(cl, inner)
    _put(cl, 0xAA, "gw-b", "ATTACHED", inner)
    wait_until(lambda: f"via {B_SVC}" in _svc_route(cl, inner), "route via B")
    assert cl.announcer.announced - before == 2
    assert cl.announcer.announcements[-2:] == [(inner, "gw-a"), (inner, "gw-b")]


def test_the_announcer_survives_an_etcd_restart(cl):
    inner = "10.99.0.78"
    _put(cl, 0xAB, "gw-a", "ATTACHED", inner)
    wait_until(lambda: f"via {A_SVC}" in _svc_route(cl, inner), "route via A")
    cl.etcd.stop()
    time.sleep(1.5)  # the announcer notices (its scan fails) and keeps retrying
    cl.etcd.start()
    _put(cl, 0xAB, "gw-b", "ATTACHED", inner)
    wait_until(lambda: f"via {B_SVC}" in _svc_route(cl, inner), "route via B after restart")
    assert cl.announcer.errors  # it did see the outage


def test_nat_on_both_router_ports(tmp_path):
    """With the carrier NAT, each gateway sees the router's address on its
    own link, and its reply (from the VIP) still makes it back."""
    need_etcd()
    c = ClusterLab(tmp_path, nat=True, xdp=False).up()
    try:
        _responders(c)
        assert _probe(c) == ("gw", SITES["a"].router_ip, (VIP, PROBE_PORT))
        c.use_uplink("lte")
        assert _probe(c) == ("gwb", SITES["b"].router_ip, (VIP, PROBE_PORT))
    finally:
        c.down()


def test_down_leaves_nothing_behind(tmp_path):
    need_etcd()
    c = ClusterLab(tmp_path, xdp=False).up()
    mgmt = [c.mgmt_if(n) for n in SITES]
    assert all(subprocess.run(["ip", "link", "show", m], capture_output=True).returncode == 0
               for m in mgmt)
    c.down()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert c.lab.prefix not in netns
    for m in mgmt:
        assert subprocess.run(["ip", "link", "show", m], capture_output=True).returncode != 0
    assert c.etcd.proc.poll() is not None and not c.etcd.dir.exists()
    assert not c.announcer._thread.is_alive()


# ---------------------------------------------------------------- smoke: real jvpn processes

def test_smoke_both_gateways_and_a_client_on_a(tmp_path):
    """SMOKE (jvpn processes): both gateways on the etcd store with XDP, the
    client on Wi-Fi gets its session on A, and a stream reaches the backend
    through A (the backend's route comes from A's record in etcd)."""
    need_etcd()
    c = ClusterLab(tmp_path).up()
    try:
        c.start_all()
        wait_until(lambda: len(c.cli_json("a", "sessions")["gw0"]) == 1, "a session on gw-a", 15)
        # B holds only a standby (control-only) element for A's session
        wait_until(lambda: [e["state"] for e in c.cli_json("b", "sessions")["gw0"]] == ["REMOTE"],
                   "B's standby element", 5)
        [rec] = c.store().list()
        assert rec.owner == "gw-a" and rec.inner_addr == CLIENT_INNER
        wait_until(lambda: f"via {A_SVC}" in _svc_route(c, CLIENT_INNER), "route to the client")
        sent, got = c.stream(1 << 20, 1.0)(timeout=60)
        assert sent == got
    finally:
        c.down()
