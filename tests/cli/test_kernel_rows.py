"""`jvpn-xdp sessions`' kernel rows from the fields unpacked out of the
batch buffer (jvpn/gate/pins.py value_layout, SESSION_FIELDS) are the rows
the abi.Session structures gave (issue 15: no structure copied a session)."""

import ctypes
import ipaddress
import random
import struct

import pytest

from jvpn.gate import abi, pins, records
from jvpn_cli import sessions

OWNERS = records.Owners(node="gw-a", lease=5, remote={"00000000000000aa": "gw-b"})


def _expected(runtime, sid, s, owners):
    """The row as k18list2's _row made it from the structure's attributes."""
    if s.bind_family == abi.AF_NONE:
        addr, port, bound = None, None, "-"
    else:
        addr = abi.words_addr(s.bind_addr, s.bind_family)
        port = abi.word_port(s.bind_port)
        bound = f"[{addr}]:{port}" if s.bind_family == abi.AF_INET6 else f"{addr}:{port}"
    rt = runtime.get(s.rt_slot)
    if rt is None or rt[0] != sid or rt[1] != s.rt_gen:
        rx_packets = rx_bytes = highest = None
    else:
        rx_packets, rx_bytes, top = rt[2:]
        highest = top - 1 if top else None
    if owners is None:
        owner = None
    elif s.state == abi.STATE_REMOTE:
        owner = owners.remote.get(f"{sid:016x}")
    else:
        owner = owners.node if s.fence == owners.lease else "stale"
    return (f"{sid:016x}", abi.STATE_NAMES.get(s.state, f"UNKNOWN({s.state})"), owner,
            s.version, s.fence, bound, addr, port, rx_packets, rx_bytes, highest)


ADDRS = ["192.0.2.1", "0.0.0.0", "255.255.255.255", "2001:db8::1", "::ffff:1.2.3.4", "::",
         "2001:db8:0:1:0:0:0:1", "fe80::1:0:0:1"]


def _element(rng, addr, family, state, fence, slot, gen):
    s = abi.Session(version=rng.getrandbits(64), fence=fence, bind_family=family, state=state,
                    rt_slot=slot, rt_gen=gen, bind_port=rng.getrandbits(16),
                    replay_floor=rng.getrandbits(64))
    s.bind_addr[:] = abi.addr_words(ipaddress.ip_address(addr))
    return s


@pytest.mark.parametrize("owners", [OWNERS, None])
def test_a_row_from_the_unpacked_fields_is_the_structures_row(owners):
    rng = random.Random(15)
    runtime = {3: (0xAA, 9, 10, 1000, 11), 4: (0xAB, 1, 5, 50, 0), 5: (0xAC, 2, 1, 1, 2**64 - 1)}
    for sid in (0xAA, 0xAB, 0xAC, 0xAD, 2**64 - 1):
        for addr in ADDRS:
            v6 = ipaddress.ip_address(addr).version == 6
            for family in (abi.AF_INET6 if v6 else abi.AF_INET, abi.AF_NONE, 77):
                for state in (abi.STATE_REMOTE, 0, 1, 200):
                    for slot, gen in ((3, 9), (4, 1), (5, 3), (99, 0)):
                        s = _element(rng, addr, family, state, rng.choice((5, 6)), slot, gen)
                        fields = pins.SESSION_LAYOUT.unpack(bytes(s))
                        assert sessions._row(runtime, sid, fields, owners) == \
                            _expected(runtime, sid, s, owners)


def test_a_layout_reads_what_ctypes_reads_and_refuses_names_out_of_order():
    rt_type = abi.session_rt_type()
    rng = random.Random(3)
    for _ in range(50):
        rt = rt_type(session_id=rng.getrandbits(64), gen=rng.getrandbits(64),
                     replay_top=rng.getrandbits(64), rx_packets=rng.getrandbits(64),
                     rx_bytes=rng.getrandbits(64), last_rx_ns=rng.getrandbits(64))
        layout = pins.value_layout(rt_type, pins.RUNTIME_FIELDS)
        assert layout.size == ctypes.sizeof(rt_type)
        assert layout.unpack(bytes(rt)) == (rt.session_id, rt.gen, rt.replay_top,
                                            rt.rx_packets, rt.rx_bytes)
    with pytest.raises(ValueError, match="order"):
        pins.value_layout(abi.Session, ("fence", "version"))
    assert isinstance(pins.SESSION_LAYOUT, struct.Struct)
    assert pins.SESSION_LAYOUT.size == ctypes.sizeof(abi.Session)


class Maps:
    """Two elements and a remote id, one of them also an element (ours wins),
    an id listed twice in the dump (the last wins), out of id order."""

    def __init__(self):
        rng = random.Random(1)
        self.elements = [(0xC0, _element(rng, "192.0.2.9", abi.AF_INET, 1, 5, 1, 1)),
                         (0x0B, _element(rng, "2001:db8::2", abi.AF_INET6, 1, 6, 2, 1)),
                         (0xC0, _element(rng, "192.0.2.10", abi.AF_INET, 1, 5, 1, 1))]

    def runtime_views(self):
        return {1: (0xC0, 1, 7, 700, 8)}

    def session_fields(self):
        return [(sid, pins.SESSION_LAYOUT.unpack(bytes(e))) for sid, e in self.elements]

    def remote_ids(self):
        return {0xAA, 0x0B}


def test_the_kernel_rows_are_by_id_ours_before_a_remote_and_the_last_of_a_repeated_id():
    maps = Maps()
    rows = sessions._kernel_rows(maps, OWNERS)
    runtime = maps.runtime_views()
    assert rows == [_expected(runtime, 0x0B, maps.elements[1][1], OWNERS),
                    sessions._remote_row(0xAA, OWNERS),
                    _expected(runtime, 0xC0, maps.elements[2][1], OWNERS)]
    assert rows[2][5] == "192.0.2.10:" + str(abi.word_port(maps.elements[2][1].bind_port))
