"""The userspace tunnel's security holes (issue 10, items 9, 4 and 14), each
reproduced as an attack through DataChannel / Reassembler's public interface.

- Item 9, AEAD nonce reuse: no send counter is handed out unless a floor above
  it is durably stored, and a retired channel hands out nothing more.
- Item 4, reassembly: an authenticated peer cannot pin more than a bounded
  number of bytes, nor keep them forever.
- Item 14, cryptokey routing: an inner packet enters the TUN only with the
  session's own inner source address.

Names are looked up on the module at test time (``tunnel.X``), so each test
fails on its own assertion against code that lacks the mechanism.
"""

from __future__ import annotations

import ipaddress
import random
import struct
import threading
import tracemalloc

import pytest

from jvpn import tunnel
from jvpn.keys import derive_session_keys
from jvpn.store import StoreError

KEYS = derive_session_keys(7, b"a" * 32, b"b" * 32, b"c" * 32)
PEER = ipaddress.IPv4Address("10.99.0.2").packed
OTHER_PEER = ipaddress.IPv4Address("10.99.0.3").packed


class FloorStore:
    """The store's counter floor: ``set_floor`` is durable once it returns;
    ``fail`` makes it raise like a store that cannot write."""

    def __init__(self):
        self.floor = 0
        self.fail = False
        self.writes = 0

    def set_floor(self, floor: int) -> None:
        self.writes += 1
        if self.fail:
            raise StoreError("counter floor: database or disk is full")
        self.floor = max(self.floor, floor)


def gateway_channel(store: FloorStore, first_counter: int = 1, **kw) -> tunnel.DataChannel:
    return tunnel.DataChannel(KEYS, "gateway", first_counter=first_counter,
                              reserve=store.set_floor, **kw)


# ---------------------------------------------------------------- item 9: counters

def test_failed_reservation_hands_out_no_counter_above_the_persisted_floor():
    """The attack: make the floor write fail once (full disk, etcd outage).
    Old code raised the in-memory floor first, so every later call got a
    counter the store never saw: a restart reuses those nonces."""
    store = FloorStore()
    store.fail = True
    ch = gateway_channel(store)
    for _ in range(100):  # every call retries the write and fails the same way
        with pytest.raises(tunnel.CounterUnavailable):
            ch.next_counter()
    assert store.writes == 100
    with pytest.raises(tunnel.CounterUnavailable):
        ch.seal(b"x")  # nothing is sealed without a reserved counter
    store.fail = False
    c = ch.next_counter()
    assert c == 1 and c < store.floor  # nothing was skipped or used on the way


def test_a_counter_without_a_store_write_is_one_a_floor_written_elsewhere_covers():
    """Review k16r2 #3: a batch of TERMINATEs writes their floors in one
    transaction (``wanted_floor``, ``reserved``) and then seals with
    ``next_reserved``, which never writes and never hands out a counter at
    or above the durable floor."""
    store = FloorStore()
    ch = gateway_channel(store, reserve_block=16)
    with pytest.raises(tunnel.CounterUnavailable):
        ch.next_reserved_counter()  # nothing reserved yet: nothing handed out
    floor = ch.counter.wanted_floor()
    assert floor == 17 and store.writes == 0
    store.set_floor(floor)  # the caller's own (batched) write
    ch.counter.reserved(floor)
    assert ch.next_reserved_counter() == 1 and ch.counter.wanted_floor() is None
    assert store.writes == 1 and store.floor == 17


def test_reserve_failure_is_a_specific_error_with_the_cause():
    store = FloorStore()
    store.fail = True
    with pytest.raises(tunnel.CounterReserveFailed) as got:
        gateway_channel(store).next_counter()
    assert isinstance(got.value.__cause__, StoreError)
    assert "counter" in str(got.value)


def test_reservation_runs_ahead_and_never_behind():
    """Reserve a block ahead (hot path blocks rarely); a failing ahead write
    still lets counters below the durable floor out, and none at or above."""
    store, clock = FloorStore(), [0.0]
    ch = gateway_channel(store, reserve_block=100, clock=lambda: clock[0])
    handed = [ch.next_counter() for _ in range(1000)]
    assert handed == list(range(1, 1001))
    assert all(c < store.floor for c in handed)
    assert store.writes <= 1000 // 75 + 1  # about one write per 3/4 block
    assert store.floor - handed[-1] > 25  # the next block is already durable
    store.fail = True
    while True:
        try:
            c = ch.next_counter()
        except tunnel.CounterUnavailable:
            break
        assert c < store.floor
        clock[0] += 10  # ahead retries are paced by the clock, then every call
    assert ch.reserve_failures >= 1
    with pytest.raises(tunnel.CounterUnavailable):
        ch.next_counter()
    store.fail = False
    assert ch.next_counter() < store.floor


def test_skipped_counters_are_never_handed_out_and_stay_under_the_floor():
    """A skip (a reattach retry's: jvpn/client_reattach.py) leaves counters
    unused; the next one is above them and still under a durable floor."""
    store = FloorStore()
    ch = gateway_channel(store, reserve_block=100)
    first = ch.next_counter()
    ch.skip_counters(10_000)
    after = ch.next_counter()
    assert after == first + 10_001 and after < store.floor
    ch.skip_counters(-5)  # never backwards
    assert ch.next_counter() == after + 1


def test_concurrent_senders_with_a_flaky_store_never_exceed_the_floor():
    store, rng, lock = FloorStore(), random.Random(9), threading.Lock()
    real_write = store.set_floor

    def flaky(floor):
        with lock:
            store.fail = rng.random() < 0.5
        real_write(floor)

    ch = tunnel.DataChannel(KEYS, "gateway", reserve=flaky, reserve_block=16)
    got: list[int] = []

    def sender():
        for _ in range(500):
            try:
                c = ch.next_counter()
            except tunnel.CounterUnavailable:
                continue
            assert c < store.floor  # floors only grow: still true after return
            with lock:
                got.append(c)

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == len(set(got)) > 0
    assert max(got) < store.floor


def test_retire_waits_for_an_inflight_floor_write_and_ends_the_channel():
    """The handover race: a TUN thread is inside the floor write when the
    session is handed over. retire() must wait for it, return a floor no
    counter of this channel reaches, and hand out nothing afterwards."""
    store, entered, release = FloorStore(), threading.Event(), threading.Event()

    def slow_write(floor):
        entered.set()
        release.wait(5)
        store.set_floor(floor)

    ch = tunnel.DataChannel(KEYS, "gateway", reserve=slow_write)
    sent: list[int] = []
    sender = threading.Thread(target=lambda: sent.append(ch.next_counter()))
    sender.start()
    assert entered.wait(5)
    retired: list[int] = []
    retirer = threading.Thread(target=lambda: retired.append(ch.retire()))
    retirer.start()
    retirer.join(0.2)
    assert retirer.is_alive(), "retire() returned while a floor write was in flight"
    release.set()
    retirer.join(5)
    sender.join(5)
    assert sent and retired and sent[0] < retired[0] <= store.floor
    for call in (ch.next_counter, lambda: ch.seal(b"x"), lambda: ch.seal_packet(b"y" * 5000)):
        with pytest.raises(tunnel.ChannelRetired):
            call()


def test_retire_after_a_failed_inflight_write_returns_the_old_floor():
    entered, release, floor_before = threading.Event(), threading.Event(), 11

    def failing_write(floor):
        entered.set()
        release.wait(5)
        raise StoreError("etcd unavailable")

    ch2 = tunnel.DataChannel(KEYS, "gateway", first_counter=floor_before,
                             reserve=failing_write, reserve_block=10)
    errors: list[Exception] = []

    def send():
        try:
            ch2.next_counter()
        except tunnel.CounterUnavailable as e:
            errors.append(e)

    sender = threading.Thread(target=send)
    sender.start()
    assert entered.wait(5)
    retired: list[int] = []
    retirer = threading.Thread(target=lambda: retired.append(ch2.retire()))
    retirer.start()
    release.set()
    sender.join(5)
    retirer.join(5)
    assert errors and retired == [floor_before]  # nothing was handed out above it


def test_resume_after_a_refused_handover_continues_below_the_floor():
    store = FloorStore()
    ch = gateway_channel(store)
    first = ch.next_counter()
    floor = ch.retire()
    ch.resume()
    assert first < ch.next_counter() < floor


def test_channel_without_a_store_retires_at_the_next_counter():
    ch = tunnel.DataChannel(KEYS, "client")
    ch.next_counter()
    ch.next_counter()
    assert ch.retire() == 3


# ---------------------------------------------------------------- item 4: reassembly

def _fragment(pid: int, index: int, count: int, piece: bytes) -> bytes:
    return struct.pack("<HBB", pid, index, count) + piece


def test_an_authenticated_peer_cannot_pin_megabytes_in_the_reassembler():
    """The attack: first fragments of many packets, each announcing the most
    pieces, never completed. Old code held 32 x 255 x 1420 B (~11 MB) per
    session, forever."""
    r = tunnel.Reassembler(clock=lambda: 0.0)
    piece = b"\xaa" * tunnel.FRAG_PIECE
    real_count = -(-tunnel.MAX_INNER_PACKET // tunnel.FRAG_PIECE)  # a 65535-byte packet's
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for pid in range(200):
            for index in range(1, 255):
                r.add(_fragment(pid, index, 255, piece))
            for index in range(1, real_count):
                r.add(_fragment(1000 + pid, index, real_count, piece))
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert r.buffered_bytes <= tunnel.MAX_PENDING_BYTES
    assert held < 2 * tunnel.MAX_PENDING_BYTES
    assert r.drops["malformed"] == 200 * 254  # more pieces than any IP packet needs
    assert r.drops["evicted"] > 0


def test_incomplete_packets_expire():
    clock = [100.0]
    r = tunnel.Reassembler(clock=lambda: clock[0])
    r.add(_fragment(1, 0, 3, b"a" * 100))
    r.add(_fragment(1, 1, 3, b"b" * 100))
    assert r.buffered_bytes == 200
    clock[0] += tunnel.REASSEMBLY_TIMEOUT_S + 0.01
    r.expire()
    assert r.buffered_bytes == 0 and r.drops["expired"] == 1
    # the straggler no longer completes a packet from stale pieces
    assert r.add(_fragment(1, 2, 3, b"c" * 100)) is None


def test_expiry_also_happens_on_add():
    clock = [0.0]
    r = tunnel.Reassembler(clock=lambda: clock[0])
    r.add(_fragment(1, 0, 2, b"a"))
    clock[0] += tunnel.REASSEMBLY_TIMEOUT_S + 1
    r.add(_fragment(2, 0, 2, b"b"))
    assert r.drops["expired"] == 1 and r.buffered_bytes == 1


def test_malformed_fragments_are_refused_and_counted():
    r = tunnel.Reassembler(clock=lambda: 0.0)
    bad = [b"\x01\x00", _fragment(1, 0, 0, b"x"), _fragment(1, 3, 3, b"x"),
           _fragment(1, 0, 2, b"x" * (tunnel.MAX_FRAG_PIECE + 1)),
           _fragment(1, 0, tunnel.MAX_FRAGMENTS + 1, b"x")]
    for frag in bad:
        assert r.add(frag) is None
    assert r.drops["malformed"] == len(bad) and r.buffered_bytes == 0


def test_largest_inner_packet_still_reassembles_in_any_order():
    clock = [0.0]
    tx = tunnel.DataChannel(KEYS, "client")
    rx = tunnel.DataChannel(KEYS, "gateway", clock=lambda: clock[0])
    packet = bytes(range(256)) * 255 + b"\x01" * 255  # 65535 bytes
    msgs = tx.seal_packet(packet)
    assert len(msgs) == -(-len(packet) // tunnel.FRAG_PIECE)  # a default-sized channel
    got = None
    rng = random.Random(3)
    rng.shuffle(msgs)
    for m in msgs:
        _t, _flags, plain = rx.open(m)
        got = rx.reassembly.add(plain) or got
    assert got == packet and rx.reassembly.buffered_bytes == 0
    assert tx.seal_packet(b"z" * 65536) == []  # larger than any IPv4 packet


# ---------------------------------------------------------------- item 14: inner source

def ipv4(src: bytes, dst: bytes = b"\x0a\x63\x00\x01", payload: bytes = b"hello") -> bytes:
    total = 20 + len(payload)
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, 17, 0, src, dst) + payload


def test_spoofed_inner_source_is_refused_and_counted():
    """The attack: an authenticated client sends inner packets with another
    peer's address (or any) as source; old code wrote them to the TUN."""
    f = tunnel.InnerSourceFilter(PEER)
    assert f.accept(ipv4(PEER))
    assert not f.accept(ipv4(OTHER_PEER))
    assert not f.accept(ipv4(b"\x08\x08\x08\x08"))
    assert f.refused == {"spoofed": 2, "malformed": 0}


@pytest.mark.parametrize("packet", [
    b"",
    ipv4(PEER)[:19],                                    # shorter than a header
    b"\x60" + ipv4(PEER)[1:],                           # IPv6: no IPv6 address is allowed
    b"\x44" + ipv4(PEER)[1:],                           # header length 16 < 20
    b"\x4f" + ipv4(PEER)[1:],                           # header longer than the packet
    ipv4(PEER) + b"trailing",                           # total length disagrees
    ipv4(PEER)[:-1],                                    # truncated
], ids=["empty", "short", "ipv6", "ihl<5", "ihl>len", "trailing", "truncated"])
def test_malformed_inner_packets_are_refused(packet):
    f = tunnel.InnerSourceFilter(PEER)
    assert not f.accept(packet)
    assert f.refused == {"spoofed": 0, "malformed": 1}


def test_the_gateway_datapath_refuses_spoofed_packets_whole_or_fragmented():
    client = tunnel.DataChannel(KEYS, "client")
    gw = tunnel.DataChannel(KEYS, "gateway", allowed_inner_src=PEER)
    big_spoof = ipv4(OTHER_PEER, payload=b"s" * 5000)
    big_good = ipv4(PEER, payload=b"g" * 5000)
    delivered = []
    for packet in (ipv4(PEER), ipv4(OTHER_PEER), big_spoof, big_good):
        for m in client.seal_packet(packet):
            _t, flags, payload = gw.open(m)
            got = gw.inner_packet(flags, payload)
            if got is not None:
                delivered.append(got)
    assert delivered == [ipv4(PEER), big_good]
    assert gw.inner_filter.refused["spoofed"] == 2


def test_the_client_datapath_has_no_source_filter():
    """The gateway routes for the whole network: the client takes any source."""
    client = tunnel.DataChannel(KEYS, "client")
    gw = tunnel.DataChannel(KEYS, "gateway")
    _t, flags, payload = client.open(gw.seal(ipv4(b"\x08\x08\x08\x08")))
    assert client.inner_packet(flags, payload) == ipv4(b"\x08\x08\x08\x08")
    assert client.inner_filter is None
