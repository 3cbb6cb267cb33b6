"""SipHash-2-4 in Python (the C-backed siphash24 package) against the published
vectors, and the header tag built on it."""

import pytest

from jvpn import wire
from jvpn.gate import abi
from kits.vectors import SIPHASH24_VECTORS

KEY = bytes(range(16))


@pytest.mark.parametrize("n", range(64))
def test_published_siphash24_vectors(n):
    assert wire.header_tag(KEY, bytes(range(n))) == SIPHASH24_VECTORS[n]


def test_header_tag_covers_first_24_bytes():
    h = wire.Header(type=abi.MSG_DATA, session_id=0x1122334455667788, counter=7)
    raw = h.pack(KEY)
    assert len(raw) == abi.HDR_LEN
    parsed = wire.parse_header(raw)
    assert parsed.tag_valid(KEY)
    assert parsed.tag == wire.header_tag(KEY, raw[:24])


@pytest.mark.parametrize("field,value", [("type", abi.MSG_KEEPALIVE), ("counter", 8),
                                         ("session_id", 1), ("flags", 1)])
def test_any_changed_header_field_breaks_the_tag(field, value):
    h = wire.Header(type=abi.MSG_DATA, session_id=0x1122334455667788, counter=7)
    tag = wire.parse_header(h.pack(KEY)).tag
    forged = wire.Header(**{**h.__dict__, field: value, "tag": tag})
    assert not forged.tag_valid(KEY)


def test_key_words_match_siphash_key_layout():
    assert wire.key_words(KEY) == (0x0706050403020100, 0x0F0E0D0C0B0A0908)
    with pytest.raises(ValueError):
        wire.key_words(b"short")


def test_short_message_is_refused():
    with pytest.raises(wire.WireError):
        wire.parse_header(b"\x04" * 31)
