"""Issue 13, first "Done when": a TCP stream through the tunnel carries on
across at least 50 rekeys, a jump (the client's uplink changes) and a NAT
rebinding, with sha256-identical bytes and no new handshake: the same
session from start to end, its key epoch past 50 one step at a time on both
ends (KeyRotated), and never a KeyExpired (docs/protocol.md "Rekey").
Then the kernel during and after the overlap: old-key data, replays."""

from __future__ import annotations

import socket
import time

import pytest

from jvpn import wire
from jvpn.gate import abi
from jvpn.keys import Ephemeral
from jvpn.lab import frames
from jvpn.lab.addresses import CLIENT_INNER, GW_INNER, REPLAY_SINK_PORT
from jvpn.lab.capture import Sniffer
from jvpn.lab.running import rekey_policy
from jvpn.lab.tunnel import TunnelLab
from jvpn.tunnel import DataChannel
from kits.rekey_lab_kit import (
    counters,
    events_of,
    handshakes,
    one_session,
    opens,
    rotated_epochs,
    store_ring,
)
from kits.threat_kit import attacker, delta, settle

pytestmark = pytest.mark.kernel

REKEY_MS = 200      # a rekey every 200 ms: 50 of them within ~12 s of stream
REJECT_MS = 3_000   # generous: a loaded lab machine must not expire keys by accident
OVERLAP_MS = 80
WANTED = 50


def _accepts(tl: TunnelLab) -> int:
    return sum(1 for e in events_of(tl, "ReattachResult")
               if e["reason_code"] == "REATTACH_ACCEPT")


def test_stream_carries_on_across_50_rekeys_a_jump_and_a_nat_rebinding(tmp_path):
    tl = TunnelLab(tmp_path, nat=True,
                   policy=rekey_policy(REKEY_MS, REJECT_MS, OVERLAP_MS)).up()
    try:
        first = one_session(tl)
        t0_ms = time.time() * 1000
        finish = tl.stream(12_000_000, 22.0)
        time.sleep(3.0)
        tl.lab.link("cl", "wifi", "down")  # the jump: wifi -> lte, a new source
        tl.wait(lambda: _accepts(tl) >= 1, "the reattach after the jump")
        time.sleep(3.0)
        tl.lab.nat_rebind()                # the carrier NAT forgets: a new port
        tl.wait(lambda: _accepts(tl) >= 2, "the reattach after the NAT rebinding")
        # while the stream still runs (22 s): 50 rekeys inside it
        tl.wait(lambda: len(set(rotated_epochs(tl))) >= WANTED, f"{WANTED} rekeys",
                timeout=25)
        during = len(set(rotated_epochs(tl)))
        sent, received = finish()
        t1_ms = time.time() * 1000
        last = one_session(tl)
        rec, ring = store_ring(tl)
    finally:
        tl.down()
    assert sent == received and sent["bytes"] == 12_000_000
    assert last["session_id"] == first["session_id"] and last["state"] == "ATTACHED"
    assert f"{rec.session_id:016x}" == first["session_id"]
    assert len(handshakes(tl)) == 1  # never a silent new session
    assert not [e for e in tl.client_event_list() if e.get("reason_code") == "HANDSHAKE_OK"][1:]
    rotated = events_of(tl, "KeyRotated")
    inside = {e["key_epoch"] for e in rotated if t0_ms <= e["ts_ms"] <= t1_ms}
    assert during >= WANTED and len(inside) >= WANTED, (during, len(inside))
    epochs = rotated_epochs(tl)
    assert epochs == sorted(epochs), epochs  # never back to an older epoch
    assert sorted(set(epochs)) == list(range(1, len(set(epochs)) + 1)), epochs  # one step each
    assert {e["session_id"] for e in rotated} == {first["session_id"]}
    client_epochs = [e["key_epoch"] for e in tl.client_event_list()
                     if e["event_type"] == "KeyRotated"]
    assert client_epochs == list(range(1, len(client_epochs) + 1))  # the client: once each
    assert len(client_epochs) >= WANTED
    assert rec.key_epoch == ring.epoch >= WANTED
    assert not events_of(tl, "KeyExpired")
    assert not events_of(tl, "SessionTerminated")


# ---------------------------------------------------------------- old keys, replays (kernel)
# A slower rekey (every 6 s, 2 s of overlap): room to act inside the overlap
# and between its end and the next rekey.
SLOW_REKEY_MS, SLOW_REJECT_MS, SLOW_OVERLAP_MS = 6_000, 12_000, 2_000
DROP_KEY_PHASE = "drop_key_phase"  # the gate's counter (jvpn-xdp stats)


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    t = TunnelLab(tmp_path_factory.mktemp("rekeyslow"),
                  policy=rekey_policy(SLOW_REKEY_MS, SLOW_REJECT_MS, SLOW_OVERLAP_MS)).up()
    yield t
    t.down()


def _drops(tl: TunnelLab) -> dict[str, int]:
    return {k: v for k, v in counters(tl).items() if k.startswith("drop_")}


def _after_overlap(tl: TunnelLab, epoch: int) -> bool:
    """The ring is exactly ``epoch``, its predecessor dropped (no overlap)."""
    _rec, ring = store_ring(tl)
    return ring.epoch == epoch and ring.previous is None


def test_old_epoch_data_replayed_after_the_overlap_is_dropped_by_the_gate(slow):
    """A copy of the client's DATA from epoch E, replayed with the client's
    own source once E+1 is current and the overlap is over: the gate drops
    it on its key phase (drop_key_phase) and the inner datagram it carries
    never arrives."""
    tl = slow
    sink = Sink(tl)
    try:
        tl.wait(lambda: store_ring(tl)[1].previous is None, "a ring without overlap")
        _rec, ring = store_ring(tl)
        sniffer = Sniffer(tl.lab)
        try:
            with tl.lab.socket("cl", socket.AF_INET, socket.SOCK_DGRAM) as s:
                for i in range(5):
                    s.sendto(b"replay-me %d" % i, (GW_INNER, REPLAY_SINK_PORT))
                    time.sleep(0.05)
            tl.wait(lambda: sink.count() >= 5, "the genuine datagrams")
        finally:
            sniffer.stop()
        epoch = ring.epoch
        old = [(m, src) for m, src in sniffer.captured.get(abi.MSG_DATA, [])
               if opens(ring.current, "c2s", m)]
        assert len(old) >= 5, "the captured DATA is epoch E's"
        tl.wait(lambda: _after_overlap(tl, epoch + 1), f"epoch {epoch + 1} alone", timeout=20)
        genuine, before = sink.count(), _drops(tl)
        attacker(tl).send([m for m, _ in old], spoof=old[0][1])
        settle()
        assert _after_overlap(tl, epoch + 1), "a rekey came in between: the window was missed"
        d = delta(before, _drops(tl))
        assert d == {DROP_KEY_PHASE: len(old)}, d
        assert sink.count() == genuine == 5  # nothing the copies carry arrived
    finally:
        sink.close()


class Sink:
    """A UDP socket on the gateway's inner address: what the tunnel delivers."""

    def __init__(self, tl: TunnelLab):
        self.sock = tl.lab.socket("gw", socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((GW_INNER, REPLAY_SINK_PORT))
        self.sock.setblocking(False)
        self.n = 0

    def count(self) -> int:
        while True:
            try:
                self.sock.recv(2048)
            except BlockingIOError:
                return self.n
            self.n += 1

    def close(self) -> None:
        self.sock.close()


def test_old_keys_open_inside_the_overlap_and_never_after(slow):
    """Fresh data under the previous epoch's keys (what a client still on
    them would send: a new counter, its own source), forged here from the
    store's ring: delivered while the overlap lasts, dropped by the gate on
    its key phase once it is over (docs/protocol.md "Overlap, expiry and
    the attempts bound")."""
    tl = slow
    sink = Sink(tl)
    sniffer = Sniffer(tl.lab)
    try:
        tl.wait(lambda: (lambda r: r.previous is not None and r.confirmed)(store_ring(tl)[1]),
                "a confirmed rekey's overlap", timeout=20)
        _rec, ring = store_ring(tl)
        sniffer.stop()
        seen = [(m, src) for msgs in sniffer.captured.values() for m, src in msgs]
        top = max(wire.parse_header(m).counter for m, _src in seen)
        src = seen[-1][1]
        attacker(tl).send([_old_data(ring.previous, top + 100)], spoof=src)
        tl.wait(lambda: sink.count() == 1, "the previous epoch's message inside the overlap",
                timeout=3)
        assert store_ring(tl)[1].previous == ring.previous, "sent inside the overlap"
        tl.wait(lambda: _after_overlap(tl, ring.epoch), "the overlap's end", timeout=10)
        before = _drops(tl)
        attacker(tl).send([_old_data(ring.previous, top + 101)], spoof=src)
        settle()
        assert _after_overlap(tl, ring.epoch), "a rekey came in between: the window was missed"
        assert delta(before, _drops(tl)) == {DROP_KEY_PHASE: 1}
        assert sink.count() == 1
    finally:
        sniffer.stop()
        sink.close()


def _old_data(keys, counter: int) -> bytes:
    """One DATA message to the sink from the client's inner address, sealed
    under ``keys`` with ``counter``."""
    packet = frames.ipv4(CLIENT_INNER, GW_INNER, 17,
                         frames.udp(40000, REPLAY_SINK_PORT, b"under the previous keys"))
    return DataChannel(keys, "client", first_counter=counter).seal(packet)


def test_replayed_rekey_init_is_refused_and_rolls_nothing_back(slow):
    """The client's REKEY_INIT for epoch E+1, replayed with its own source
    inside the overlap (E still accepted) and again after it: each copy is
    dropped by the gate (a replayed counter, a dead key phase) or refused by
    the daemon with RekeyDenied REPLAY_DETECTED; no KeyRotated follows, the
    current keys stay E+1's."""
    tl = slow
    start = store_ring(tl)[1].epoch
    n_events, before = len(tl.gateway_events()), _drops(tl)
    sniffer = Sniffer(tl.lab)
    try:
        tl.wait(lambda: abi.MSG_REKEY_INIT in sniffer.captured and _rotated_to(
            tl, wire.REKEY_INIT.unpack_from(sniffer.captured[abi.MSG_REKEY_INIT][-1][0],
                                            abi.HDR_LEN)[0]), "a rekey", timeout=20)
    finally:
        sniffer.stop()
    init, src = sniffer.captured[abi.MSG_REKEY_INIT][-1]
    new_epoch = wire.REKEY_INIT.unpack_from(init, abi.HDR_LEN)[0]
    assert new_epoch > start
    _rec, ring = store_ring(tl)
    assert ring.epoch == new_epoch and ring.previous is not None, "still inside the overlap"
    attacker(tl).send([init], spoof=src)                       # inside the overlap
    settle()
    tl.wait(lambda: _after_overlap(tl, new_epoch), "the overlap's end", timeout=10)
    attacker(tl).send([init], spoof=src)                       # after it
    settle()
    d = delta(before, _drops(tl))
    later = tl.gateway_events()[n_events:]
    denied = [e for e in later if e["event_type"] == "RekeyDenied"]
    assert sum(d.values()) + len(denied) == 2, (d, denied)
    assert all(e["reason_code"] == "REPLAY_DETECTED" for e in denied), denied
    assert {e["key_epoch"] for e in later if e["event_type"] == "KeyRotated"} == {new_epoch}
    _rec, after = store_ring(tl)
    assert after.current == ring.current  # the same E+1 keys: nothing moved, back or forth


def _rotated_to(tl: TunnelLab, epoch: int) -> bool:
    return any(e.get("key_epoch") == epoch for e in events_of(tl, "KeyRotated"))


def test_a_delayed_rekey_init_for_a_reached_epoch_is_refused_replay_detected(slow):
    """A REKEY_INIT that passes the gate (current keys, a fresh counter, the
    client's source: a delayed re-send of an old attempt, reordered past the
    rekey it asked for) but names an epoch already reached: the daemon
    refuses it with RekeyDenied REPLAY_DETECTED and the keys stay."""
    tl = slow
    # at the start of the quiet part of a cycle: ~4 s before the next rekey
    tl.wait(lambda: store_ring(tl)[1].previous is not None, "a rekey", timeout=20)
    tl.wait(lambda: store_ring(tl)[1].previous is None, "the overlap's end", timeout=10)
    sniffer = Sniffer(tl.lab)
    try:
        tl.wait(lambda: sniffer.captured.get(abi.MSG_KEEPALIVE), "a keepalive")
    finally:
        sniffer.stop()
    rec, ring = store_ring(tl)
    seen = [(m, src) for msgs in sniffer.captured.values() for m, src in msgs]
    top = max(wire.parse_header(m).counter for m, _src in seen)
    keys = ring.current
    hdr = wire.Header(type=abi.MSG_REKEY_INIT, session_id=rec.session_id, counter=top + 100,
                      flags=abi.FLAG_KEY_PHASE if keys.phase else 0)
    msg = wire.seal_control(hdr, keys.hdr_c2s, keys.reattach, ring.epoch, rec.epoch,
                            Ephemeral().public)
    n_events = len(tl.gateway_events())
    # from the bound transport: the client also sends on its other uplink
    # (path probes, issue 14), and the last packet captured may be one
    attacker(tl).send([msg], spoof=(rec.binding.addr, rec.binding.port))
    tl.wait(lambda: [e for e in tl.gateway_events()[n_events:]
                     if e["event_type"] == "RekeyDenied"], "the refusal", timeout=5)
    later = tl.gateway_events()[n_events:]
    [denied] = [e for e in later if e["event_type"] == "RekeyDenied"]
    assert denied["reason_code"] == "REPLAY_DETECTED"
    assert denied["session_id"] == f"{rec.session_id:016x}"
    assert not [e for e in later if e["event_type"] == "KeyRotated"]
    assert store_ring(tl)[1].current == keys
