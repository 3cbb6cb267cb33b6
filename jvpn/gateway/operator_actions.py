"""What an operator does to a running gateway: terminate a session or every
session of a peer, drain, and apply a reloaded peers file and policy
(jvpn/gateway/reload.py reads and validates them). A mixin of
:class:`jvpn.gateway.daemon.Gateway`; every action takes the control lock,
so it is atomic with respect to handshakes, reattaches and the timers, and
every session change goes through the session table
(jvpn/gateway/terminate.py)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from jvpn import keys as jkeys
from jvpn.codes import EventType, Reason
from jvpn.config import PeerConfig
from jvpn.errors import JvpnError
from jvpn.policy import Policy
from jvpn.session import Event
from jvpn.store import StoreError


class UnknownPeer(JvpnError):
    """No configured peer has this Name or public key (or more than one has the Name)."""


@dataclass
class Applied:
    """What a reload changed: peers by Name, the policy fields that changed,
    the sessions revoked (hex ids), and those whose revocation the store
    refused (they go on; the reload says so)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)
    policy_changed: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    revoke_failed: list[str] = field(default_factory=list)


def _inner_of(peer) -> bytes:
    """The packed inner IPv4 of a peer (a PeerConfig, or a bare address in tests)."""
    return (peer.inner if isinstance(peer, PeerConfig) else ipaddress.IPv4Address(peer)).packed


def _name_of(key: bytes, peer) -> str:
    return peer.name if isinstance(peer, PeerConfig) else jkeys.encode(key)[:8]


class OperatorActions:
    reloader = None  # jvpn/gateway/reload.py's Reloader, when started from a config file
    _inners_of: tuple[dict, set[bytes]] | None = None  # (peers, their inner IPv4s), cached

    # ------------------------------------------------------------ terminate
    def terminate_session(self, sid: int) -> dict:
        """End one session now (reason OPERATOR_TERMINATED). NotServedHere
        or StoreError: one line, nothing changed."""
        with self.control:
            rec = self.table.terminate(sid, Event.OPERATOR_TERMINATE,
                                       detail="terminated by the operator")
        return {"terminated": [f"{sid:016x}"], "version": rec.version}

    def terminate_peer(self, who: str) -> dict:
        """End every session this gateway serves for the peer named ``who``
        (its Name or its base64 public key)."""
        with self.control:
            key, peer = self.find_peer(who)
            done, failed = self._end_sessions(_inner_of(peer), Event.OPERATOR_TERMINATE,
                                              "terminated by the operator (--peer)")
        return {"peer": _name_of(key, peer), "terminated": done, "failed": failed}

    def find_peer(self, who: str) -> tuple[bytes, object]:
        peers = self.admission.peers
        by_key = [(k, p) for k, p in peers.items() if jkeys.encode(k) == who.strip()]
        by_name = [(k, p) for k, p in peers.items() if _name_of(k, p) == who]
        found = by_key or by_name
        if len(found) == 1:
            return found[0]
        if found:
            raise UnknownPeer(f"{len(found)} peers are named {who!r}: give the public key")
        raise UnknownPeer(f"no peer {who!r} in the peers file (Name or PublicKey)")

    def _end_sessions(self, inner: bytes, event: Event, detail: str
                      ) -> tuple[list[str], list[str]]:
        done, failed = [], []
        for live in self.table.sessions_at(inner):
            sid = live.record.session_id
            try:
                self.table.terminate(sid, event, detail=detail)
                done.append(f"{sid:016x}")
            except StoreError as e:
                self.incidents.report("terminate", e)
                failed.append(f"{sid:016x}: {e}")
        return done, failed

    # ------------------------------------------------------------ drain
    @property
    def draining(self) -> bool:
        return self.admission.draining

    def drain(self, on: bool) -> dict:
        """Refuse new sessions (on) or admit them again (off). A runtime
        state: a restart admits again. Existing sessions go on, reattach
        and move; only handshakes are refused (silently, docs/protocol.md)."""
        with self.control:
            was, self.admission.draining = self.admission.draining, on
            sessions = len(self.table.sessions)
        if was != on:
            self.events.emit(EventType.DRAIN_CHANGED, Reason.DRAINING if on else Reason.OK,
                             draining=on, sessions=sessions)
        return {"draining": on, "sessions": sessions}

    # ------------------------------------------------------------ reload
    def apply_config(self, peers: list[PeerConfig], policy: Policy) -> Applied:
        """A validated peers list and policy, applied at once under the
        control lock: handshakes see the new peers, timers and reattaches
        the new policy; the sessions of a removed peer, or of one whose
        addresses changed, end (PEER_REVOKED, the client is told)."""
        new = {p.public_key: p for p in peers}
        with self.control:
            out = _diff(self.admission.peers, new, self.policy, policy)
            new_inner = {_inner_of(p): (k, _addresses(p)) for k, p in new.items()}
            # a peer whose key left the file, or whose addresses changed:
            # its sessions were admitted for what it is no longer allowed
            gone = {_inner_of(p) for k, p in self.admission.peers.items()
                    if new_inner.get(_inner_of(p)) != (k, _addresses(p))}
            self.admission.set_peers(new)
            self.table.peers = {p.inner.packed: p for p in peers}
            self.policy = self.reattach.policy = policy
            self.events.policy_version = policy.version
            for inner in gone | self._orphans(set(new_inner)):
                done, failed = self._end_sessions(inner, Event.PEER_REVOKED,
                                                  "the peer was removed or changed by a reload")
                out.revoked += done
                out.revoke_failed += failed
        return out

    def revoke_orphans(self) -> list[str]:
        """End the sessions no configured peer owns any more: restored after
        their peer left the peers file while the gateway was down, or
        adopted (a cluster handoff) from a gateway not reloaded yet. At
        start and on every timer tick; cheap when there are none."""
        peers = self.admission.peers
        if self._inners_of is None or self._inners_of[0] is not peers:
            self._inners_of = (peers, {_inner_of(p) for p in peers.values()})
        revoked: list[str] = []
        with self.control:
            for inner in self._orphans(self._inners_of[1]):
                done, _failed = self._end_sessions(inner, Event.PEER_REVOKED,
                                                   "no peer in the peers file has its address")
                revoked += done
        return revoked

    def _orphans(self, inners: set[bytes]) -> set[bytes]:
        """Inner addresses of served sessions that no peer has."""
        return {live.inner for live in self.table.sessions.values() if live.inner not in inners}


def _diff(old: dict, new: dict, old_policy: Policy, policy: Policy) -> Applied:
    out = Applied()
    for k, p in new.items():
        if k not in old:
            out.added.append(_name_of(k, p))
        elif _addresses(old[k]) != _addresses(p):
            out.changed.append(_name_of(k, p))
        elif _name_of(k, old[k]) != _name_of(k, p):
            out.renamed.append(_name_of(k, p))
    out.removed = [_name_of(k, p) for k, p in old.items() if k not in new]
    a, b = old_policy.as_dict(), policy.as_dict()
    out.policy_changed = [f for f in b if a.get(f) != b[f]]
    return out


def _addresses(peer) -> tuple:
    if isinstance(peer, PeerConfig):
        return peer.allowed_ips
    return (ipaddress.IPv4Network(peer),)
