"""Control messages under a key ring (issue 13, docs/protocol.md "Rekey"):
the gateway seals under its send epoch, with the header's key phase flag
saying which, and opens a client's message under the epoch its phase names
(if that epoch is live). One place for both, so no control message is
sealed or checked under the wrong epoch."""

from __future__ import annotations

from jvpn import wire
from jvpn.gate import abi
from jvpn.keys import KeyRing, SessionKeys


def seal_control(keys: SessionKeys, msg_type: int, sid: int, counter: int, *fields) -> bytes:
    """A gateway-to-client control message under ``keys`` (the send epoch)."""
    flags = abi.FLAG_KEY_PHASE if keys.phase else 0
    return wire.seal_control(
        wire.Header(type=msg_type, session_id=sid, counter=counter, flags=flags),
        keys.hdr_s2c, keys.reattach, *fields)


def opening_keys(ring: KeyRing | SessionKeys, hdr: wire.Header) -> SessionKeys | None:
    """The live epoch a client's message names by its key phase, if any."""
    return KeyRing.of(ring).for_phase(wire.key_phase(hdr.flags))


def open_client(ring: KeyRing | SessionKeys, msg: bytes) -> tuple | None:
    """(header, fields, keys) of a client's control message whose tag and MAC
    hold under the epoch its phase names; None otherwise (nothing checked
    about freshness: the caller's window does)."""
    try:
        hdr = wire.parse_header(msg)
    except wire.WireError:
        return None
    keys = opening_keys(ring, hdr)
    if keys is None or not hdr.tag_valid(keys.hdr_c2s):
        return None
    try:
        hdr, fields = wire.open_control(msg, keys.reattach)
    except wire.WireError:
        return None
    return hdr, fields, keys


def confirms(ring: KeyRing, msg: bytes) -> bool:
    """``msg`` is an authentic control message under ``ring``'s new,
    unconfirmed epoch: the client holds it and uses it (step 5)."""
    if ring.confirmed:
        return False
    opened = open_client(ring, msg)
    return opened is not None and opened[2] is ring.current
