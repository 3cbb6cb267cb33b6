"""What an operator does to a running gateway: terminate a session or every
session of a peer, ask for a rekey of either (issue 13), drain, and apply a
reloaded peers file and policy (jvpn/gateway/reload.py reads and validates
them). A mixin of
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
from jvpn.gateway.revocation import Revocation, inner_of
from jvpn.gateway.terminate import NotServedHere
from jvpn.policy import Policy
from jvpn.session import Event


class UnknownPeer(JvpnError):
    """No configured peer has this Name or public key (or more than one has the Name)."""


@dataclass
class Applied:
    """What a reload changed: peers by Name, the policy fields that changed,
    the sessions revoked (hex ids), and those whose revocation failed
    ("id: why": they go on for now, retried every timer tick; the reload
    says so and `gateway reload` exits 1)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)
    policy_changed: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    revoke_failed: list[str] = field(default_factory=list)


def _name_of(key: bytes, peer) -> str:
    return peer.name if isinstance(peer, PeerConfig) else jkeys.encode(key)[:8]


class OperatorActions(Revocation):
    reloader = None  # jvpn/gateway/reload.py's Reloader, when started from a config file

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
            done, failed = self._end_sessions(inner_of(peer), Event.OPERATOR_TERMINATE,
                                              "terminated by the operator (--peer)")
            failed += self._owned_elsewhere(inner_of(peer), "terminate")
        return {"peer": _name_of(key, peer), "terminated": done, "failed": failed}

    def _owned_elsewhere(self, inner: bytes, verb: str) -> list[str]:
        """The peer's sessions another gateway owns, each naming it: --peer
        acts on what this gateway serves, and says what it did not."""
        return [f"{sid:016x}: owned by gateway {owner!r}: {verb} it there"
                for sid, owner in self.table.remote_sessions_at(inner)]

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
            except Exception as e:  # noqa: BLE001 - per session: the others still end
                self.incidents.report("terminate", e)
                failed.append(f"{sid:016x}: {' '.join(str(e).split()) or type(e).__name__}")
        return done, failed

    # ------------------------------------------------------------ rekey
    def rekey_session(self, sid: int) -> dict:
        """Ask for a rekey of one session (docs/protocol.md "Rekey"): the
        table marks it, the gateway flags its next replies with FLAG_REKEY,
        the client runs the exchange. Nothing is derived or written here. A
        session awaiting its revocation is refused; one quarantined by key
        expiry is not (a rekey is its way back, review R5 #7).
        NotServedHere (naming the owner in a cluster): nothing changed."""
        with self.control:
            live = self.table.sessions.get(sid)
            if live is not None and live.quarantined and not live.quarantine_lifts:
                raise NotServedHere(f"session {sid:016x} awaits its revocation: it ends, "
                                    "it is not rekeyed")
            if not self.table.request_rekey(sid):
                raise NotServedHere(self._not_here_for_rekey(sid))
            rec = live.record
        return {"rekey_requested": [f"{sid:016x}"], "key_epoch": rec.key_epoch,
                "state": rec.state.name}

    def rekey_peer(self, who: str) -> dict:
        """Ask for a rekey of every session this gateway serves for the peer
        ``who`` (Name or base64 key); one awaiting its revocation is in
        ``failed`` (it ends instead)."""
        with self.control:
            key, peer = self.find_peer(who)
            done, failed = [], []
            for live in self.table.sessions_at(inner_of(peer)):
                sid = live.record.session_id
                if live.quarantined and not live.quarantine_lifts:
                    failed.append(f"{sid:016x}: awaits its revocation")
                elif self.table.request_rekey(sid):
                    done.append(f"{sid:016x}")
            failed += self._owned_elsewhere(inner_of(peer), "rekey")
        return {"peer": _name_of(key, peer), "rekey_requested": done, "failed": failed}

    def _not_here_for_rekey(self, sid: int) -> str:
        owner = self.table.standby.get(sid, (None, ""))[1]
        if owner:
            return (f"session {sid:016x} is owned by gateway {owner!r}: rekey it there "
                    "(the operator socket of that gateway)")
        return f"no session {sid:016x} on this gateway"

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
        the new policy; then the sessions whose key left the peers file, or
        whose peer's addresses changed, end (PEER_REVOKED, the client is
        told; jvpn/gateway/revocation.py). Everything that can fail is
        computed before anything changes; a session whose revocation fails
        (for any reason) is named in ``revoke_failed`` and retried every tick."""
        new = {p.public_key: p for p in peers}
        by_inner = {p.inner.packed: p for p in peers}
        with self.control:
            old = self.admission.peers
            out = _diff(old, new, self.policy, policy)
            moved = {jkeys.encode(k) for k, p in new.items()
                     if k in old and _addresses(old[k]) != _addresses(p)}
            self.admission.set_peers(new)
            self.table.peers = by_inner
            self.policy = self.reattach.policy = policy
            self.events.policy_version = policy.version
            due = {sid for sid, live in list(self.table.sessions.items())
                   if self._revoked_by_reload(live, moved)}
            out.revoked, out.revoke_failed = self.revoke(
                due, "the peer was removed or changed by a reload")
        return out

    def _revoked_by_reload(self, live, moved: set[str]) -> bool:
        """Its key left, its inner address moved, its addresses changed, or
        (an older record whose key the store cannot name now) unknown."""
        try:
            return not self.entitled(live) or self.session_key(live) in moved
        except Exception as e:  # noqa: BLE001 - fail closed: revoked (and retried)
            self.incidents.report("revoke", e)
            return True


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
