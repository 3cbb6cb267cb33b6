"""Issue 15: a restart's per-session work takes fast paths (an address
parsed without ipaddress, an element built from a per-class field table,
a key ring unpacked without dataclasses.replace). Each gives exactly the
answer of the slow path it stands in front of."""

from __future__ import annotations

import gc
import ipaddress
import json
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jvpn import pathmtu
from jvpn.fastip import ipv4_packed
from jvpn.gate import abi
from jvpn.gateway import reconcile
from jvpn.gcpause import paused_gc
from jvpn.keys import KeyRing, SessionKeys, derive_session_keys
from jvpn.session import canonical_ip

SPELLINGS = ["10.0.0.2", "0.0.0.0", "255.255.255.255", "198.18.3.4", "010.0.0.2", "10.0.0",
             "10.0.0.2 ", " 10.0.0.2", "10.0.0.256", "::ffff:10.0.0.2", "::FFFF:10.0.0.2",
             "2001:db8::1", "2001:DB8:0::1", "-", "", "10.0.0.2\x00", "1e1.0.0.1", "0x1.0.0.1"]


def _slow_canonical(addr: str) -> str:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


@pytest.mark.parametrize("addr", SPELLINGS)
def test_fast_ipv4_takes_only_the_canonical_spelling(addr):
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        ip = None
    canonical = ip is not None and ip.version == 4 and str(ip) == addr
    assert ipv4_packed(addr) == (ip.packed if canonical else None)


def _family_and_words_as_ipaddress(addr, ip) -> None:
    """family_of and addr_words answer for ``addr`` as ``ip`` (ipaddress's
    parse, None: not an address) says they should."""
    if ip is None:
        with pytest.raises(ValueError):
            pathmtu.family_of(addr)
        with pytest.raises(ValueError):
            abi.addr_words(addr)
        return
    mapped = ip.version == 6 and ip.ipv4_mapped is not None
    assert pathmtu.family_of(addr) == (4 if mapped else ip.version)
    packed = ip.packed.ljust(16, b"\0")
    assert abi.addr_words(addr) == tuple(int.from_bytes(packed[i:i + 4], "little")
                                         for i in range(0, 16, 4))


@pytest.mark.parametrize("addr", SPELLINGS)
def test_canonical_ip_family_and_words_answer_as_ipaddress_does(addr):
    assert canonical_ip(addr) == _slow_canonical(addr)
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        ip = None
    _family_and_words_as_ipaddress(addr, ip)


def test_non_strings_are_never_taken_by_the_fast_path():
    assert ipv4_packed(None) is None and ipv4_packed(167772162) is None
    assert ipv4_packed(b"10.0.0.2") is None
    assert abi.addr_words(ipaddress.IPv4Address("10.0.0.2")) == abi.addr_words("10.0.0.2")


def test_an_element_is_checked_as_before():
    s = abi.Session(tag_key=(1, 2), version=3, bind_addr=[1, 2, 3, 4], state=2)
    assert (list(s.tag_key), s.version, list(s.bind_addr), s.state) == ([1, 2], 3, [1, 2, 3, 4], 2)
    for bad, error in ((dict(_pad0=(0,) * 7), TypeError), (dict(nope=1), TypeError),
                       (dict(as_dict=1), TypeError), (dict(tag_key=(1, 2, 3)), ValueError),
                       (dict(tag_key=(1,)), ValueError)):
        with pytest.raises(error):
            abi.Session(**bad)
    assert abi.SessionRt(session_id=5, replay_bitmap=(0,) * abi.replay_words()).session_id == 5


def test_a_key_ring_unpacks_to_what_was_packed():
    k0 = derive_session_keys(7, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32)
    k1 = SessionKeys(7, *(bytes([i]) * n for i, n in enumerate((32, 32, 16, 16, 32))), epoch=1)
    for ring in (KeyRing(k0), KeyRing(k1, k0, confirmed=True, overlap_until_ms=99),
                 KeyRing(k1, k0, confirmed=False)):
        assert KeyRing.unpack(ring.pack()) == ring
    assert KeyRing.unpack(k0.pack()) == KeyRing(k0)
    assert SessionKeys.unpack(k0.pack()) == k0


def test_the_collector_is_paused_and_back_as_it_was():
    was = gc.isenabled()
    try:
        for before in (True, False):
            (gc.enable if before else gc.disable)()
            with paused_gc():
                assert not gc.isenabled()
            assert gc.isenabled() is before
        gc.enable()
        with pytest.raises(RuntimeError), paused_gc():
            raise RuntimeError("a failed pass")
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        (gc.enable if was else gc.disable)()


def test_a_large_pass_freezes_what_it_made_a_small_one_does_not():
    gc.unfreeze()
    try:
        reconcile._freeze_if_large(reconcile.FREEZE_FROM - 1)
        assert gc.get_freeze_count() == 0  # a test's gateways stay collectable
        reconcile._freeze_if_large(reconcile.FREEZE_FROM)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_restored_session_holds_no_cycle_so_its_end_frees_it(tmp_path):
    """gc.freeze after the pass is only safe if an ended session's objects
    need no cyclic collection: dropped sessions leave nothing for it."""
    from jvpn.bench.session_memory import NOW_MS, install  # noqa: PLC0415
    from kits.daemon_kit import Clock, make_gateway  # noqa: PLC0415

    gw = make_gateway(tmp_path, clock=Clock(NOW_MS))
    install(gw.table, 50)
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        with gw.control:
            for sid in list(gw.table.sessions):
                gw.table.drop_local(sid)
        assert gc.collect() == 0
    finally:
        (gc.enable if was else gc.disable)()


def test_a_peers_allowed_ips_are_made_once():
    from jvpn.config import PeerConfig  # noqa: PLC0415

    peer = PeerConfig(b"\x05" * 32, ipaddress.IPv4Address("10.0.0.9"), "p",
                      inner6=ipaddress.IPv6Address("fd00::9"),
                      subnets=(ipaddress.IPv4Network("192.168.7.0/24"),))
    assert [str(n) for n in peer.allowed_ips] == ["10.0.0.9/32", "fd00::9/128", "192.168.7.0/24"]
    assert peer.allowed_ips is peer.allowed_ips


def test_a_session_row_has_the_views_fields_in_their_order(tmp_path):
    from dataclasses import fields  # noqa: PLC0415

    from jvpn.bench.session_memory import NOW_MS, install  # noqa: PLC0415
    from jvpn.gateway import snapshot  # noqa: PLC0415
    from kits.daemon_kit import Clock, make_gateway  # noqa: PLC0415

    gw = make_gateway(tmp_path, clock=Clock(NOW_MS))
    install(gw.table, 3)
    view = [f.name for f in fields(snapshot.SessionView)]
    for row in snapshot.sessions(gw, kernel_rx=False):
        assert list(row) == [*view, "last_handshake_ms", "key_age_s", "rekey_requested",
                             "key_confirmed", "key_overlap"]
        assert row["last_handshake_ms"] == row["created_ms"]


@pytest.mark.parametrize("addr", ["0.0.0.0", "10.0.0.2", "198.18.255.1", "255.255.255.255"])
def test_a_listing_spells_an_ipv4_binding_as_ipaddress_does(addr):
    assert abi.words_addr(abi.addr_words(addr), abi.AF_INET) == str(ipaddress.IPv4Address(addr))


@pytest.mark.parametrize("addr", ["198.18.0.1", "0.0.0.0", "2001:db8::7", "::ffff:10.0.0.2"])
def test_an_elements_binding_is_the_family_and_words_of_its_address(addr):
    from jvpn.gate.element import session_element  # noqa: PLC0415
    from jvpn.session import Event, Transport, apply, new_session  # noqa: PLC0415

    rec, _tr = apply(new_session(9, 1), Event.ATTACH_OK, 1, binding=Transport(addr, 4000))
    keys = derive_session_keys(9, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32)
    element = session_element(rec, keys, unused_key=lambda: b"\x09" * 16)
    ip = ipaddress.ip_address(rec.binding.addr)  # the canonical form: ::ffff:a.b.c.d is IPv4
    assert element.bind_family == (abi.AF_INET6 if ip.version == 6 else abi.AF_INET)
    assert tuple(element.bind_addr) == abi.addr_words(rec.binding.addr)


# ---- the address memo answers as the function does, whatever was asked before ----
@pytest.mark.parametrize("first, second", [(True, 1.0), (1.0, True), (False, 0.0)])
def test_canonical_ip_is_a_function_of_its_argument_not_of_what_was_asked_before(first, second):
    """A store record's binding address is whatever JSON it holds (true,
    1.0): canonical_ip(1.0) is 1.0 (not an address, kept as it is),
    canonical_ip(True) "0.0.0.1" (ipaddress takes a bool as an int), and
    neither answers for the other (lru_cache keys compare with ==: True ==
    1.0; the memo takes exact strings only)."""
    canonical_ip.cache_clear()
    canonical_ip(first)
    got = canonical_ip(second)
    canonical_ip.cache_clear()
    assert got == canonical_ip(second) and type(got) is type(canonical_ip(second))


def test_addr_words_refuses_a_float_whatever_was_asked_before():
    abi.addr_words.cache_clear()
    with pytest.raises(ValueError):
        abi.addr_words(1.0)  # ipaddress refuses a float
    abi.addr_words(True)  # a bool is an int, an address to ipaddress
    with pytest.raises(ValueError):
        abi.addr_words(1.0)  # still refused: the memo never answers a float with a bool's answer


_DOTTED = st.lists(st.one_of(st.integers(0, 300).map(str), st.sampled_from(
    ["00", "01", "0x1", "1e1", " 1", "1 ", "+1", "-1", "１", "١", "", "1\x00", "\n1", "256"])),
    min_size=1, max_size=6).map(".".join)
_ADDRESSES = st.one_of(_DOTTED, st.text(max_size=40), st.ip_addresses().map(str),
                       st.ip_addresses(v=4).map(lambda ip: f"::ffff:{ip}"),
                       st.ip_addresses(v=4).map(lambda ip: f"::FFFF:{ip}"),
                       st.ip_addresses(v=6).map(lambda ip: ip.exploded.upper()))


@settings(max_examples=3000, deadline=None)
@given(_ADDRESSES)
def test_every_spelling_canonicalizes_parses_and_encodes_as_ipaddress_does(addr):
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        ip = None
    exact_v4 = ip is not None and ip.version == 4 and str(ip) == addr
    assert ipv4_packed(addr) == (ip.packed if exact_v4 else None)
    assert canonical_ip(addr) == _slow_canonical(addr)
    _family_and_words_as_ipaddress(addr, ip)
    if ip is not None and ip.version == 4:
        words = abi.addr_words(addr)
        assert abi.words_addr(words, abi.AF_INET) == str(ip) == socket.inet_ntoa(ip.packed)


def test_a_dropped_records_long_non_address_binding_is_not_kept_by_the_address_memo():
    """A store value is attack surface: a record whose binding "address" is
    not one (1 MB of text) is unreadable (since k22gaps), its report quotes
    40 characters of it, and it is not memoized, so it is freed with its
    record (the memo keeps strings of an address's length only)."""
    import gc  # noqa: PLC0415
    import tracemalloc  # noqa: PLC0415

    from jvpn.store import Unreadable, record_from_json  # noqa: PLC0415

    canonical_ip.cache_clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(64):
            text = json.dumps({"session_id": i, "state": "ATTACHED", "version": 1,
                               "created_ms": 1, "last_change_ms": 1,
                               "binding": {"addr": f"{i}-" + "x" * (1 << 20), "port": 1}})
            with pytest.raises(Unreadable) as refused:
                record_from_json(text)
            assert len(str(refused.value)) < 200
            del text, refused
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        canonical_ip.cache_clear()
    assert kept < 8 << 20, f"{kept / (1 << 20):.0f} MB kept after the records were dropped"
