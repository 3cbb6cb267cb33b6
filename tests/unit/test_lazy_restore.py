"""Issue 15, a reconcile of 1M in 60 s (k18rec): a restored session's
DataChannel is made at its first use, not at the restore; the timer heap
is built once after the pass. The channel is made once whatever threads
use it first (two channels would be two send counters under one key:
nonce reuse), from the stored floor; the replay ceiling stays restored
eagerly; the timers are not postponed by the laziness."""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import pytest

from jvpn.gate import abi
from jvpn.gateway import table as table_module
from jvpn.gateway import timer_queue
from jvpn.gateway.table import AEAD_IDLE_MS
from jvpn.keys import derive_session_keys
from jvpn.policy import REJECT_AFTER_MESSAGES_MIN, default_policy
from jvpn.session import Event, State, Transport, apply, new_session
from jvpn.store.sqlite import SqliteStore
from jvpn.tunnel import CounterUnavailable, DataChannel
from kits.daemon_kit import PEER_INNER, AdmitAll, Clock, ipv4, make_gateway

NOW = 1_700_000_000_000
SID = 3000
FLOOR = 100  # the stored send-counter floor: the first counter after the restart


@pytest.fixture(autouse=True)
def _private_umask():
    old = os.umask(0o077)
    yield
    os.umask(old)


def _keys(sid: int):
    return derive_session_keys(sid, bytes([sid % 256]) * 32, b"\x06" * 32, b"\x07" * 32)


def _binding(sid: int) -> Transport:
    return Transport("192.0.2.1", 1000 + sid % 1000)


def _store(path, sids, floor: int = FLOOR) -> SqliteStore:
    store = SqliteStore(path)
    for sid in sids:
        rec, _tr = apply(new_session(sid, NOW - 1_000, owner="gw-test"), Event.ATTACH_OK,
                         NOW - 1_000, binding=_binding(sid))
        store.create(rec.with_(inner_addr=str(PEER_INNER[0]), keys_ms=NOW - 1_000),
                     _keys(sid).pack())
        store.set_floor(sid, floor)
    return store


def _restarted(tmp_path, sids=(SID,), floor: int = FLOOR, policy=None):
    clock = Clock(NOW)
    gw = make_gateway(tmp_path, store=_store(tmp_path / "s.db", sids, floor), gate=AdmitAll(),
                      clock=clock, policy=policy)
    gw.reconcile()
    return gw, clock


def test_a_restored_session_has_no_channel_until_its_first_use(tmp_path):
    gw, clock = _restarted(tmp_path)
    live = gw.table.get(SID)
    assert live.made_channel is None
    clock.ms += AEAD_IDLE_MS + 1  # the timers, the idle drop and the drop report make none
    gw.run_due_timers()
    gw.datapath.report_drops()
    assert gw.table.get(SID) is live and live.made_channel is None
    assert live.channel is live.made_channel  # made at the first use, then kept


def test_two_threads_using_a_restored_session_first_make_one_channel(tmp_path, monkeypatch):
    gw, _clock = _restarted(tmp_path)
    live = gw.table.get(SID)
    made = []

    class SlowChannel(DataChannel):
        __slots__ = ()

        def __init__(self, *args, **kwargs):
            made.append(self)
            time.sleep(0.05)  # the other thread asks meanwhile
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(table_module, "DataChannel", SlowChannel)
    start = threading.Barrier(2)
    got: list[DataChannel] = []

    def first_use():
        start.wait()
        got.append(live.channel)

    threads = [threading.Thread(target=first_use) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and got[0] is got[1] is made[0]
    counters = [live.channel.next_counter() for _ in range(2)]
    assert counters == [FLOOR, FLOOR + 1]  # one counter, from the stored floor


def test_a_restored_session_serves_its_client_from_the_stored_floor(tmp_path):
    gw, _clock = _restarted(tmp_path)
    live = gw.table.get(SID)
    client = DataChannel(_keys(SID), "client")
    binding = _binding(SID)
    packet = ipv4(PEER_INNER[0], payload=b"after the restart")
    gw.datapath.datagram(client.seal_packet(packet)[0], (binding.addr, binding.port))
    assert gw.tun.written[-1] == packet
    n = len(gw.sock.sent)
    gw.datapath.downstream(ipv4(PEER_INNER[1], dst=str(PEER_INNER[0])))
    [(msg, _to)] = gw.sock.sent[n:]
    assert client.open(msg)[0] == abi.MSG_DATA
    assert live.send_upcoming() == FLOOR + 1  # its first counter was the stored floor


def test_a_session_retired_before_its_first_use_sends_nothing_until_resumed(tmp_path):
    gw, _clock = _restarted(tmp_path)
    live = gw.table.get(SID)
    live.retire()
    with pytest.raises(CounterUnavailable):
        live.channel.next_counter()
    live.resume()
    assert live.channel.next_counter() == FLOOR


def test_message_expiry_of_a_restored_session_is_not_postponed_by_its_unmade_channel(tmp_path):
    """The sent count of an unused session is its stored floor: keys worn
    by it are due at the first tick and end there (the channel made for
    its TERMINATE, under a counter above the floor)."""
    p = dataclasses.replace(default_policy(), reject_after_messages=REJECT_AFTER_MESSAGES_MIN,
                            rekey_after_messages=REJECT_AFTER_MESSAGES_MIN // 2)
    worn = REJECT_AFTER_MESSAGES_MIN + 2
    gw, _clock = _restarted(tmp_path, sids=(SID, SID + 1), floor=worn, policy=p)
    assert gw.table.timers.due_time(SID) <= NOW + 1
    gw.run_due_timers()
    assert SID not in gw.table.sessions


def test_time_expiry_of_a_restored_session_is_on_time(tmp_path):
    gw, clock = _restarted(tmp_path)
    expires = NOW - 1_000 + gw.policy.reject_after_ms
    assert gw.table.timers.due_time(SID) <= expires
    clock.ms = expires
    gw.run_due_timers()
    assert SID not in gw.table.sessions or gw.table.get(SID).record.state is not State.ATTACHED


def test_the_reconcile_builds_the_timer_heap_once(tmp_path, monkeypatch):
    pushes = []
    real = timer_queue.heapq.heappush
    monkeypatch.setattr(timer_queue.heapq, "heappush",
                        lambda heap, item: (pushes.append(item), real(heap, item)))
    sids = list(range(SID, SID + 20))
    gw, _clock = _restarted(tmp_path, sids=sids)
    monkeypatch.undo()
    ours = [item for item in pushes if isinstance(item, tuple) and item[-1] in sids]
    assert ours == []  # one heapify after the pass, no push per session
    assert gw.table.timers.stale() == 0 and len(gw.table.timers) == len(sids)
    first = min(gw.table.timers.due_time(sid) for sid in sids)
    assert gw.table.timers.pop_due(first - 1) == []
    assert gw.table.timers.pop_due(first)  # the heap holds every due time


# -- the session's Traffic made at its first count (k18rec2) --

def test_a_restored_idle_session_has_no_traffic_object_and_lists_zeros(tmp_path):
    from jvpn.gateway import snapshot  # noqa: PLC0415

    gw, _clock = _restarted(tmp_path)
    live = gw.table.get(SID)
    [row] = snapshot.sessions(gw)
    assert (row["tx_packets"], row["tx_bytes"]) == (0, 0)
    assert live._traffic is None  # the listing made none
    client = DataChannel(_keys(SID), "client")
    binding = _binding(SID)
    packet = ipv4(PEER_INNER[0], payload=b"counted")
    gw.datapath.datagram(client.seal_packet(packet)[0], (binding.addr, binding.port))
    assert live.traffic.rx_packets == 1 and live.traffic.delivered == 1


def test_two_loops_counting_first_into_a_session_make_one_traffic(tmp_path, monkeypatch):
    gw, _clock = _restarted(tmp_path)
    live = gw.table.get(SID)
    made = []

    class SlowTraffic(table_module.Traffic):
        __slots__ = ()

        def __init__(self):
            made.append(self)
            time.sleep(0.05)  # the other loop counts meanwhile
            super().__init__()

    monkeypatch.setattr(table_module, "Traffic", SlowTraffic)
    start = threading.Barrier(2)

    def udp_loop():
        start.wait()
        live.traffic.received(100)

    def tun_loop():
        start.wait()
        live.traffic.sent([b"x" * 60])

    threads = [threading.Thread(target=udp_loop), threading.Thread(target=tun_loop)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1
    assert live.traffic.figures() == {"rx_packets": 1, "rx_bytes": 100,
                                      "tx_packets": 1, "tx_bytes": 60}

