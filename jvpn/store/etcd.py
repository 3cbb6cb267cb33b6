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

import base64
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from jvpn.session import SessionRecord
from jvpn.store import (
    AlreadyExists,
    Change,
    GatewayGone,
    SkipsUnreadable,
    StoreError,
    Unreadable,
    VersionConflict,
    record_from_json,
    record_to_json,
)


def _b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _initiation(raw: bytes, key: str) -> int:
    """A stored handshake timestamp; one that does not parse fails closed."""
    try:
        return int(raw)
    except ValueError:
        raise StoreError(f"etcd value at {key} is not a timestamp: {raw[:40]!r}") from None


class NodeIdTaken(StoreError):
    pass


class EtcdStore(SkipsUnreadable):
    clustered = True  # several gateways share it: ownership and leases apply

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
        value = json.dumps({"record": record_to_json(rec), "secrets": sealed})
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
            alive: tuple[str, int] | None = None) -> None:
        """One transaction on the key's mod_revision. The revision is the one
        this store last saw the record at, if that was ``expected_version``
        (every write bumps the version, so an unchanged revision means an
        unchanged record); otherwise it is read first."""
        if new.session_id != session_id or new.version <= expected_version:
            raise StoreError("cas: the new record must be the same session at a higher version")
        seen = self._seen.get(session_id)
        if seen is not None and seen[0] == expected_version:
            _v, rev, sealed = seen
        else:
            rev, sealed = self._current(session_id, expected_version)
        key = self._sid_key(session_id)
        value = json.dumps({"record": record_to_json(new), "secrets": sealed})
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
        got = self._get_raw(self._key("floors", f"{session_id:016x}"))
        return int(got[0]) if got else 0

    def set_floor(self, session_id: int, floor: int) -> None:
        self._raise(self._key("floors", f"{session_id:016x}"), floor, "counter floor")

    def get_replay_ceiling(self, session_id: int) -> tuple[int, bool]:
        """(ceiling, exact): the value is "<ceiling>" raised, "<ceiling> exact" settled."""
        got = self._get_raw(self._key("replay", f"{session_id:016x}"))
        if not got:
            return 0, True
        text = got[0].decode() if isinstance(got[0], bytes) else str(got[0])
        return int(text.split()[0]), text.endswith(" exact")

    def raise_replay_ceiling(self, session_id: int, ceiling: int) -> None:
        self._raise(self._key("replay", f"{session_id:016x}"), ceiling, "replay ceiling")

    def settle_replay_ceiling(self, session_id: int, ceiling: int) -> None:
        key = self._key("replay", f"{session_id:016x}")
        if not self._txn([], [self._put(key, f"{ceiling} exact")]):
            raise StoreError(f"replay ceiling of {session_id:016x}: not written")

    def _raise(self, key: str, value: int, what: str) -> None:
        for _ in range(5):  # monotonic: never lower a value another writer raised
            got = self._get_raw(key)
            if got is not None and int(got[0].split()[0]) >= value:
                return
            compare = ([{"key": _b64(key), "result": "EQUAL", "target": "CREATE",
                         "create_revision": 0}] if got is None else
                       [{"key": _b64(key), "result": "EQUAL", "target": "MOD",
                         "mod_revision": got[1]}])
            if self._txn(compare, [self._put(key, str(value))]):
                return
        raise StoreError(f"{what} of {key}: too much contention")

    def claim_initiation(self, peer: bytes, timestamp_ns: int) -> bool:
        """Compare-and-swap on the key's revision: of two gateways that
        claim one initiation at once, one transaction wins and the other
        re-reads a value that is not older (False)."""
        key = self._key("initiations", peer.hex())
        for _ in range(5):
            got = self._get_raw(key)
            if got is not None and _initiation(got[0], key) >= timestamp_ns:
                return False
            compare = ([{"key": _b64(key), "result": "EQUAL", "target": "CREATE",
                         "create_revision": 0}] if got is None else
                       [{"key": _b64(key), "result": "EQUAL", "target": "MOD",
                         "mod_revision": got[1]}])
            if self._txn(compare, [self._put(key, str(timestamp_ns))]):
                return True
        raise StoreError(f"handshake timestamp of {peer.hex()[:16]}...: too much contention")

    def last_initiation(self, peer: bytes) -> int:
        key = self._key("initiations", peer.hex())
        got = self._get_raw(key)
        return _initiation(got[0], key) if got is not None else 0

    def changes(self, since_revision: int = 0, timeout_s: float = 0.2) -> Iterator[Change]:
        """Session changes after ``since_revision`` (etcd revisions), read
        from etcd's history until it has nothing more within ``timeout_s``."""
        rev = since_revision + 1
        while True:
            try:
                ev = self._client.watch_prefix_once(self._key("sessions", ""), timeout=timeout_s,
                                                    start_revision=rev)
            except Exception:  # noqa: BLE001 - etcd3gw raises on the watch timeout
                return
            kv = ev["kv"]  # etcd3gw hands key and value over decoded
            mod = int(kv.get("mod_revision", rev))
            rev = mod + 1
            try:
                sid = _sid_of(kv["key"].decode())
                if ev.get("type") == "DELETE":
                    yield Change(mod, sid, -1, "delete")
                    continue
                version = _parse_session(kv["value"])[0].version
            except Unreadable as e:
                self._skipped(repr(kv.get("key")), e)
                continue
            kind = "create" if kv.get("create_revision") == kv.get("mod_revision") else "update"
            yield Change(mod, sid, version, kind)

    # ------------------------------------------------------------ gateways
    def register_gateway(self, node_id: str, ttl_s: int = 2) -> int:
        """Register under a lease kept alive by a thread; returns the lease id
        (the gateway's fencing token). ``lease_valid()`` says whether the
        lease is certainly still alive: the deadline counts from the moment a
        refresh was *sent*, so it ends no later than etcd's own expiry."""
        if ttl_s < 2:
            raise StoreError("a gateway lease must last at least 2 s")
        sent = time.monotonic()
        lease = self._call("lease", self._client.lease, ttl_s)
        key = self._key("gateways", node_id)
        value = json.dumps({"node": node_id, "lease": int(lease.id)})
        # only if no live gateway holds this node id: two daemons under one
        # id would both believe they own its sessions
        if not self._txn([{"key": _b64(key), "result": "EQUAL", "target": "CREATE",
                           "create_revision": 0}], [self._put(key, value, int(lease.id))]):
            self._call("lease revoke", lease.revoke)
            raise NodeIdTaken(f"another gateway is registered as {node_id!r} in etcd: node ids "
                              "must be unique (a crashed one's registration ends with its "
                              "lease)")
        self._leases[node_id] = lease
        self.lease_id, self.lease_ttl_s = int(lease.id), ttl_s
        self._valid_until, self._expired = sent + ttl_s, False
        threading.Thread(target=self._keepalive, args=(lease, ttl_s), daemon=True).start()
        return self.lease_id

    def _keepalive(self, lease, ttl_s: int) -> None:
        while not self._stop.wait(ttl_s / 4):
            if int(lease.id) != self.lease_id:
                return  # re-registered under a new lease: this one is abandoned
            sent = time.monotonic()
            try:
                left = lease.refresh()
            except Exception:  # noqa: BLE001 - keep trying; expiry is the safe outcome
                continue
            if left <= 0:
                self._valid_until = 0.0  # etcd says it is gone: fenced at once
                self._expired = True
                return
            self._valid_until = sent + left

    def lease_expired(self) -> bool:
        """etcd answered that our lease no longer exists (not: unreachable)."""
        return self._expired

    def lease_deadline(self) -> float:
        """time.monotonic() until which our lease is certainly alive."""
        return self._valid_until

    def lease_valid(self, margin_s: float = 0.0) -> bool:
        return time.monotonic() < self._valid_until - margin_s

    def gateway_lease(self, node_id: str) -> int | None:
        """The lease a live gateway is registered under; None when it is not
        registered (never was, or its lease expired)."""
        got = self._get_raw(self._key("gateways", node_id))
        if got is None:
            return None
        try:
            return int(json.loads(got[0])["lease"])
        except (ValueError, KeyError, TypeError) as e:
            raise StoreError(f"gateway registration of {node_id} does not parse: {e}") from e

    def gateways(self) -> list[str]:
        got = self._call("get_prefix", self._client.get_prefix, self._key("gateways", ""))
        return sorted(json.loads(v)["node"] for v, _m in got)

    def watch_sessions(self, on_record, stop: threading.Event) -> None:
        """Blocking: ``on_record(session_id, record or None)`` for every
        session change, until ``stop``. The stream is re-opened after any
        error; callers must also re-read the whole prefix now and then (a
        change made while the stream was down is only seen that way)."""
        url = self._client.get_url("/watch")
        prefix = self._key("sessions", "")
        create = {"key": _b64(prefix), "range_end": _b64(prefix[:-1] + chr(ord(prefix[-1]) + 1))}
        while not stop.is_set():
            try:
                resp = self._client.session.post(url, json={"create_request": create},
                                                 stream=True, timeout=(2, None))
                self._watch_resp = resp
                for line in resp.iter_lines():
                    if stop.is_set():
                        return
                    if line:
                        self._dispatch(json.loads(line).get("result", {}), on_record)
            except Exception:  # noqa: BLE001 - etcd gone or the stream cut: re-open
                pass
            stop.wait(0.2)

    def _dispatch(self, result: dict, on_record) -> None:
        """Each event of a watch answer; one that does not parse is skipped
        and reported, the others still delivered."""
        for ev in result.get("events", ()):
            try:
                sid, rec, sealed, rev = _parse_event(ev)
            except Unreadable as e:
                self._skipped(_meta_key(ev.get("kv")), e)
                continue
            if rec is None:
                self._seen.pop(sid, None)
                on_record(sid, None)
                continue
            if rev > self._seen.get(sid, (0, 0, ""))[1]:  # a CAS needs no read after this
                self._seen[sid] = (rec.version, rev, sealed)
            on_record(sid, rec)

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
def _parse_session(value: bytes | str) -> tuple[SessionRecord, str]:
    """(record, sealed secrets) of a sessions/ value; raises Unreadable."""
    try:
        doc = json.loads(value)
        record, sealed = doc["record"], doc["secrets"]
        if not isinstance(record, str) or not isinstance(sealed, str):
            raise TypeError("record and secrets must be strings")
    except (ValueError, KeyError, TypeError) as e:
        raise Unreadable(f"not a session value ({type(e).__name__}: {e})") from None
    return record_from_json(record), sealed


def _sid_of(key: str) -> int:
    try:
        return int(key.rsplit("/", 1)[1], 16)
    except (IndexError, ValueError) as e:
        raise Unreadable(f"not a session key: {key!r:.80}") from e


def _parse_event(ev: dict) -> tuple[int, SessionRecord | None, str, int]:
    """(session id, record or None for a deletion, sealed secrets,
    mod_revision) of one watch event (key and value base64); raises Unreadable."""
    try:
        kv = ev["kv"]
        sid = _sid_of(_unb64(kv["key"]).decode())
        if ev.get("type") == "DELETE":
            return sid, None, "", 0
        rec, sealed = _parse_session(_unb64(kv["value"]))
        return sid, rec, sealed, int(kv.get("mod_revision", 0))
    except (KeyError, TypeError, ValueError) as e:
        raise Unreadable(f"not a session event ({type(e).__name__}: {e})") from None


def _meta_key(meta) -> str:
    """The key of a value etcd3gw returned with its metadata (for the report)."""
    try:
        key = meta["key"]
        return key.decode() if isinstance(key, bytes) else _unb64(key).decode()
    except Exception:  # noqa: BLE001 - only used to name what was skipped
        return "?"
