"""The cluster half of the etcd store: gateway registration under a kept-alive
lease (the fencing token) and the session watch. Mixins of
:class:`jvpn.store.etcd.EtcdStore`, over its client, keys and caches; the
record half (CAS, sealing, counters) stays in jvpn/store/etcd.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

from jvpn.store import Change, StoreError, Unreadable
from jvpn.store.etcd_codec import (
    NodeIdTaken,
    _b64,
    _meta_key,
    _parse_event,
    _parse_session,
    _sid_of,
)


class EtcdGateways:
    """Registration and the lease: who is alive, and until when we certainly are."""

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
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise StoreError(f"gateway registration of {node_id} does not parse: {e}") from e

    def gateways(self) -> list[str]:
        """The node ids of the live registrations; one that does not read
        (a damaged or hostile etcd) is a StoreError naming its key."""
        got = self._call("get_prefix", self._client.get_prefix, self._key("gateways", ""))
        return sorted(_node_of(value, meta) for value, meta in got)



def _node_of(value: bytes, meta) -> str:
    try:
        node = json.loads(value)["node"]
        if type(node) is not str:
            raise TypeError("the node id is not a string")
    except (ValueError, KeyError, TypeError, RecursionError) as e:  # not UTF-8: a ValueError
        raise StoreError(f"gateway registration {_meta_key(meta)} does not parse: {e}") from e
    return node


class EtcdWatch:
    """Session changes as they happen (watch) and from history (changes)."""

    def changes(self, since_revision: int = 0, timeout_s: float = 0.2) -> Iterator[Change]:
        """Session changes after ``since_revision`` (etcd revisions), read
        from etcd's history until it has nothing more within ``timeout_s``."""
        rev = since_revision + 1
        prefix = self._key("sessions", "")
        # the range end as text: etcd3gw encodes it (its watch_prefix_once
        # encoded an encoded one, and the range ran on past the prefix)
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        while True:
            try:
                ev = self._client.watch_once(prefix, timeout=timeout_s, start_revision=rev,
                                             range_end=end)
            except Exception:  # noqa: BLE001 - etcd3gw raises on the watch timeout
                return
            kv = ev["kv"]  # etcd3gw hands key and value over decoded
            mod = int(kv.get("mod_revision", rev))
            rev = mod + 1
            try:
                sid = _sid_of(kv["key"])  # raw bytes: one not UTF-8 is skipped
                if ev.get("type") == "DELETE":
                    yield Change(mod, sid, -1, "delete")
                    continue
                version = _parse_session(kv["value"])[0].version
            except Unreadable as e:
                self._skipped(repr(kv.get("key")), e)
                continue
            kind = "create" if kv.get("create_revision") == kv.get("mod_revision") else "update"
            yield Change(mod, sid, version, kind)

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
