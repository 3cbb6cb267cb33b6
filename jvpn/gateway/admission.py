"""Handshake admission: a cookie round trip when handshakes arrive faster than
the configured rate, then the Noise responder; for an admitted peer, the new
session's record, keys and the response to send. Nothing here writes: the
control path (jvpn/gateway/control.py) claims the initiation's timestamp in
the store and commits through the session table."""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from jvpn.codes import Reason
from jvpn.config import HANDSHAKE_AHEAD_MAX_MS, PeerConfig
from jvpn.handshake import CookieChecker, Granted, HandshakeError, Responder
from jvpn.keys import KeyError_, SessionKeys, decode, encode
from jvpn.session import Event, SessionRecord, Transition, Transport, apply, new_session


@dataclass(frozen=True)
class CookieReply:
    """Under load: answer with a cookie, admit nothing yet."""

    msg: bytes


@dataclass(frozen=True)
class Refused:
    detail: str
    reason: Reason = Reason.HANDSHAKE_FAIL


REPLAYED = "replayed_initiation"


@dataclass(frozen=True)
class Admitted:
    """A proven initiation from a configured peer."""

    init: object  # jvpn.handshake's opened initiation
    inner: ipaddress.IPv4Address  # the peer's inner address
    inner6: ipaddress.IPv6Address | None = None  # its inner IPv6, if it has one


@dataclass(frozen=True)
class NewSession:
    record: SessionRecord  # ATTACHED, bound to the initiator's transport
    transition: Transition
    keys: SessionKeys
    response: bytes  # the handshake response to send once the record is stored


class Admission:
    def __init__(self, private_key: bytes, peers: dict[bytes, PeerConfig | ipaddress.IPv4Address],
                 address: ipaddress.IPv4Interface, cookie_threshold_per_s: int,
                 monotonic: Callable[[], float] = time.monotonic,
                 address6: ipaddress.IPv6Interface | None = None):
        """``peers``: by public key, the peer (or its inner IPv4 alone);
        ``address6``: the gateway's inner IPv6, if it has one."""
        self.peers, self.address, self.address6 = peers, address, address6
        # what every response's payload says of the gateway (``_assignment``)
        self._prefix4, self._gateway4 = address.network.prefixlen, address.ip.packed
        self._six = ((address6.network.prefixlen, address6.ip.packed) if address6 is not None
                     else None)
        self._private_key = private_key
        self.responder = Responder(private_key, lambda pub: pub in self.peers)
        # drain (jvpn-xdp drain): no new session; a runtime state, not config
        self.draining = False
        self.cookies = CookieChecker(private_key)
        self.cookie_threshold, self.monotonic = cookie_threshold_per_s, monotonic
        self._recent: deque = deque()

    def rekey_statics(self, peer_key: str) -> tuple[bytes, bytes] | None:
        """What a rekey of this peer's session is bound to (jvpn/keys.py
        ``gateway_rekey_secret``): our static private key and its static
        public key; None if ``peer_key`` is not a configured peer's (any
        more: a reload removed it) or not a key."""
        try:
            public = decode(peer_key)
        except KeyError_:
            return None
        return (self._private_key, public) if public in self.peers else None

    def _under_load(self, now: float) -> bool:
        q = self._recent
        q.append(now)
        while q and now - q[0] > 1.0:
            q.popleft()
        return len(q) > self.cookie_threshold

    def check(self, msg: bytes, src: tuple[str, int]) -> CookieReply | Refused | Admitted:
        try:
            cookie_reply = self.cookies.check(msg, src, self._under_load(self.monotonic()))
            if cookie_reply is not None:
                return CookieReply(cookie_reply)
            init = self.responder.open(msg)
        except HandshakeError as e:
            return Refused(e.reason, Reason.REPLAY_DETECTED if e.reason == REPLAYED
                           else Reason.HANDSHAKE_FAIL)
        if self.draining:  # after the proof: an unknown key is told nothing new
            return Refused("the gateway is draining: no new sessions (jvpn-xdp drain --off)",
                           Reason.DRAINING)
        peer = self.peers[init.client_public]
        if isinstance(peer, PeerConfig):
            return Admitted(init, peer.inner, peer.inner6 if self.address6 else None)
        return Admitted(init, peer)

    def set_peers(self, peers: dict[bytes, PeerConfig | ipaddress.IPv4Address]) -> None:
        """A reload's peers (under the control lock, as every handshake)."""
        self.peers = peers

    @staticmethod
    def older_than(admitted: Admitted, live: SessionRecord | None) -> Refused | None:
        """An initiation not newer than the one that made the peer's live
        session is a replay, whatever the store says (both timestamps are
        the initiator's clock: no clock is compared with ours)."""
        if live is not None and admitted.init.timestamp_ns <= live.handshake_ns:
            return Refused(f"{REPLAYED}: not newer than the live session's",
                           Reason.REPLAY_DETECTED)
        return None

    @staticmethod
    def dated_ahead(admitted: Admitted, now_ms: int) -> Refused | None:
        """An initiation stamped more than HANDSHAKE_AHEAD_MAX_MS ahead of
        this gateway's clock (``now_ms``, the new record's created_ms): the
        client's clock or ours is wrong. Refused: its record would be one
        no gateway writes (jvpn/store ``_AHEAD_MAX_NS``: dropped at the next
        start), and its claim would make the client's initiations replays
        once its clock is set right. Not spent either (``spent``): its
        timestamp as this process's bar would do the same."""
        if admitted.init.timestamp_ns - now_ms * 1_000_000 > HANDSHAKE_AHEAD_MAX_MS * 1_000_000:
            return Refused(f"stamped more than {HANDSHAKE_AHEAD_MAX_MS // 1000} s ahead of this "
                           "gateway's clock (the client's clock or ours is wrong)",
                           Reason.FRESHNESS_INVALID)
        return None

    def accepted(self, admitted: Admitted) -> None:
        """The store took the initiation's timestamp: remember it here too."""
        self.responder.accepted(admitted.init)

    def spent(self, admitted: Admitted) -> None:
        """Refused, claimed nowhere, yet not to be admitted here again (an
        AttemptAnswerable refusal: jvpn/gateway/handshakes.py): its
        timestamp is this process's "not newer" bar, as an accepted one's."""
        self.responder.accepted(admitted.init)

    def session(self, admitted: Admitted, sid: int, src: Transport, now: int, *, owner: str,
                owner_lease: int) -> NewSession:
        """The new session for ``admitted``: record, keys and response."""
        inner = admitted.inner
        resp, keys = admitted.init.respond(self._assignment(admitted, sid))
        rec = new_session(
            sid, now, owner=owner, inner_addr=str(inner), owner_lease=owner_lease,
            handshake_ns=admitted.init.timestamp_ns, peer_key=encode(admitted.init.client_public))
        rec, tr = apply(rec, Event.ATTACH_OK, now, binding=src)
        return NewSession(rec, tr, keys, resp)

    def _assignment(self, admitted: Admitted, sid: int) -> Granted:
        """The peer's addresses with the gateway's prefixes (IPv6 too, if
        both have one), packed: no ``ipaddress`` object made per handshake
        (issue 15; the same payload as an Assignment's, tested)."""
        if admitted.inner6 is None or self.address6 is None:
            return Granted(sid, admitted.inner.packed, self._prefix4, self._gateway4)
        return Granted(sid, admitted.inner.packed, self._prefix4, self._gateway4,
                       (admitted.inner6.packed, self._six[0], self._six[1]))
