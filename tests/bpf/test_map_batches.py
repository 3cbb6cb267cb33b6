"""Issue 15: batched map writes and reads (BPF_MAP_UPDATE_BATCH /
BPF_MAP_LOOKUP_BATCH) on a real hash map, and its E2BIG as GateFull."""

from __future__ import annotations

import ctypes
import os
import struct

import pytest

from jvpn.errors import JvpnError
from jvpn.gate import abi
from jvpn.gate.attach import unpin
from jvpn.gate.batch import BatchNotWritten, ElementBatch
from jvpn.gate.element import GateFull
from jvpn.gate.loader import load_plain
from jvpn.gate.pins import SESSION_LAYOUT, PinnedMap

pytestmark = pytest.mark.kernel

CAPACITY = 5000  # more than one lookup batch (4096) and one update batch


@pytest.fixture
def sessions_map(tmp_path):
    pins = f"/sys/fs/bpf/jvpn-test-batch-{tmp_path.name[-12:]}"
    prog = load_plain(f"""
#include <uapi/linux/bpf.h>
#include "jvpn_abi.h"
BPF_TABLE_PINNED("hash", __u64, struct jvpn_session, m, {CAPACITY}, "{pins}");
int xdp_main(struct xdp_md *ctx) {{ __u64 k = 0; return m.lookup(&k) ? XDP_DROP : XDP_PASS; }}
""")[0]
    m = PinnedMap(pins, ctypes.c_uint64, abi.Session)
    yield m
    m.close()
    prog.cleanup()
    unpin(pins)
    if os.path.exists(pins):
        os.unlink(pins)


def test_a_batch_written_is_read_back_whole(sessions_map):
    sids = list(range(1, CAPACITY + 1))
    sessions_map.update_batch([ctypes.c_uint64(s) for s in sids],
                              [abi.Session(version=s, ctl_floor=s * 3) for s in sids])
    got = dict(sessions_map.items_batch())
    assert sorted(got) == sids
    assert all(got[s].version == s and got[s].ctl_floor == s * 3 for s in sids)
    assert sessions_map.lookup(ctypes.c_uint64(77)).version == 77  # the map's, not a copy


def test_the_keys_read_alone_are_every_element_s_as_ints(sessions_map):
    """keys_batch (a restart's stale look: ids only) past one batch of
    4096; the elements written from plain int keys (put_sessions')."""
    sids = list(range(7, CAPACITY + 7))
    sessions_map.update_batch(sids, [abi.Session(version=s) for s in sids])
    keys = list(sessions_map.keys_batch())
    assert sorted(keys) == sids and all(type(k) is int for k in keys)
    assert sorted(keys) == sorted(sid for sid, _ in sessions_map.items_batch())
    assert sessions_map.lookup(ctypes.c_uint64(77)).version == 77


def test_without_batches_the_keys_and_the_single_writes_are_the_same(sessions_map, monkeypatch):
    """A kernel without BPF_MAP_*_BATCH: the writes one by one from the
    key array (ints given), the keys by get_next_key, as ints still."""
    from jvpn.gate import loader, pins  # noqa: PLC0415

    lib = loader._lib()

    class NoBatches:
        def __getattr__(self, name):
            return getattr(lib, name)

        def bpf_update_batch(self, *_args):
            ctypes.set_errno(pins.NO_BATCH[0])
            return -1

        def bpf_lookup_batch(self, *_args):
            ctypes.set_errno(pins.NO_BATCH[0])
            return -1

    monkeypatch.setattr(loader, "_lib", lambda: NoBatches())
    sids = [3, 1 << 40, 2**64 - 1]
    sessions_map.update_batch(sids, [abi.Session(version=s & 0xFFFF) for s in sids])
    assert sorted(sessions_map.keys_batch()) == sorted(sids)
    assert all(type(k) is int for k in sessions_map.keys_batch())
    # the items too, keyed by ints as the batch path keys them (a c_uint64
    # key does not hash: the restart's dict of the map raised TypeError)
    items = dict(sessions_map.items_batch())
    assert sorted(items) == sorted(sids) and items[3].version == 3
    monkeypatch.undo()
    assert sessions_map.lookup(ctypes.c_uint64(1 << 40)).version == 0


def test_the_fields_read_from_the_batch_buffer_are_the_elements_fields(sessions_map):
    """fields_batch (the CLI's listing: no structure copied per element)
    reads what items_batch's structures hold, past one batch of 4096."""
    sids = list(range(1, CAPACITY + 1))
    elements = []
    for s in sids:
        e = abi.Session(version=s, fence=2**64 - s, bind_port=s & 0xFFFF, bind_family=s % 3,
                        state=s % 256, rt_slot=s * 7, rt_gen=2**63 + s, ctl_floor=s)
        e.bind_addr[:] = [s, 2**32 - s, 0, s * 13]
        elements.append(e)
    sessions_map.update_batch([ctypes.c_uint64(s) for s in sids], elements)
    fields = dict(sessions_map.fields_batch(SESSION_LAYOUT))
    whole = dict(sessions_map.items_batch())
    assert sorted(fields) == sids
    for sid, e in whole.items():
        assert fields[sid] == (e.version, e.fence, bytes(e.bind_addr), e.bind_port,
                               e.bind_family, e.state, e.rt_slot, e.rt_gen)
        assert struct.unpack("=4I", fields[sid][2]) == tuple(e.bind_addr)
    with pytest.raises(JvpnError, match="fields of"):
        next(sessions_map.fields_batch(struct.Struct("=Q")))


def test_a_batch_past_the_capacity_is_gate_full_after_what_fits(sessions_map):
    sids = list(range(1, CAPACITY + 11))
    with pytest.raises(GateFull, match="full"):
        sessions_map.update_batch([ctypes.c_uint64(s) for s in sids],
                                  [abi.Session(version=1) for _ in sids])
    assert sum(1 for _ in sessions_map.items_batch()) == CAPACITY


class MapAsGateMaps:
    """The raw map with the three calls ElementBatch makes (jvpn/gate/pins.py
    GateMaps: put_sessions, get_session, list_sessions)."""

    def __init__(self, m: PinnedMap):
        self.m = m

    def list_sessions(self):
        return list(self.m.items_batch())

    def get_session(self, sid):
        return self.m.lookup(ctypes.c_uint64(sid))

    def put_sessions(self, items):
        self.m.update_batch([ctypes.c_uint64(s) for s, _ in items], [e for _, e in items])


def test_a_batch_past_the_capacity_knows_exactly_which_elements_landed(sessions_map):
    """ElementBatch on the kernel's E2BIG: what landed is read back, the rest
    named unwritten (their runtime slots go back: jvpn/gate/kernel.py)."""
    batch = ElementBatch(MapAsGateMaps(sessions_map), flush_every=CAPACITY + 100)
    for sid in range(1, CAPACITY + 11):
        batch.put(sid, abi.Session(version=sid))
    with pytest.raises(BatchNotWritten, match=f"10 of {CAPACITY + 10}"):
        batch.flush()
    in_map = {sid for sid, _ in sessions_map.items_batch()}
    assert set(batch.written) == in_map and len(in_map) == CAPACITY
    assert sorted(batch.unwritten) == sorted(set(range(1, CAPACITY + 11)) - in_map)
