"""The client's candidate set (jvpn/client_candidates.py): ranking and the
bound, sockets opened and closed with the candidates, the probe schedule
(probe_interval_ms with jitter, one probe in flight at a time), and
which probe replies count (docs/protocol.md "Probing the candidates")."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

from jvpn import client_candidates
from jvpn.client_candidates import Candidates, Uplink, rank
from jvpn.policy import Policy
from jvpn.rtnl import Link, Route

WIFI, LTE, ETH, USB = (Uplink("10.0.1.2", 2, "wifi", 10), Uplink("10.0.2.2", 3, "lte", 20),
                       Uplink("10.0.3.2", 4, "eth", 5), Uplink("10.0.4.2", 5, "usb", 30))


class Sock:
    def __init__(self, u):
        self.uplink, self.closed = u, False

    def close(self):
        self.closed = True


P = Policy()


def make(policy=P, rand=lambda: 0.5):
    now = [0]
    c = Candidates(policy, lambda: now[0], rand, Sock)
    return c, now


def test_rank_puts_the_active_and_preferred_first_then_the_metric():
    got = rank([USB, ETH, LTE, WIFI], active=LTE.key, preferred=WIFI.key, limit=3)
    assert got == [LTE, WIFI, ETH]


def test_max_candidate_count_bounds_the_candidates():
    c, _ = make(replace(Policy(), max_candidate_count=2))
    added, _ = c.refresh([WIFI, LTE, ETH, USB], active=WIFI.key, preferred=WIFI.key)
    assert added == [ETH]  # the active one is the client's: counted, not owned
    c3, _ = make()
    added3, _ = c3.refresh([WIFI, LTE, ETH, USB], active=WIFI.key, preferred=WIFI.key)
    assert set(added3) == {LTE, ETH}


def test_a_gone_candidate_loses_its_socket_unless_kept():
    c, _ = make()
    c.refresh([WIFI, LTE, ETH], active=WIFI.key, preferred=WIFI.key)
    lte_sock, eth_sock = c.paths[LTE.key].sock, c.paths[ETH.key].sock
    _, removed = c.refresh([WIFI], active=WIFI.key, preferred=WIFI.key, keep=frozenset({ETH.key}))
    assert removed == [LTE] and lte_sock.closed and not eth_sock.closed


def test_probes_every_probe_interval_with_jitter():
    for interval in (1000, 300):
        c, _ = make(replace(P, probe_interval_ms=interval), rand=lambda: 1.0)
        c.refresh([WIFI, LTE], active=WIFI.key, preferred=WIFI.key)
        [(lte, pid)] = c.due(0)
        assert c.reply(lte.sock, pid, 20) is lte
        assert c.due(int(interval * 1.1) - 1) == []
        assert len(c.due(int(interval * 1.1))) == 1


def test_probe_ids_are_the_clients_own_counter():
    c, _ = make()
    c.refresh([WIFI, LTE, ETH], active=WIFI.key, preferred=WIFI.key)
    ids = []
    for _ in range(2):
        [(p, pid)] = c.due(0)
        c.reply(p.sock, pid, 10)
        ids.append(pid)
    assert ids == [1, 2]


def test_one_probe_in_flight_at_a_time_across_the_candidates():
    """The gateway raises the gate's probe floor to each probe it verifies:
    a probe that overtook another of ours would have the other dropped as a
    replay. So the next probe leaves only once the last one was answered or
    counted lost, the longest-due candidate first; two candidates answering
    in 50 ms are each still probed every probe_interval_ms."""
    c, _ = make()
    c.refresh([WIFI, LTE, ETH], active=WIFI.key, preferred=WIFI.key)
    [(first, pid)] = c.due(0)
    assert c.in_flight() and c.due(10) == [] and c.due(10_000) == []
    c.tick(1_001)  # lost at its loss timeout (400 ms before any sample): the next may go
    [(again, pid2)] = c.due(1_001)  # its follow-up first (see the test below)
    assert again is first and pid2 == pid + 1 and c.due(1_001) == []
    assert c.reply(first.sock, pid2, 1_051) is first and not c.in_flight()
    [(second, pid3)] = c.due(1_051)
    assert second is not first and pid3 == pid2 + 1
    assert c.reply(second.sock, pid3, 1_101) is second and not c.in_flight()
    sent = {first.uplink.key: [0, 1_001], second.uplink.key: [1_051]}
    now = 1_101
    while now < 12_000:
        now += 10
        c.tick(now)
        for p, i in c.due(now):
            sent[p.uplink.key].append(now)
            assert c.reply(p.sock, i, now + 50) is p  # answered in 50 ms
    for times in sent.values():
        gaps = [b - a for a, b in pairwise(times[1:])]  # (the first ones waited)
        assert gaps and all(1_000 <= g <= 1_010 for g in gaps), times


def test_a_lost_probe_is_followed_by_one_on_the_same_candidate_first_once():
    """Review D: a probe counted lost may only be late; another candidate's
    probe would raise the gate's probe floor past it (it then dies there)
    and leave its candidate unproven when a failover needs it. So the next
    probe goes on the same path at once, which cannot overtake the late one.
    Once per loss streak: a dead candidate's follow-up is lost too, and the
    others are probed next, not starved."""
    c, _ = make()
    c.refresh([WIFI, LTE, ETH], active=WIFI.key, preferred=WIFI.key)
    [(dead, _first)] = c.due(0)
    c.tick(1_001)  # lost
    [(again, _pid)] = c.due(1_001)
    assert again is dead  # at once, before the other (due since 0)
    c.tick(2_100)  # its follow-up lost too
    [(other, pid3)] = c.due(2_100)
    assert other is not dead
    assert c.reply(other.sock, pid3, 2_150) is other
    assert dead.health.last_answered is False  # never eligible unanswered


def test_a_reply_counts_once_only_outstanding_only_on_its_socket():
    c, _ = make()
    c.refresh([WIFI, LTE, ETH], active=WIFI.key, preferred=WIFI.key)
    [(p, pid)] = c.due(0)
    other = next(q for q in c.paths.values() if q is not p)
    assert c.reply(other.sock, pid, 20) is None  # the other socket
    assert c.reply(p.sock, 999, 20) is None  # never sent
    assert c.reply(p.sock, pid, 20) is p
    assert c.reply(p.sock, pid, 25) is None  # twice
    assert p.health.decided_count() == 1 and p.health.rtt.srtt == 20


def test_a_lost_probe_is_forgotten_and_its_late_reply_ignored():
    c, _ = make()
    c.refresh([WIFI, LTE], active=WIFI.key, preferred=WIFI.key)
    [(lte, pid)] = c.due(0)
    c.tick(1001)
    assert lte.health.last_answered is False
    assert c.reply(lte.sock, pid, 1002) is None


def test_take_and_adopt_move_a_path_between_active_and_candidate():
    c, _ = make()
    c.refresh([WIFI, LTE], active=WIFI.key, preferred=WIFI.key)
    [(lte, pid)] = c.due(0)
    taken = c.take(LTE.key)
    assert taken is lte and c.reply(lte.sock, pid, 10) is None and not lte.sock.closed
    c.adopt(WIFI, Sock(WIFI), lte.health)
    assert WIFI.key in c.paths


def test_the_active_path_is_never_a_candidate_too():
    c, _ = make()
    c.refresh([WIFI, LTE], active=WIFI.key, preferred=WIFI.key)
    lte = c.paths[LTE.key]
    _, removed = c.refresh([LTE], active=LTE.key, preferred=LTE.key)  # lte is active now
    assert removed == [LTE] and lte.sock.closed and c.paths == {}


class FakeRtnl:
    """Links with their flags; each has a route to the gateway through it."""

    def __init__(self, links):
        self._links = links

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        return False

    def links(self):
        return self._links

    def route_get(self, _dst, oif=None, mark=None):
        return Route(oif=oif, prefsrc=f"10.0.{oif}.2", gateway=f"10.0.{oif}.1", priority=0,
                     mtu=None)

    def addresses(self, _index):
        return []


def test_discovery_lists_only_links_that_are_up_with_a_carrier(monkeypatch):
    """Issue 15: an uplink whose link is down, or up without a carrier (a
    Wi-Fi that lost its association, a veth whose peer went down), is no
    candidate: a switch to it cannot send."""
    up, running = client_candidates.IFF_UP, client_candidates.IFF_RUNNING
    links = [Link(2, "wifi", up | running, 1500), Link(3, "lte", up, 1500),
             Link(4, "eth", running, 1500), Link(1, "lo", up | running | 0x8, 65536),
             Link(5, "tun0", up | running, 1400)]
    monkeypatch.setattr(client_candidates, "Rtnl", lambda: FakeRtnl(links))
    found = client_candidates.discover("192.0.2.1", None, frozenset({"tun0"}))
    assert [u.ifname for u in found] == ["wifi"]
