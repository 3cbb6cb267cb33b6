"""Store.restorable for etcd: paged range reads of the sessions, floors and
replay prefixes (a million sessions: a hundred reads of 10,000 keys, not
four reads each). A mixin of jvpn/store/etcd.py's EtcdStore (its client,
key layout, sealing and revision cache)."""

from __future__ import annotations

from collections.abc import Iterator

from jvpn.store import RESTORE_PAGE, Stored, StoreError, Unreadable
from jvpn.store.etcd_codec import _meta_key, _parse_session


class EtcdRestore:
    def _pages(self, kind: str, page: int) -> Iterator[tuple[str, bytes, dict]]:
        """(key, value, metadata) of every key under ``kind/``, ``page`` per read."""
        start = self._key(kind, "")
        end = start[:-1] + chr(ord(start[-1]) + 1)  # the prefix's range end
        while True:
            got = self._call("get", self._client.get, start, metadata=True, range_end=end,
                             limit=page, sort_order="ascend", sort_target="key")
            for value, meta in got:
                yield _meta_key(meta), value, meta
            if len(got) < page:
                return
            start = _meta_key(got[-1][1]) + "\0"

    def _numbers(self, kind: str, page: int) -> dict[int, str]:
        """The floors/ or replay/ values by session id."""
        out = {}
        for key, value, _meta in self._pages(kind, page):
            try:
                out[int(key.rsplit("/", 1)[1], 16)] = (value.decode() if isinstance(value, bytes)
                                                       else str(value))
            except (IndexError, ValueError):
                continue  # not a session's: nothing of ours reads it either
        return out

    def restorable(self, page: int = RESTORE_PAGE) -> Iterator[Stored]:
        floors, ceilings = self._numbers("floors", page), self._numbers("replay", page)
        for key, value, meta in self._pages("sessions", page):
            try:
                rec, sealed = _parse_session(value)
            except Unreadable as e:
                self._skipped(key, e)
                continue
            sid = rec.session_id
            self._seen[sid] = (rec.version, int(meta.get("mod_revision", 0)), sealed)
            ceiling = ceilings.get(sid)
            stored = Stored(rec, b"", int(floors.get(sid, "0").split()[0]),
                            (int(ceiling.split()[0]), ceiling.endswith(" exact"))
                            if ceiling is not None else (0, True))
            try:
                yield Stored(rec, self._open(sid, sealed), stored.floor, stored.ceiling)
            except StoreError as e:  # sealed under another cluster key: this one only
                yield Stored(rec, b"", stored.floor, stored.ceiling, problem=e)
