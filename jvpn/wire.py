"""The jvpn wire header: pack, parse and tag (layout in bpf/include/jvpn_abi.h).

Every message starts with 32 bytes::

    type u8 | version u8 | flags u16 | reserved u32 | session_id u64 | counter u64 | tag u64

little-endian, as WireGuard's. ``tag`` is SipHash-2-4 over bytes [0, 24) under
the session's per-direction header key; the XDP program recomputes it before it
lets a packet touch any per-session state.
"""

from __future__ import annotations

import hashlib as _hashlib
import hmac as _hmac
import struct
from dataclasses import dataclass

from siphash24 import siphash24

from jvpn.gate import abi

_HDR = struct.Struct("<BBHIQQQ")
_TAGGED = struct.Struct("<BBHIQQ")
assert _HDR.size == abi.HDR_LEN and _TAGGED.size == abi.TAGGED_LEN


class WireError(ValueError):
    """A message that cannot be parsed."""


def header_tag(key: bytes, tagged: bytes) -> int:
    """SipHash-2-4 of the first 24 header bytes under a 16-byte key."""
    if len(key) != 16:
        raise ValueError("header key must be 16 bytes")
    return siphash24(tagged, key=key).intdigest() & 0xFFFFFFFFFFFFFFFF


def key_words(key: bytes) -> tuple[int, int]:
    """The (k0, k1) words the XDP program stores for a 16-byte SipHash key."""
    if len(key) != 16:
        raise ValueError("header key must be 16 bytes")
    return struct.unpack("<QQ", key)


@dataclass(frozen=True)
class Header:
    type: int
    session_id: int
    counter: int
    flags: int = 0
    version: int = abi.WIRE_VERSION
    reserved: int = 0
    tag: int = 0

    def tagged_bytes(self) -> bytes:
        return _TAGGED.pack(
            self.type, self.version, self.flags, self.reserved, self.session_id, self.counter
        )

    def pack(self, key: bytes | None = None) -> bytes:
        """The 32 header bytes; with ``key`` the tag is computed, else kept."""
        tagged = self.tagged_bytes()
        tag = header_tag(key, tagged) if key is not None else self.tag
        return tagged + struct.pack("<Q", tag)

    def tag_valid(self, key: bytes) -> bool:
        return header_tag(key, self.tagged_bytes()) == self.tag


def parse_header(msg: bytes) -> Header:
    if len(msg) < abi.HDR_LEN:
        raise WireError(f"message of {len(msg)} bytes is shorter than the header")
    t, v, flags, reserved, sid, counter, tag = _HDR.unpack_from(msg)
    return Header(
        type=t, version=v, flags=flags, reserved=reserved, session_id=sid, counter=counter, tag=tag
    )


def message(hdr: Header, key: bytes | None, payload: bytes = b"") -> bytes:
    """A whole jvpn message: header (tagged under ``key``) then payload."""
    return hdr.pack(key) + payload


# ---- control messages (bodies after the 32-byte header) ----
# Every control body ends in a 32-byte HMAC-SHA256 under the session's
# reattach key over (label | the 24 tagged header bytes | the body fields), so
# a body cannot be moved to another header (session, counter) or message type.

MAC_LEN = 32
NONCE_LEN = 16
REATTACH_REQ = struct.Struct("<QQ16sQ")  # seq, timestamp_ms, client_nonce, epoch
PATH_CHALLENGE = struct.Struct("<16s16s")  # server_nonce, client_nonce
PATH_RESPONSE = PATH_CHALLENGE
REATTACH_ACK = struct.Struct("<QQQ")  # seq, epoch, version
# seq, reason index (REJECT_REASONS), and for a stale epoch the session's
# current one (else 0): in what was padding, so the size is unchanged
REATTACH_REJECT = struct.Struct("<QB3xI")
EPOCH_MAX = 0xFFFFFFFF  # the most a REATTACH_REJECT can tell
TERMINATE = struct.Struct("<B7x")  # reason index (TERMINATE_REASONS)
# Rekey (docs/protocol.md, "Rekey"): the client asks for key epoch
# ``new_epoch`` (its current + 1) naming the switch epoch it knows and its
# ephemeral X25519 public key; the gateway answers with its ephemeral, the
# record version it committed the new keys at, how long it keeps accepting
# the old keys once the client used the new ones, and a key confirmation
# (jvpn/keys.py rekey_confirm); or refuses, naming the epochs it holds.
EPHEMERAL_LEN = 32
REKEY_INIT = struct.Struct("<QQ32s")  # new_epoch, switch_epoch, client_ephemeral
# new_epoch, switch_epoch, version, overlap_ms, gateway_ephemeral, confirm
REKEY_RESP = struct.Struct("<QQQI4x32s32s")
# asked epoch, current key epoch, current switch epoch, reason index
# (REJECT_REASONS), and the refused request's header counter: the client
# acts only on a refusal of a request it sent for its pending attempt
REKEY_REJECT = struct.Struct("<QQQB7xQ")
# Transport selection (issue 14; docs/protocol.md "Transport selection"): a
# probe from a candidate path carries the client's probe id, padded so that
# the reply (the same size) is never larger than what caused it; the reply
# echoes the id and tells the gateway's view of the session: its state
# (abi.STATE_*), PROBE_FROM_BINDING when the probe came from the session's
# binding, how long ago the binding last carried authenticated traffic (ms,
# capped at 2^32 - 1) and the policy version. Neither moves anything.
PATH_PROBE = struct.Struct("<Q40x")  # probe_id
PATH_PROBE_REPLY = struct.Struct("<QBBxxII28x")  # probe_id, state, flags, rx_age_ms, policy_v
PROBE_FROM_BINDING = 1
RX_AGE_MAX = 0xFFFFFFFF
# A gateway's keepalive reply echoes, as its AEAD payload, the header counter
# of the client keepalive it answers: the client's heartbeat on its active
# path matches each echo to its heartbeat (loss, RTT). It also carries how
# many of the session's DATA messages the gateway accepted so far (opened
# under the AEAD; the daemon's count, for the session's life in this
# daemon), and the count's incarnation: a random number the daemon picks
# when it installs the session (a restart, a handover, an install again:
# a new count from 0, a new incarnation). The client compares the count with
# the data it sent, so a path that passes heartbeats but drops data is seen;
# a new incarnation starts its comparison again. An older gateway's echo has
# no incarnation (KEEPALIVE_ECHO_V2: a count that fell is a new one) or is
# the counter alone (KEEPALIVE_ECHO_V1: no delivery check). A keepalive with
# another payload (a nudge, an empty one) is no echo.
KEEPALIVE_ECHO = struct.Struct("<QQI")  # answered counter, DATA delivered, incarnation
KEEPALIVE_ECHO_V2 = struct.Struct("<QQ")  # answered counter, DATA delivered (older)
KEEPALIVE_ECHO_V1 = struct.Struct("<Q")  # answered counter (an oldest gateway's)
# APPEND ONLY: the index is what travels; a receiver that does not know an
# index reads POLICY_TERMINATION. CLIENT_STOPPED is the one a client sends
# (it stopped: SIGTERM, SIGINT, SIGHUP, or it gave up on the session)
TERMINATE_REASONS = ["TTL_SESSION_EXPIRED", "TTL_TRANSPORT_LOSS_EXPIRED", "POLICY_TERMINATION",
                     "OPERATOR_TERMINATED", "PEER_REVOKED", "CLIENT_STOPPED", "KEY_EXPIRED"]
REJECT_REASONS = ["SESSION_NOT_FOUND", "SESSION_EXPIRED", "AUTH_FAIL", "FRESHNESS_INVALID",
                  "REPLAY_DETECTED", "RATE_LIMITED", "POLICY_DENY", "OWNERSHIP_CONFLICT",
                  "KEY_EXPIRED"]


def parse_keepalive_echo(payload: bytes) -> tuple[int, int | None, int | None] | None:
    """A keepalive's payload as an echo: (answered counter, DATA delivered,
    the count's incarnation), None for what an older gateway's echo lacks;
    None when it is no echo."""
    if len(payload) == KEEPALIVE_ECHO.size:
        return KEEPALIVE_ECHO.unpack(payload)
    if len(payload) == KEEPALIVE_ECHO_V2.size:
        return *KEEPALIVE_ECHO_V2.unpack(payload), None
    if len(payload) == KEEPALIVE_ECHO_V1.size:
        return KEEPALIVE_ECHO_V1.unpack(payload)[0], None, None
    return None


def reject_reason(index: int) -> str:
    """A refusal's reason by its index; one this build does not know (a
    newer peer's) reads as POLICY_DENY: a refusal, nothing more."""
    return REJECT_REASONS[index] if index < len(REJECT_REASONS) else "POLICY_DENY"


_BODIES = {abi.MSG_REATTACH_REQ: (REATTACH_REQ, b"reattach-req"),
           abi.MSG_PATH_CHALLENGE: (PATH_CHALLENGE, b"path-challenge"),
           abi.MSG_PATH_RESPONSE: (PATH_RESPONSE, b"path-response"),
           abi.MSG_REATTACH_ACK: (REATTACH_ACK, b"reattach-ack"),
           abi.MSG_REATTACH_REJECT: (REATTACH_REJECT, b"reattach-reject"),
           abi.MSG_TERMINATE: (TERMINATE, b"terminate"),
           abi.MSG_REKEY_INIT: (REKEY_INIT, b"rekey-init"),
           abi.MSG_REKEY_RESP: (REKEY_RESP, b"rekey-resp"),
           abi.MSG_REKEY_REJECT: (REKEY_REJECT, b"rekey-reject"),
           abi.MSG_PATH_PROBE: (PATH_PROBE, b"path-probe"),
           abi.MSG_PATH_PROBE_REPLY: (PATH_PROBE_REPLY, b"path-probe-reply")}


def _control_mac(key: bytes, label: bytes, tagged: bytes, body: bytes) -> bytes:
    return _hmac.new(key, label + tagged + body, _hashlib.sha256).digest()


def seal_control(hdr: Header, hdr_key: bytes, reattach_key: bytes, *fields) -> bytes:
    """A whole control message: tagged header, body fields, HMAC."""
    fmt, label = _BODIES[hdr.type]
    body = fmt.pack(*fields)
    return hdr.pack(hdr_key) + body + _control_mac(reattach_key, label, hdr.tagged_bytes(), body)


def key_phase(flags: int) -> int:
    """The key phase a message names (0 or 1): the low bit of the key epoch
    it was sealed under (jvpn/keys.py KeyRing.for_phase)."""
    return 1 if flags & abi.FLAG_KEY_PHASE else 0


def open_control(msg: bytes, reattach_key: bytes) -> tuple:
    """(header, fields) of an authentic control message; WireError otherwise.
    The header tag is not checked here (the XDP gate, or the caller, does).
    ``reattach_key`` is the control key of the key epoch the header's phase
    names (``key_phase``): the caller picks it."""
    hdr = parse_header(msg)
    try:
        fmt, label = _BODIES[hdr.type]
    except KeyError:
        raise WireError(f"type {hdr.type} is not a control message") from None
    body = msg[abi.HDR_LEN: abi.HDR_LEN + fmt.size]
    if len(msg) != abi.HDR_LEN + fmt.size + MAC_LEN:
        raise WireError("control message of the wrong length")
    mac = msg[abi.HDR_LEN + fmt.size:]
    if not _hmac.compare_digest(mac, _control_mac(reattach_key, label, hdr.tagged_bytes(), body)):
        raise WireError("control message MAC does not verify")
    return hdr, fmt.unpack(body)

