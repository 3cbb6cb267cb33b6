"""The cluster lab's routing daemon stand-in: the backend's route to each
attached session's inner address follows the session's owner in etcd, as a
routing daemon announcing the owner's /32 would."""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Callable

SESSIONS_PREFIX = "/jvpn/sessions/"

class RouteAnnouncer:
    """Installs the backend's route to each ATTACHED session's inner address
    via the gateway that owns it, from the etcd session records: a watch for
    speed, plus a full scan every ``rescan_s`` that also notices a dead etcd
    (and then reconnects) or a watch that missed something (and restarts it).
    Each key's newest mod_revision applied is kept, so an event older than
    what a scan already applied never rolls a route back."""

    def __init__(self, host: str, port: int, install: Callable[[str, str], None],
                 via: dict[str, str], prefix: str = SESSIONS_PREFIX, rescan_s: float = 1.0):
        self.host, self.port, self.prefix = host, port, prefix
        self.install, self.via, self.rescan_s = install, via, rescan_s
        self.announcements: list[tuple[str, str]] = []  # (inner addr, owner), in order
        self.routes: dict[str, str] = {}  # inner addr -> owner it is routed to now
        self.errors: list[str] = []
        self._rev: dict[bytes, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="route-announcer", daemon=True)

    @property
    def announced(self) -> int:
        return len(self.announcements)

    def start(self) -> RouteAnnouncer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        import etcd3gw  # noqa: PLC0415 - only the cluster lab needs it

        while not self._stop.is_set():
            try:
                client = etcd3gw.client(host=self.host, port=self.port, timeout=2)
                self._follow(client)
            except Exception as e:  # noqa: BLE001 - any etcd hiccup: reconnect and rescan
                self.errors.append(repr(e)[:300])
                self._stop.wait(0.5)

    def _follow(self, client) -> None:
        """Watch first, then scan: nothing falls between the two."""
        events, cancel = client.watch_prefix(self.prefix)
        drain = threading.Thread(target=self._drain, args=(events,), daemon=True)
        drain.start()
        try:
            first = True
            while not self._stop.is_set():
                fixed = self._scan(client)
                if fixed and not first:
                    return  # the scan had to catch up: the watch may be dead, restart it
                first = False
                self._stop.wait(self.rescan_s)
        finally:
            cancel()
            drain.join(timeout=2)

    def _drain(self, events) -> None:
        for ev in events:  # ends when the watch is cancelled
            kv = ev.get("kv", {})
            if ev.get("type") != "DELETE" and "value" in kv:
                self._apply(kv["key"], kv["value"], int(kv.get("mod_revision", 0)))

    def _scan(self, client) -> bool:
        fixed = False
        for value, meta in client.get_prefix(self.prefix):
            fixed |= self._apply(meta["key"], value, int(meta.get("mod_revision", 0)))
        return fixed

    def _apply(self, key: bytes, value: bytes, rev: int) -> bool:
        """True when this (key, revision) was new."""
        with self._lock:
            if rev <= self._rev.get(key, 0):
                return False
            self._rev[key] = rev
            target = self._target(value)
            if target is not None and self.routes.get(target[0]) != target[1]:
                addr, owner = target
                try:
                    self.install(addr, self.via[owner])
                except Exception as e:  # noqa: BLE001 - retried at the next scan
                    self._rev.pop(key, None)
                    self.errors.append(f"install {addr} via {owner}: {e!r}"[:300])
                    return True
                self.routes[addr] = owner
                self.announcements.append((addr, owner))
            return True

    def _target(self, value: bytes) -> tuple[str, str] | None:
        """(inner addr, owner) when the record says where to route, else None."""
        try:
            rec = json.loads(json.loads(value)["record"])
            addr = str(ipaddress.IPv4Address(rec.get("inner_addr") or ""))
        except (ValueError, KeyError, TypeError):
            return None  # not a routable session record (or not one at all)
        if rec.get("state") != "ATTACHED" or rec.get("owner") not in self.via:
            return None
        return addr, rec["owner"]
