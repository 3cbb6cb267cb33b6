"""Shared pieces of the rekey lab tests (issue 13, docs/protocol.md "Rekey"):
the session's key ring as the store holds it, the key lifecycle events, and
opening a captured message under a given epoch's keys the way anyone
holding those keys could (the AEAD alone: no window, no phase check)."""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from jvpn.gate import abi
from jvpn.keys import KeyRing, SessionKeys
from jvpn.lab.tunnel import TunnelLab
from jvpn.session import SessionRecord
from jvpn.store.sqlite import SqliteStore


def store_ring(tl: TunnelLab) -> tuple[SessionRecord, KeyRing]:
    """The one session's record and key ring, from the gateway's sessions.db."""
    store = SqliteStore(tl.tmp / "state" / "sessions.db")
    try:
        [rec] = store.list()
        rec, raw = store.get(rec.session_id)
    finally:
        store.close()
    return rec, KeyRing.unpack(raw)


def raw_secrets(tl: TunnelLab) -> bytes:
    store = SqliteStore(tl.tmp / "state" / "sessions.db")
    try:
        [rec] = store.list()
        return store.get(rec.session_id)[1]
    finally:
        store.close()


def events_of(tl: TunnelLab, event_type: str) -> list[dict]:
    return [e for e in tl.gateway_events() if e["event_type"] == event_type]


def rotated_epochs(tl: TunnelLab) -> list[int]:
    """The key epochs of the gateway's KeyRotated events, in order (it may
    write one at the confirmation and one when the overlap ends: the same
    epoch twice; docs/protocol.md "Key lifecycle events")."""
    return [e["key_epoch"] for e in events_of(tl, "KeyRotated")]


def handshakes(tl: TunnelLab) -> list[dict]:
    """Every session the gateway made (a rehandshake would be a second one)."""
    return [e for e in tl.gateway_events() if e.get("reason_code") == "HANDSHAKE_OK"]


def one_session(tl: TunnelLab) -> dict:
    [(iface, sessions)] = tl.cli_json("sessions", "gw0").items()
    assert iface == "gw0" and len(sessions) == 1, sessions
    return sessions[0]


_NONCE = struct.Struct("<4xQ")


def opens(keys: SessionKeys, direction: str, msg: bytes) -> bool:
    """Whether ``msg`` (a captured DATA or KEEPALIVE message, ``direction``
    "c2s" or "s2c") decrypts under ``keys``: its AEAD verifies."""
    counter = struct.unpack_from("<Q", msg, 16)[0]
    key = keys.data_c2s if direction == "c2s" else keys.data_s2c
    try:
        ChaCha20Poly1305(key).decrypt(_NONCE.pack(counter), msg[abi.HDR_LEN:],
                                      msg[:abi.HDR_LEN])
    except InvalidTag:
        return False
    return True


def phase_of(msg: bytes) -> int:
    return 1 if msg[2] & abi.FLAG_KEY_PHASE else 0


def counters(tl: TunnelLab) -> dict[str, int]:
    return {k: v["packets"] for k, v in tl.cli_json("stats", "gw0")["gw0"].items()}
