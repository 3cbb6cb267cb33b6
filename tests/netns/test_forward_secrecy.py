"""Issue 13, second "Done when": forward secrecy, concretely. An on-path
recorder (the router's port in front of the gateway) keeps every datagram of
the session from its handshake on; then the session rekeys and the overlap
ends; the test gets what a later thief would: the store's current key ring
and both static private keys. Nothing it can compute from them opens a
single captured data message: not the current epochs, not a Noise responder
fed the captured initiation with the gateway's static key, not the rekey
derivation run from the keys it holds over the ephemerals on the wire and
the static keys' DH. The keys the store held *while* the capture ran (polled
meanwhile, the control) open every one of them: the capture is real and the
opening code works. The old epochs' key bytes are gone from the store's
secrets, and from sessions.db and its WAL after a checkpoint
(docs/protocol.md "Rekey", "What is on disk, and for how long")."""

from __future__ import annotations

import ipaddress
import itertools
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from jvpn import keys as jkeys
from jvpn import wire
from jvpn.gate import abi
from jvpn.handshake import Assignment, HandshakeError, Responder
from jvpn.keys import KeyRing, RekeyBinding, RekeyError, SessionKeys, derive_rekey
from jvpn.lab.addresses import CLIENT_INNER, GW_INNER, INNER_PREFIX, ROUTER_GW_IF
from jvpn.lab.capture import Recorder
from jvpn.lab.running import rekey_policy
from jvpn.lab.tunnel import TunnelLab
from jvpn.store.sqlite import SqliteStore
from kits.rekey_lab_kit import handshakes, opens, raw_secrets, store_ring

pytestmark = pytest.mark.kernel

REKEY_MS, REJECT_MS, OVERLAP_MS = 2_000, 6_000, 300
SEALED = (abi.MSG_DATA, abi.MSG_KEEPALIVE)  # what carries ciphertext


class KeyPoller:
    """The control: every epoch's keys the store held, polled every 10 ms
    while the capture runs (a test-only view; the thief never has it)."""

    def __init__(self, db: Path):
        self.seen: dict[int, SessionKeys] = {}
        self._db, self._stop = db, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                store = SqliteStore(self._db)
            except Exception:  # noqa: BLE001 - the gateway has not created it yet
                time.sleep(0.01)
                continue
            try:
                while not self._stop.is_set():
                    for rec in store.list():
                        got = store.get(rec.session_id)
                        for k in KeyRing.unpack(got[1]).live() if got else ():
                            self.seen.setdefault(k.epoch, k)
                    time.sleep(0.01)
            finally:
                store.close()

    def stop(self) -> dict[int, SessionKeys]:
        self._stop.set()
        self._t.join(timeout=5)
        return dict(self.seen)


def _dh(private: bytes, public: bytes) -> bytes | None:
    try:
        return X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(public))
    except ValueError:
        return None


def _handshake_replays(tl: TunnelLab, inits: list[bytes], sid: int) -> list[SessionKeys]:
    """A Noise responder with the gateway's static key fed each captured
    initiation: the keys it ends with (its own fresh ephemeral: the real
    responder's is gone)."""
    out = []
    for msg in inits:
        try:
            init = Responder(tl.gw_private, lambda _pub: True).open(msg)
        except HandshakeError:
            continue
        a = Assignment(sid, ipaddress.IPv4Interface(f"{CLIENT_INNER}/{INNER_PREFIX}"),
                       ipaddress.IPv4Address(GW_INNER))
        out.append(init.respond(a)[1])
    return out


def _rekey_attempts(tl: TunnelLab, captured) -> list[bytes]:
    """Every X25519 secret the thief can make: the static keys with each
    other and with every ephemeral public key seen on the wire."""
    ephemerals = []
    for _d, msg, _c in captured:
        if msg[0] == abi.MSG_REKEY_INIT:
            ephemerals.append(wire.REKEY_INIT.unpack_from(msg, abi.HDR_LEN)[2])
        elif msg[0] == abi.MSG_REKEY_RESP:
            ephemerals.append(wire.REKEY_RESP.unpack_from(msg, abi.HDR_LEN)[4])
    client_pub = jkeys.public_from_private(tl.client_private)
    secrets = [_dh(tl.gw_private, client_pub)]
    secrets += [_dh(priv, e) for priv in (tl.gw_private, tl.client_private) for e in ephemerals]
    return [s for s in secrets if s]


def _bindings(captured) -> list[RekeyBinding]:
    """Each rekey's public binding, as the wire shows it (RESP after INIT)."""
    inits = {wire.REKEY_INIT.unpack_from(m, abi.HDR_LEN)[0]: wire.REKEY_INIT.unpack_from(
        m, abi.HDR_LEN)[2] for _d, m, _c in captured if m[0] == abi.MSG_REKEY_INIT}
    out = []
    for _d, m, _c in captured:
        if m[0] == abi.MSG_REKEY_RESP:
            new, switch, version, _o, g_eph, _conf = wire.REKEY_RESP.unpack_from(m, abi.HDR_LEN)
            if new in inits:
                out.append(RekeyBinding(new, switch, version, inits[new], g_eph))
    return out


def _derived(bases: list[SessionKeys], secrets: list[bytes],
             bindings: list[RekeyBinding]) -> list[SessionKeys]:
    """The rekey derivation run from every key the thief holds, over every
    secret it can make, for every binding on the wire (whatever epoch)."""
    out = []
    for base, shared, b in itertools.product(bases, secrets, bindings):
        try:
            out.append(derive_rekey(replace(base, epoch=b.new_epoch - 1), shared, b))
        except RekeyError:
            continue
    return out


def _statics_as_keys(tl: TunnelLab, sid: int) -> list[SessionKeys]:
    """The static private keys tried as the data keys themselves."""
    g, c = tl.gw_private, tl.client_private
    return [SessionKeys(sid, g, c, g[:16], c[:16], g), SessionKeys(sid, c, g, c[:16], g[:16], c)]


def _checkpointed_files(db: Path) -> bytes:
    """sessions.db and its WAL after a TRUNCATE checkpoint (the gateway's
    connection may be busy for a moment: retried)."""
    for _ in range(50):
        con = sqlite3.connect(str(db), timeout=5)
        try:
            busy = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            con.close()
        if not busy:
            break
        time.sleep(0.1)
    else:
        pytest.fail("sessions.db: no checkpoint got through in 5 s")
    wal = db.with_name(db.name + "-wal")
    return db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def _key_bytes(k: SessionKeys) -> list[bytes]:
    return [k.data_c2s, k.data_s2c, k.hdr_c2s, k.hdr_s2c, k.reattach]


def test_captured_traffic_stays_closed_to_later_keys_and_the_static_keys(tmp_path):
    tl = TunnelLab(tmp_path, policy=rekey_policy(REKEY_MS, REJECT_MS, OVERLAP_MS))
    db = tmp_path / "state" / "sessions.db"
    started: dict = {}

    def record():  # from before the client's first packet: its handshake too
        started["rec"] = Recorder(tl.lab.ns("rt"), ROUTER_GW_IF)
        started["keys"] = KeyPoller(db)

    tl.up(before_client=record)
    try:
        # traffic in both directions, across at least one rekey
        tl.lab.run("cl", "ping", "-c", "40", "-i", "0.1", "-s", "600", GW_INNER)
        tl.wait(lambda: store_ring(tl)[1].epoch >= 1, "a first rekey", timeout=15)
        tl.lab.run("cl", "ping", "-c", "10", "-i", "0.1", GW_INNER)
        started["rec"].stop()
        control = started["keys"].stop()
        captured = started["rec"].snapshot()
        last = max(control)  # the newest epoch the capture may hold
        # the thief comes later: after a rekey past the capture and its overlap
        tl.wait(lambda: (lambda r: r.epoch > last and (r.previous is None or
                                                          r.previous.epoch > last))(
                    store_ring(tl)[1]), "the epochs of the capture dropped", timeout=20)
        rec, ring = store_ring(tl)
        secrets_now = raw_secrets(tl)
        on_disk = _checkpointed_files(db)
    finally:
        tl.down()
    sid = rec.session_id
    sealed = [(d, m) for d, m, _c in captured if m[0] in SEALED]
    data = [m for _d, m in sealed if m[0] == abi.MSG_DATA]
    assert len(data) >= 40 and {d for d, _m in sealed} == {"c2s", "s2c"}
    assert len(handshakes(tl)) == 1
    # the control: each captured message opens under an epoch the store held then
    unopened = [m[:24].hex() for d, m in sealed
                if not any(opens(k, d, m) for k in control.values())]
    assert not unopened, f"{len(unopened)} of {len(sealed)} captured messages open under " \
                         f"no epoch the store held (epochs {sorted(control)})"
    assert len({m[2] & abi.FLAG_KEY_PHASE for m in data}) == 2  # both phases: a rekey inside
    # the thief: the current ring, both static keys, the capture
    inits = [m for _d, m, _c in captured if m[0] == abi.MSG_HANDSHAKE_INIT]
    assert inits, "the capture holds the handshake"
    replayed = _handshake_replays(tl, inits, sid)
    assert replayed, "the gateway's static key opens the captured initiation"
    held = [*ring.live(), *replayed, *_statics_as_keys(tl, sid)]
    bindings = _bindings(captured)
    assert bindings, "the capture holds a rekey exchange"
    tried = held + _derived(held, _rekey_attempts(tl, captured), bindings)
    assert all(k.epoch > last for k in ring.live())
    opened = [(k.epoch, d) for k in tried for d, m in sealed if opens(k, d, m)]
    assert not opened, f"{len(opened)} captured messages opened with later keys: {opened[:5]}"
    # the old epochs' key bytes: gone from the secrets value, and from the file
    old = [b for e, k in control.items() if e <= last for b in _key_bytes(k)]
    assert not [b for b in old if b in secrets_now]
    left = [b.hex() for b in old if b in on_disk]
    assert not left, f"{len(left)} old key fields still in sessions.db after a checkpoint"
