"""Review k16r4 (issue 15's performance changes must change no behaviour):
proof-of-concept tests. The first ones fail on main at 63d3c27 (findings);
the property tests pass (what was checked and found the same)."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import socket

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jvpn import keys, noise_ik, pathmtu
from jvpn.fastip import ipv4_packed
from jvpn.gate import abi
from jvpn.handshake import MAC_LEN, PROLOGUE, PROTOCOL, HandshakeError, Initiator, Responder
from jvpn.session import SessionRecord, State, Transport, canonical_ip
from jvpn.store import record_to_json

GW, CL = keys.generate_private(), keys.generate_private()
GW_PUB, CL_PUB = keys.public_from_private(GW), keys.public_from_private(CL)


# ---------------------------------------------------------------- finding 1
class _Counting:
    """Our static key, counting its X25519 exchanges."""

    def __init__(self, key):
        self.key, self.calls = key, 0

    def exchange(self, public):
        self.calls += 1
        return self.key.exchange(public)


def _forged_message_1(claimed_static: bytes) -> bytes:
    """What anyone can send without the peer's private key: a message 1
    whose encrypted static (es is the sender's own) names ``claimed_static``
    and whose payload is garbage (ss unknown to the sender)."""
    sym = noise_ik.Static(GW, PROTOCOL, PROLOGUE).fresh()
    e = X25519PrivateKey.generate()
    e_pub = e.public_key().public_bytes_raw()
    sym.mix_hash(e_pub)
    sym.mix_key(e.exchange(X25519PublicKey.from_public_bytes(GW_PUB)))  # es
    body = e_pub + sym.encrypt_and_hash(claimed_static) + bytes(8 + noise_ik.TAGLEN)
    return bytes(abi.HDR_LEN) + body + bytes(2 * MAC_LEN)


def _work_for_forged(responder: Responder) -> int:
    counting = _Counting(responder._static.key)
    responder._static.key = counting
    try:
        with pytest.raises(HandshakeError, match="bad_initiation"):
            responder.open(_forged_message_1(CL_PUB))
    finally:
        responder._static.key = counting.key
    return counting.calls


def test_a_forged_message_1_costs_the_same_whether_its_named_peer_has_handshaked():
    """Finding 1 (ss cache: an activity oracle). A forged message 1 naming
    a configured peer's public key is refused either way, but costs one
    X25519 (~45 us) less once that peer has completed a handshake since the
    start or the last reload: an unauthenticated sender who knows the
    public key learns whether the peer has been active (a burst of N such
    messages, then anything the gateway answers, shifts by N x 45 us). The
    old code did two exchanges for every such message; WireGuard does the
    same work for every configured peer (its ss is precomputed at load)."""
    responder = Responder(GW, lambda k: k == CL_PUB)
    before = _work_for_forged(responder)
    responder.open(Initiator(CL, GW_PUB).initiation())  # the peer's own handshake
    after = _work_for_forged(responder)
    assert after == before, f"X25519 exchanges for a forged message 1: {before} then {after}"


# ---------------------------------------------------------------- finding 2
@pytest.mark.parametrize("first, second", [(True, 1.0), (1.0, True), (False, 0.0)])
def test_canonical_ip_is_a_function_of_its_argument_not_of_what_was_asked_before(first, second):
    """Finding 2 (lru_cache keys compare with ==: True == 1.0; an exact
    int or str is its own key, anything else a tuple, so True and 1.0 share
    one). A store record's binding address is whatever JSON it holds
    (true, 1.0): canonical_ip(1.0) was 1.0 (not an address, kept as it
    is), canonical_ip(True) "0.0.0.1" (ipaddress takes a bool as an int);
    now each answers the other's answer if the other was asked first. Same
    for abi.addr_words and pathmtu.family_of."""
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
        abi.addr_words(1.0)  # ... and now the cache answers for the float


# ------------------------------------------- checked and found the same (pass)
def _slow_canonical(addr):
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


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
    if ip is None:
        with pytest.raises(ValueError):
            pathmtu.family_of(addr)
        with pytest.raises(ValueError):
            abi.addr_words(addr)
        return
    mapped = ip.version == 6 and ip.ipv4_mapped is not None
    assert pathmtu.family_of(addr) == (4 if mapped else ip.version)
    packed = ip.packed.ljust(16, b"\0")
    words = tuple(int.from_bytes(packed[i:i + 4], "little") for i in range(0, 16, 4))
    assert abi.addr_words(addr) == words
    if ip.version == 4:
        assert abi.words_addr(words, abi.AF_INET) == str(ip) == socket.inet_ntoa(ip.packed)


_JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                          st.text(), st.text(alphabet=st.characters(max_codepoint=0x7f)))
_JSON_VALUES = st.recursive(_JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=3),
    st.tuples(inner)), max_leaves=8)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(
    ["%", "%s", "%%", "%(x)s", "peer", "inner", "\u2028", "\x00", "\ud800"])), _JSON_VALUES,
    max_size=8))
def test_the_listings_json_writer_writes_what_json_dumps_writes(row):
    from jvpn_cli import sessions  # noqa: PLC0415

    assert sessions.indented(row) == json.dumps(row, indent=2)


def test_the_listings_json_writer_with_odd_keys_and_values():
    from jvpn_cli import sessions  # noqa: PLC0415

    rows = [{"peer": "a\"b\\c\n\u00e9\ud83d\ude00\ud800\x7f\x00", "n": float("nan")},
            {"peer": "x", "allowed_ips": [float("inf")]}, {1: 2}, {True: 1, "a": 1},
            {"a": [[]]}, {"a": [{}]}, {"a": ()}, {"a": -0.0, "b": 1e300, "c": 2 ** 70},
            {"%s%%": "%s"}, {"a": State.ATTACHED}, {"a": []}]
    for row in rows:
        assert sessions.indented(row) == json.dumps(row, indent=2)


def _old_record_to_json(rec) -> str:
    """18dca72's record_to_json (sort_keys), for comparison."""
    d = {f.name: getattr(rec, f.name) for f in dataclasses.fields(SessionRecord)}
    for name in ("binding", "candidate"):
        if d[name] is not None:
            d[name] = {"addr": d[name].addr, "port": d[name].port}
    d["state"] = rec.state.name
    d["switches_ms"] = list(rec.switches_ms)
    if rec.confirmed:
        del d["confirmed"]
    return json.dumps(d, sort_keys=True)


_TRANSPORTS = st.one_of(st.none(), st.builds(Transport, _ADDRESSES, st.integers(0, 65535)))


def _field_values():
    out = {}
    for f in dataclasses.fields(SessionRecord):
        if f.name in ("binding", "candidate"):
            out[f.name] = _TRANSPORTS
        elif f.name == "state":
            out[f.name] = st.sampled_from(list(State))
        elif f.name == "switches_ms":
            out[f.name] = st.lists(st.integers()).map(tuple)
        elif f.name == "confirmed":
            out[f.name] = st.booleans()
        elif isinstance(f.default, str):
            out[f.name] = st.text(max_size=12)
        else:
            out[f.name] = st.one_of(st.none(), st.integers(-2 ** 70, 2 ** 70))
    return out


_RECORDS = st.fixed_dictionaries(_field_values()).map(lambda d: SessionRecord(**d))


@settings(max_examples=1000, deadline=None)
@given(_RECORDS, st.data())
def test_a_record_writes_and_copies_as_before(rec, data):
    assert record_to_json(rec) == _old_record_to_json(rec)
    names = data.draw(st.sets(st.sampled_from([f.name for f in dataclasses.fields(rec)])))
    other = data.draw(_RECORDS)
    kw = {n: getattr(other, n) for n in names}
    assert rec.with_(**kw) == dataclasses.replace(rec, **kw)
    assert type(rec.with_(**kw)) is SessionRecord
    with pytest.raises(TypeError):
        rec.with_(nope=1)


# ---------------------------------------------------------------- finding 3
def test_a_dropped_records_non_address_binding_is_not_kept_by_the_address_memo():
    """Finding 3 (canonical_ip's memo is bounded in entries, not bytes).
    A store value is attack surface: a record whose binding "address" is
    not one (kept as it is, and memoized, key and answer) stays in memory
    after the record is gone, up to 4096 of them per process: 64 records
    of 1 MB here pin 64 MB that the old code freed."""
    import gc  # noqa: PLC0415
    import tracemalloc  # noqa: PLC0415

    from jvpn.store import record_from_json  # noqa: PLC0415

    canonical_ip.cache_clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(64):
            text = json.dumps({"session_id": i, "state": "ATTACHED", "version": 1,
                               "created_ms": 1, "last_change_ms": 1,
                               "binding": {"addr": f"{i}-" + "x" * (1 << 20), "port": 1}})
            record_from_json(text)
            del text
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        canonical_ip.cache_clear()
    assert kept < 8 << 20, f"{kept / (1 << 20):.0f} MB kept after the records were dropped"
