"""The cluster store: etcd v3 (through its JSON gateway, with the maintained
`etcd3gw` client), behind the same interface as the SQLite default.

Keys under ``<prefix>`` (default ``/jvpn/``):
    sessions/<session id hex>  {"record": ..., "secrets": <AES-GCM sealed>}
    floors/<session id hex>    gateway send-counter floor
    replay/<session id hex>    client counter (replay) ceiling
    gateways/<node id>         registration, attached to the gateway's lease
    initiations/<peer key hex> the peer's newest accepted handshake timestamp

Compare-and-swap is one etcd transaction on the key's ``mod_revision`` (create:
``create_revision == 0``), so two gateways racing for one record cannot both
win. Session secrets are sealed with a cluster key (AES-256-GCM, the session
key as associated data): a gateway without the key cannot use them. Any error
from etcd (unreachable, timeout, an answer that does not parse) is a
StoreError: callers fail closed.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from jvpn.session import SessionRecord
from jvpn.store import (
    AlreadyExists,
    GatewayGone,
    SkipsUnreadable,
    StoreError,
    Unreadable,
    VersionConflict,
    check_cas,
    stored_json,
)
from jvpn.store.etcd_claims import EtcdClaims
from jvpn.store.etcd_cluster import EtcdGateways, EtcdWatch
from jvpn.store.etcd_codec import (
    NodeIdTaken,
    _b64,
    _counter,
    _meta_key,
    _parse_session,
    _unb64,
)
from jvpn.store.etcd_restore import EtcdRestore

__all__ = ["EtcdStore", "NodeIdTaken"]  # callers catch NodeIdTaken from here


class EtcdStore(EtcdClaims, EtcdGateways, EtcdWatch, EtcdRestore, SkipsUnreadable):

    def __init__(self, host: str = "127.0.0.1", port: int = 2379, *, cluster_key: bytes,
                 prefix: str = "/jvpn/", timeout_s: float = 2.0):
        if len(cluster_key) != 32:
            raise StoreError("the cluster key must be 32 bytes")
        import etcd3gw  # noqa: PLC0415 - only clusters need it

        self._client = etcd3gw.client(host=host, port=port, timeout=timeout_s)
        self.endpoint = f"{host}:{port}"
        self._aead = AESGCM(cluster_key)
        self.prefix = prefix
        self._leases: dict[str, Any] = {}
        self._seen: dict[int, tuple[int, int, str]] = {}  # sid -> (version, mod_revision, sealed)
        self._stop = threading.Event()
        self.lease_id, self.lease_ttl_s = 0, 0
        self._valid_until, self._expired = 0.0, False

    # ------------------------------------------------------------ plumbing
    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}/{name}"

    def _sid_key(self, sid: int) -> str:
        return self._key("sessions", f"{sid:016x}")

    def _call(self, what: str, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except Exception as e:  # noqa: BLE001 - etcd3gw/requests raise many types: fail closed
            detail = str(e) or type(e).__name__  # etcd3gw's connection errors have no text
            raise StoreError(f"etcd {what} at {self.endpoint} failed: {detail}") from e

    def _txn(self, compare: list, success: list, failure: list | None = None) -> bool:
        return self._txn_rev(compare, success, failure)[0]

    def _txn_rev(self, compare: list, success: list,
                 failure: list | None = None) -> tuple[bool, int]:
        """(succeeded, the store's revision after it: a key put by a
        successful transaction has this mod_revision)."""
        resp = self._txn_resp(compare, success, failure)
        return bool(resp.get("succeeded", False)), int(resp["header"]["revision"])

    def _txn_resp(self, compare: list, success: list, failure: list | None = None) -> dict:
        resp = self._call("transaction", self._client.transaction,
                          {"compare": compare, "success": success, "failure": failure or []})
        try:
            int(resp["header"]["revision"])
        except (KeyError, TypeError, ValueError) as e:
            raise StoreError(f"etcd transaction: unexpected answer {resp!r:.200}") from e
        return resp

    def _get_raw(self, key: str) -> tuple[bytes, int] | None:
        got = self._call("get", self._client.get, key, metadata=True)
        if not got:
            return None
        value, meta = got[0]
        return value, int(meta["mod_revision"])

    def _seal(self, sid: int, secrets: bytes) -> str:
        nonce = os.urandom(12)
        return _b64(nonce + self._aead.encrypt(nonce, secrets, self._sid_key(sid).encode()))

    def _open(self, sid: int, sealed: str) -> bytes:
        try:
            raw = _unb64(sealed)
            return self._aead.decrypt(raw[:12], raw[12:], self._sid_key(sid).encode())
        except InvalidTag:
            raise StoreError("session secrets do not open: wrong cluster key") from None
        except ValueError as e:
            raise Unreadable(f"session {sid:016x}: sealed secrets are not base64: {e}") from None

    @staticmethod
    def _put(key: str, value: str, lease: int | None = None) -> dict:
        req: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease is not None:
            req["lease"] = lease
        return {"request_put": req}

    # ------------------------------------------------------------ Store
    def create(self, rec: SessionRecord, secrets: bytes) -> None:
        key = self._sid_key(rec.session_id)
        sealed = self._seal(rec.session_id, secrets)
        value = json.dumps({"record": stored_json(rec), "secrets": sealed})
        ok, rev = self._txn_rev([{"key": _b64(key), "result": "EQUAL", "target": "CREATE",
                                  "create_revision": 0}], [self._put(key, value)])
        if not ok:
            raise AlreadyExists(f"session {rec.session_id:016x} exists")
        self._seen[rec.session_id] = (rec.version, rev, sealed)

    def _load(self, sid: int) -> tuple[SessionRecord, str, int] | None:
        """(record, sealed secrets, mod_revision); raises Unreadable."""
        got = self._get_raw(self._sid_key(sid))
        if got is None:
            return None
        value, rev = got
        rec, sealed = _parse_session(value)
        return rec, sealed, rev

    def get(self, session_id: int) -> tuple[SessionRecord, bytes] | None:
        """None also for a value that does not parse (skipped and reported)."""
        try:
            got = self._load(session_id)
        except Unreadable as e:
            self._skipped(self._sid_key(session_id), e)
            got = None
        if got is None:
            self._seen.pop(session_id, None)
            return None
        rec, sealed, rev = got
        self._seen[session_id] = (rec.version, rev, sealed)
        return rec, self._open(session_id, sealed)

    def cas(self, session_id: int, expected_version: int, new: SessionRecord,
            alive: tuple[str, int] | None = None, secrets: bytes | None = None) -> None:
        """One transaction on the key's mod_revision. The revision is the one
        this store last saw the record at, if that was ``expected_version``
        (every write bumps the version, so an unchanged revision means an
        unchanged record); otherwise it is read first. ``secrets``: new
        session secrets (a rekey's key ring), sealed, in the same write. A
        secrets-only write keeps the version but moves the revision: a
        cache of another store object that missed it fails the compare (a
        VersionConflict, never a lost write) and is read again."""
        check_cas(session_id, expected_version, new, secrets)
        seen = self._seen.get(session_id)
        if seen is not None and seen[0] == expected_version:
            _v, rev, sealed = seen
        else:
            rev, sealed = self._current(session_id, expected_version)
        if secrets is not None:
            sealed = self._seal(session_id, secrets)
        key = self._sid_key(session_id)
        value = json.dumps({"record": stored_json(new), "secrets": sealed})
        compare = [{"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": rev}]
        failure = []
        if alive is not None:  # ... and only while that gateway holds that lease
            gw = _b64(self._key("gateways", alive[0]))
            compare.append({"key": gw, "result": "EQUAL", "target": "LEASE", "lease": alive[1]})
            failure = [{"request_range": {"key": gw}}]
        resp = self._txn_resp(compare, [self._put(key, value)], failure)
        if not resp.get("succeeded", False):
            if alive is not None and self._lease_in(resp) != alive[1]:
                raise GatewayGone(f"gateway {alive[0]} no longer holds lease {alive[1]}")
            self._seen.pop(session_id, None)
            raise VersionConflict(f"session {session_id:016x} changed under us")
        self._seen[session_id] = (new.version, int(resp["header"]["revision"]), sealed)

    @staticmethod
    def _lease_in(resp: dict) -> int | None:
        """The lease of the gateway key a failed transaction read back."""
        try:
            kvs = resp["responses"][0]["response_range"].get("kvs", [])
            return int(kvs[0].get("lease", 0)) if kvs else None
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise StoreError(f"etcd transaction: unexpected failure answer: {e}") from e

    def _current(self, session_id: int, expected_version: int) -> tuple[int, str]:
        got = self._load(session_id)
        if got is None:
            raise VersionConflict(f"session {session_id:016x} is gone")
        rec, sealed, rev = got
        if rec.version != expected_version:
            raise VersionConflict(
                f"session {session_id:016x} is no longer at version {expected_version}")
        return rev, sealed

    def delete(self, session_id: int, expected_version: int | None = None) -> None:
        key = self._sid_key(session_id)
        self._seen.pop(session_id, None)
        got = self._load(session_id)
        if got is None or (expected_version is not None and got[0].version != expected_version):
            raise VersionConflict(f"session {session_id:016x}: nothing deleted")
        floor = self._key("floors", f"{session_id:016x}")
        ceiling = self._key("replay", f"{session_id:016x}")
        ok = self._txn([{"key": _b64(key), "result": "EQUAL", "target": "MOD",
                         "mod_revision": got[2]}],
                       [{"request_delete_range": {"key": _b64(key)}},
                        {"request_delete_range": {"key": _b64(floor)}},
                        {"request_delete_range": {"key": _b64(ceiling)}}])
        if not ok:
            raise VersionConflict(f"session {session_id:016x} changed under us")

    def forget_old_secrets(self) -> bool:
        """Nothing to do here: etcd keeps every older revision of a sealed
        ring until compaction (docs/protocol.md "What is on disk")."""
        return True

    def list(self) -> list[SessionRecord]:
        """Every session record that parses; the others are skipped and reported."""
        got = self._call("get_prefix", self._client.get_prefix, self._key("sessions", ""))
        out = []
        for value, meta in got:
            try:
                out.append(_parse_session(value)[0])
            except Unreadable as e:
                self._skipped(_meta_key(meta), e)
        return sorted(out, key=lambda r: r.session_id)

    def get_floor(self, session_id: int) -> int:
        key = self._key("floors", f"{session_id:016x}")
        got = self._get_raw(key)
        return _counter(got[0], key)[0] if got else 0

    def set_floor(self, session_id: int, floor: int) -> None:
        self._raise(self._key("floors", f"{session_id:016x}"), floor, "counter floor")

    def get_replay_ceiling(self, session_id: int) -> tuple[int, bool]:
        """(ceiling, exact): the value is "<ceiling>" raised, "<ceiling> exact" settled."""
        key = self._key("replay", f"{session_id:016x}")
        got = self._get_raw(key)
        return _counter(got[0], key) if got else (0, True)

    def raise_replay_ceiling(self, session_id: int, ceiling: int) -> None:
        self._raise(self._key("replay", f"{session_id:016x}"), ceiling, "replay ceiling")

    def settle_replay_ceiling(self, session_id: int, ceiling: int) -> None:
        key = self._key("replay", f"{session_id:016x}")
        if not self._txn([], [self._put(key, f"{ceiling} exact")]):
            raise StoreError(f"replay ceiling of {session_id:016x}: not written")

    def _raise(self, key: str, value: int, what: str) -> None:
        for _ in range(5):  # monotonic: never lower a value another writer raised
            got = self._get_raw(key)
            if got is not None and _counter(got[0], key)[0] >= value:
                return
            compare = ([{"key": _b64(key), "result": "EQUAL", "target": "CREATE",
                         "create_revision": 0}] if got is None else
                       [{"key": _b64(key), "result": "EQUAL", "target": "MOD",
                         "mod_revision": got[1]}])
            if self._txn(compare, [self._put(key, str(value))]):
                return
        raise StoreError(f"{what} of {key}: too much contention")

    def close(self) -> None:
        self._stop.set()
        resp = getattr(self, "_watch_resp", None)
        if resp is not None:  # wake a reader blocked on the stream (close() would wait for it)
            try:
                sock = socket.socket(fileno=os.dup(resp.raw.fileno()))
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except (OSError, ValueError, AttributeError):
                pass
        for lease in self._leases.values():
            try:
                lease.revoke()
            except Exception:  # noqa: BLE001 - best effort: the lease expires anyway
                pass


# ------------------------------------------------------------ parsing what etcd holds
