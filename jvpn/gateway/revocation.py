"""Revocation: a session lives only while the peer that made it is
configured as it was: its static public key is in the peers file, with the
same inner address. Checked at start (sessions restored after the peers
file changed while the gateway was down), at a reload, and on every timer
tick (sessions adopted in a cluster from a gateway not reloaded yet).

A revocation the store refuses is not forgotten: the session stays in
``revoke_pending`` and every tick tries again until it ends, each failure a
rate-limited DaemonError (the gateway's Incidents).

A record written before records carried the peer's key (``peer_key`` "")
belongs to the key of the peer that has its inner address only if the
store's newest accepted initiation of that key is the record's own
handshake timestamp: the proof that this key made it. Otherwise (another
key since, a key never seen) it is revoked: its client handshakes again.
A store that cannot answer the lookup (unreachable, an unreadable value)
fails closed: the session is revoked too, at start, on a tick and at a
reload alike. The lookup runs at most once per session: a resolved key is
cached, a failed one ends (or leaves pending) the session, and a pending
session is never looked up again, so the control lock never waits on the
store for it tick after tick.
A mixin of :class:`jvpn.gateway.daemon.Gateway`; callers hold the control
lock where they say so.
"""

from __future__ import annotations

import ipaddress

from jvpn import keys as jkeys
from jvpn.config import PeerConfig
from jvpn.session import Event
from jvpn.store import StoreError

REVOKED = "the peer's key or address left the peers file (revoked)"


def inner_of(peer) -> bytes:
    """The packed inner IPv4 of a peer (a PeerConfig, or a bare address in tests)."""
    if isinstance(peer, PeerConfig):
        return peer.inner.packed
    return (peer if isinstance(peer, ipaddress.IPv4Address) else ipaddress.IPv4Address(peer)).packed


class Revocation:
    _revoke_pending: set[int] | None = None  # sessions whose revocation the store refused
    _legacy_keys: dict[int, str | None] | None = None  # pre-peer_key records, resolved once
    _peers_index: tuple[dict, dict[str, bytes], dict[bytes, str]] | None = None

    @property
    def revoke_pending(self) -> set[int]:
        if self._revoke_pending is None:
            self._revoke_pending = set()
        return self._revoke_pending

    # ------------------------------------------------------------ who owns a session
    def _index(self) -> tuple[dict[str, bytes], dict[bytes, str]]:
        """The configured peers as {base64 key: inner} and {inner: base64 key}, cached."""
        peers = self.admission.peers
        if self._peers_index is None or self._peers_index[0] is not peers:
            by_key = {jkeys.encode(k): inner_of(p) for k, p in peers.items()}
            self._peers_index = (peers, by_key, {v: k for k, v in by_key.items()})
        return self._peers_index[1], self._peers_index[2]

    def peer_entitled(self, public: bytes, inner: bytes) -> bool:
        """A handshake's peer (its public key, the packed inner IPv4 it was
        admitted with) is still configured so: checked again when its
        queued writes land (jvpn/gateway/new_session.py), after a reload."""
        peer = self.admission.peers.get(public)
        return peer is not None and inner_of(peer) == inner

    def session_key(self, live) -> str | None:
        """The base64 key of the peer that made the session, None if unknown
        (a StoreError when an older record's key cannot be looked up now)."""
        rec = live.record
        if rec.peer_key:
            return rec.peer_key
        if self._legacy_keys is None:
            self._legacy_keys = {}
        sid = rec.session_id
        if sid not in self._legacy_keys:
            self._legacy_keys[sid] = self._legacy_key(live)
        return self._legacy_keys[sid]

    def _legacy_key(self, live) -> str | None:
        key = self._index()[1].get(live.inner)
        if key is None or live.record.handshake_ns <= 0:
            return None
        made_it = self.store.last_initiation(jkeys.decode(key)) == live.record.handshake_ns
        return key if made_it else None

    def entitled(self, live) -> bool:
        """Its key is configured, with the session's inner address."""
        key = self.session_key(live)
        return key is not None and self._index()[0].get(key) == live.inner

    # ------------------------------------------------------------ revoking
    def revoke_orphans(self, only_new: bool = False) -> list[str]:
        """At start (every session), and every tick (``only_new``: the
        sessions made or adopted since the last look, issue 15: the peers
        change only at a reload, which revokes by itself): end the sessions
        no configured peer owns, and retry those whose revocation failed.
        Returns the ended."""
        with self.control:
            if self._legacy_keys:  # forget what was resolved for sessions now ended
                for sid in _ended(self._legacy_keys, self.table.sessions):
                    del self._legacy_keys[sid]
            due = set(self.revoke_pending)
            added, self.table.added = self.table.added, set()
            for sid in list(added if only_new else self.table.sessions):
                live = self.table.sessions.get(sid)
                if live is None or sid in due:  # decided: no store read again under the lock
                    continue
                try:
                    if not self.entitled(live):
                        due.add(sid)
                except StoreError as e:  # fail closed, as a reload: it handshakes again
                    self.incidents.report("revoke", e)
                    due.add(sid)
            done, _failed = self.revoke(due, REVOKED)
        return done

    def revoke(self, sids, detail: str) -> tuple[list[str], list[str]]:
        """End these sessions (PEER_REVOKED); one that fails stays pending.
        Returns (ended, "id: why" of those that did not). Lock held."""
        done, failed = [], []
        pending = self.revoke_pending
        pending.difference_update(_ended(pending, self.table.sessions))  # ended some other way
        for sid in sorted(sids):
            if sid not in self.table.sessions:
                continue
            try:
                self.table.terminate(sid, Event.PEER_REVOKED, detail=detail)
            except Exception as e:  # noqa: BLE001 - per session: the others go on
                self.incidents.report("revoke", e)
                self.table.quarantine(sid)  # fail closed meanwhile: no traffic either way
                pending.add(sid)
                failed.append(f"{sid:016x}: {' '.join(str(e).split()) or type(e).__name__}")
                continue
            pending.discard(sid)
            done.append(f"{sid:016x}")
        return done, failed


def _ended(ids, sessions: dict) -> list[int]:
    """The ids among ``ids`` no longer in ``sessions``, looking at ``ids``
    only. Every tick asks this: ``set.intersection_update`` (or a keys
    view's difference) with the sessions' dict walked every session in one
    C call, the GIL held throughout -- 40-45 ms a tick at 1M, ten ticks a
    second, with nothing pending (issue 15: the listing's pages waited for it)."""
    return [sid for sid in ids if sid not in sessions]
