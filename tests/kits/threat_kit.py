"""Shared pieces of the threat tests (one module per threat of the seed):
a running lab, the victim's session and keys, and snapshots of the state a
rejected message must not change."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from jvpn import wire
from jvpn.gate import abi
from jvpn.gate.pins import GateMaps
from jvpn.handshake import Initiator
from jvpn.keys import KeyRing, SessionKeys
from jvpn.lab.addresses import PORT
from jvpn.lab.attacker import Attacker
from jvpn.lab.tunnel import TunnelLab
from jvpn.store.sqlite import SqliteStore


def victim(tl: TunnelLab) -> tuple[int, SessionKeys]:
    [s] = tl.cli_json("sessions", "gw0")["gw0"]
    sid = int(s["session_id"], 16)
    store = SqliteStore(tl.tmp / "state" / "sessions.db")
    try:
        _rec, raw = store.get(sid)
    finally:
        store.close()
    return sid, KeyRing.unpack(raw).current  # any secrets version (a rekeyed session too)


def counters(tl: TunnelLab) -> dict[str, int]:
    return {k: v["packets"] for k, v in tl.cli_json("stats", "gw0")["gw0"].items()}


def delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def snapshot(tl: TunnelLab, sid: int) -> tuple:
    """The store record and the XDP element, byte for byte."""
    store = SqliteStore(tl.tmp / "state" / "sessions.db")
    try:
        rec = store.get(sid)
    finally:
        store.close()
    with GateMaps(Path(tl.env["JVPN_PIN_ROOT"]) / "gw0") as maps:
        element = maps.get_session(sid)
    # the genuine client's keepalives raise the control floor meanwhile (the
    # daemon's, after the AEAD: issue 10 item 5), its probes the probe floor
    # (issue 14); an attack must not, and tests/unit/test_header_copy.py and
    # tests/unit/test_path_probes.py check that directly
    element.ctl_floor = 0
    element.probe_floor = 0
    return rec, bytes(element)


def attacker(tl: TunnelLab) -> Attacker:
    return Attacker(tl.lab)


def settle(seconds: float = 0.5) -> None:
    time.sleep(seconds)


def data_message(sid: int, key: bytes, counter: int, payload: bytes = b"x" * 64) -> bytes:
    return wire.message(wire.Header(type=abi.MSG_DATA, session_id=sid, counter=counter), key,
                        payload)


def answered_initiation(tl: TunnelLab, role: str, dst: str) -> bytes | None:
    """Send a valid, fresh initiation from ``role`` to ``dst`` (IPv4 or
    IPv6): the answer, if any."""
    msg = Initiator(tl.client_private, tl.gw_pub).initiation()
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with tl.lab.socket(role, family, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.sendto(msg, (dst, PORT))
        try:
            return s.recv(2048)
        except (TimeoutError, ConnectionRefusedError):
            return None
