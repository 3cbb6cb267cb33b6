"""Store.restorable for etcd: paged range reads of the sessions, floors and
replay prefixes (a million sessions: a hundred reads of 10,000 keys, not
four reads each). A mixin of jvpn/store/etcd.py's EtcdStore (its client,
key layout, sealing and revision cache)."""

from __future__ import annotations

from collections.abc import Iterator

from jvpn.store import RESTORE_PAGE, Stored, StoreError, Unreadable
from jvpn.store.etcd_codec import _counter, _meta_key, _parse_session, _sid_of, _unb64


class EtcdRestore:
    def _pages(self, kind: str, page: int) -> Iterator[tuple[str, bytes, dict]]:
        """(key, value, metadata) of every key under ``kind/``, ``page`` per
        read. The next read starts after the last key's raw bytes: a key
        that does not decode must not end the paging early."""
        start: str | bytes = self._key(kind, "")
        end = start[:-1] + chr(ord(start[-1]) + 1)  # the prefix's range end
        while True:
            got = self._call("get", self._client.get, start, metadata=True, range_end=end,
                             limit=page, sort_order="ascend", sort_target="key")
            for value, meta in got:
                yield _meta_key(meta), value, meta
            if len(got) < page:
                return
            start = _raw_key(got[-1][1]) + b"\0"

    def _numbers(self, kind: str, page: int) -> dict[int, tuple[str, bytes]]:
        """The floors/ or replay/ values by session id, each with its key,
        as stored: a key that names no session is passed over (nothing of
        ours reads it either); a value is read by its session's ``_floor``
        or ``_ceiling``, where one that does not read is that session's
        problem (taken as absent, a floor not UTF-8 restored it at 0)."""
        out = {}
        for key, value, _meta in self._pages(kind, page):
            try:
                out[_sid_of(key)] = (key, value)
            except Unreadable:
                continue
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
            try:
                floor, ceiling = _floor(floors.get(sid)), _ceiling(ceilings.get(sid))
                yield Stored(rec, self._open(sid, sealed), floor, ceiling)
            except StoreError as e:  # this session's only (Unreadable: its floor or ceiling)
                yield Stored(rec, b"", problem=e)


def _floor(got: tuple[str, bytes] | None) -> int:
    return _counter(got[1], got[0])[0] if got is not None else 0


def _ceiling(got: tuple[str, bytes] | None) -> tuple[int, bool]:
    """(ceiling, exact) as raise_replay_ceiling / settle_replay_ceiling wrote it."""
    return _counter(got[1], got[0]) if got is not None else (0, True)


def _raw_key(meta) -> bytes:
    """The raw key of a value etcd3gw returned with its metadata; one that is
    missing fails the pass (the paging cannot go on from it)."""
    try:
        key = meta["key"]
        return bytes(key) if isinstance(key, (bytes, bytearray)) else _unb64(key)
    except Exception as e:  # noqa: BLE001 - a page etcd3gw could not have returned
        raise StoreError(f"etcd range read: a key without its name ({e})") from None
