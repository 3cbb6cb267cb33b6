"""The session state machine of the seed, as a transition table.

A session record is immutable; ``apply`` returns the next record and the
transition (with its reason code) or raises ``IllegalTransition``, leaving the
record untouched. Every transition bumps the version by exactly one; the
version is what the store compares-and-swaps on. TERMINATED is absorbing.
"""

from __future__ import annotations

import enum
import ipaddress
import operator
from dataclasses import dataclass, field, fields, replace

from jvpn.fastip import address_memo, ipv4_packed
from jvpn.gate import abi


class State(enum.IntEnum):
    BIRTH = abi.STATE_BIRTH
    ATTACHED = abi.STATE_ATTACHED
    VOLATILE = abi.STATE_VOLATILE
    RECOVERING = abi.STATE_RECOVERING
    DEGRADED = abi.STATE_DEGRADED
    TERMINATED = abi.STATE_TERMINATED


class Event(enum.StrEnum):
    ATTACH_OK = "attach_ok"
    INSTABILITY_DETECTED = "instability_detected"
    SWITCH_INITIATED = "switch_initiated"
    REATTACH_VALID = "reattach_valid"
    REATTACH_INVALID = "reattach_invalid"
    RECOVERY_TIMEOUT = "recovery_timeout"
    SESSION_TTL_EXPIRED = "session_ttl_expired"
    TRANSPORT_TTL_EXPIRED = "transport_ttl_expired"
    OPERATOR_TERMINATE = "operator_terminate"  # T20: `jvpn-xdp terminate`
    POLICY_TERMINATE = "policy_terminate"  # a policy bound ended it (recovery, switch storm)
    PEER_REVOKED = "peer_revoked"  # its peer left the peers file (a reload)
    CLIENT_STOP = "client_stop"  # the client's authenticated TERMINATE (it stopped)
    KEYS_EXPIRED = "keys_expired"  # the keys passed reject_after_* (policy: terminate)
    KEYS_AGED = "keys_aged"  # ... (policy: degrade): only control passes, a rekey ends it
    REKEY_OK = "rekey_ok"  # a rekey from the bound transport completed in DEGRADED


S, E = State, Event

# (from, event) -> (to, reason code). Everything else is illegal.
TRANSITIONS: dict[tuple[State, Event], tuple[State, str]] = {
    (S.BIRTH, E.ATTACH_OK): (S.ATTACHED, "HANDSHAKE_OK"),
    (S.ATTACHED, E.INSTABILITY_DETECTED): (S.VOLATILE, "VOLATILITY_SIGNAL"),
    (S.VOLATILE, E.SWITCH_INITIATED): (S.RECOVERING, "RECOVERY_START"),
    (S.RECOVERING, E.REATTACH_VALID): (S.ATTACHED, "TRANSPORT_SWITCH_OK"),
    (S.RECOVERING, E.REATTACH_INVALID): (S.DEGRADED, "TRANSPORT_SWITCH_DENIED"),
    (S.VOLATILE, E.RECOVERY_TIMEOUT): (S.DEGRADED, "ENTER_DEGRADED_MODE"),
    (S.DEGRADED, E.SWITCH_INITIATED): (S.RECOVERING, "RECOVERY_RETRY"),
    # key lifecycle (issue 13, docs/protocol.md "Rekey"): expired keys degrade
    # the session when the policy says so; a completed rekey (authenticated,
    # from the bound transport: a validation, I6) brings it back
    (S.ATTACHED, E.KEYS_AGED): (S.DEGRADED, "ENTER_DEGRADED_MODE"),
    (S.VOLATILE, E.KEYS_AGED): (S.DEGRADED, "ENTER_DEGRADED_MODE"),
    (S.RECOVERING, E.KEYS_AGED): (S.DEGRADED, "ENTER_DEGRADED_MODE"),
    (S.DEGRADED, E.REKEY_OK): (S.ATTACHED, "EXIT_DEGRADED_MODE"),
}
_TERMINATING = {
    E.SESSION_TTL_EXPIRED: "TTL_SESSION_EXPIRED",
    E.TRANSPORT_TTL_EXPIRED: "TTL_TRANSPORT_LOSS_EXPIRED",
    E.OPERATOR_TERMINATE: "OPERATOR_TERMINATED",
    E.POLICY_TERMINATE: "POLICY_TERMINATION",
    E.PEER_REVOKED: "PEER_REVOKED",
    E.CLIENT_STOP: "CLIENT_STOPPED",
    E.KEYS_EXPIRED: "KEY_EXPIRED",
}
for _state in State:
    if _state is not S.TERMINATED:
        for _event, _reason in _TERMINATING.items():
            TRANSITIONS[(_state, _event)] = (S.TERMINATED, _reason)

# States that accept a reattach request (seed B2).
REATTACH_STATES = frozenset({S.ATTACHED, S.VOLATILE, S.RECOVERING, S.DEGRADED})


class IllegalTransition(Exception):
    def __init__(self, state: State, event: Event):
        super().__init__(f"illegal transition: {state.name} --{event.value}-->")
        self.state, self.event = state, event
        self.reason_code = "FATAL_PROTOCOL_ERROR"


# Memoized: a Transport is made several times per handshake and per control
# message (issue 15: about 17 parses a handshake); bounded, so sources an
# attacker picks only evict entries (a miss costs the parse it saved).
@address_memo  # exact short strings only: True is not 1.0, a 1 MB value is not kept
def canonical_ip(addr: str) -> str:
    """One spelling per address: an IPv4 client heard on the gateway's
    dual-stack socket arrives as ``::ffff:a.b.c.d`` and is the plain
    ``a.b.c.d`` here, IPv6 in its compressed lowercase form. Two spellings
    of one client would be two transports (a reattach "from a new path" that
    is the old one; an XDP binding in the IPv6 family that no IPv4 frame
    matches; every IPv4 client in one /64 rate-limit bucket). Anything that
    is not an address (a "-" for no family) is kept as it is."""
    if ipv4_packed(addr) is not None:
        return addr  # canonical IPv4 already (the common case, issue 15)
    try:
        return _canonical_parse(addr)
    except ValueError:
        return addr


@address_memo
def stored_ip(addr: str) -> str:
    """:func:`canonical_ip` of a stored transport's address (jvpn/store);
    ValueError for text that is no IPv4 or IPv6 address: a record holding
    one is unreadable (a damaged or hostile store), never a binding the
    gate and the sends would each read their own way."""
    if ipv4_packed(addr) is not None:
        return addr
    if type(addr) is not str:  # ipaddress reads an int as an address
        raise ValueError(f"a transport address that is not text: {addr!r:.40}")
    try:
        return _canonical_parse(addr)
    except ValueError:  # its message quotes the text whole (a 1 MB one into the report)
        raise ValueError(f"a transport address that is no IPv4/IPv6 address: "
                         f"{addr!r:.40}") from None


def _canonical_parse(addr: str) -> str:
    """The canonical spelling of an address ipaddress reads; ValueError otherwise."""
    ip = ipaddress.ip_address(addr)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    text = str(ip)
    return addr if text == addr else text  # already canonical: one string, not two (the cache)


@dataclass(frozen=True, slots=True)
class Transport:
    """One outer transport: the client's address and UDP port as seen by us,
    the address in its canonical form (:func:`canonical_ip`) whoever made it."""

    addr: str
    port: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "addr", canonical_ip(self.addr))

    def __str__(self) -> str:
        return f"[{self.addr}]:{self.port}" if ":" in self.addr else f"{self.addr}:{self.port}"


@dataclass(frozen=True, slots=True)
class Transition:
    session_id: int
    previous: State
    new: State
    event: Event
    reason_code: str
    version: int
    at_ms: int


@dataclass(frozen=True, slots=True)  # slots: the daemon holds one per session (issue 15)
class SessionRecord:
    session_id: int
    state: State
    version: int
    created_ms: int
    last_change_ms: int
    binding: Transport | None = None  # exactly one when ATTACHED
    candidate: Transport | None = None  # the transport under validation (RECOVERING)
    switches_ms: tuple = field(default_factory=tuple)  # times of accepted switches
    transport_lost_ms: int | None = None  # since when no usable transport
    recovery_deadline_ms: int | None = None
    degraded_count: int = 0  # times DEGRADED was entered
    owner: str = ""  # gateway id (clusters)
    owner_lease: int = 0  # the owner's etcd lease when it took the session: the fencing token
    handoff_to: str = ""  # a gateway that proved the client reached it and asks to take over
    handoff_lease: int = 0  # ... and the lease it asked under (its token once it owns it)
    c2s_floor: int = 0  # client counters below this were seen by a previous owner (replay)
    inner_addr: str = ""  # the client's inner address in the tunnel
    reattach_seq: int = 0  # highest reattach sequence consumed
    switch_seq: int = 0  # the sequence of the last accepted switch (its ACK may be re-sent)
    epoch: int = 0  # accepted switches since the handshake; proofs name it
    s2c_counter_floor: int = 0  # gateway send counters below this may have been used
    handshake_ns: int = 0  # the initiator's timestamp in the handshake that made it
    # the static public key (base64) of the peer whose handshake made it:
    # revocation is by key (jvpn/gateway/revocation.py); "" in a record of
    # a version before it (matched through the store's initiations instead)
    peer_key: str = ""
    # key lifecycle (issue 13): the current key epoch (0: the handshake's),
    # when its keys were made (0: at created_ms), and the send counters at
    # that moment (messages sealed under the epoch = counter - base). The
    # keys themselves are in the store's secrets value (jvpn/keys.py KeyRing).
    key_epoch: int = 0
    keys_ms: int = 0
    key_c2s_base: int = 0
    key_s2c_base: int = 0
    # False: a handshake's session its initiator has not used yet (it may
    # never: the client took the answer to another attempt). A restart
    # neither routes such a session nor keeps it past the unconfirmed TTL
    # (review R4 #4). Absent from older records (and written only when
    # False): confirmed.
    confirmed: bool = True

    def with_(self, **kw) -> SessionRecord:
        """A copy with ``kw`` changed: ``dataclasses.replace``, without its
        per-call walk of the fields (a handshake makes three; issue 15)."""
        if not _RECORD_FIELD_SET.issuperset(kw):
            return replace(self, **kw)  # raises its TypeError for the unknown name
        values = list(_record_values(self))  # the fields, one C call; kw's put in place
        for name, value in kw.items():
            values[_RECORD_INDEX[name]] = value
        return SessionRecord(*values)


_RECORD_FIELDS = tuple(f.name for f in fields(SessionRecord))  # in __init__'s order
_RECORD_FIELD_SET = frozenset(_RECORD_FIELDS)
_RECORD_INDEX = {name: i for i, name in enumerate(_RECORD_FIELDS)}
_record_values = operator.attrgetter(*_RECORD_FIELDS)


def new_session(session_id: int, now_ms: int, owner: str = "", **fields) -> SessionRecord:
    """A BIRTH record; ``fields``: its other fields, set at once (not a
    ``with_`` copy afterwards: a handshake makes one, issue 15)."""
    return SessionRecord(session_id=session_id, state=S.BIRTH, version=0, created_ms=now_ms,
                         last_change_ms=now_ms, owner=owner, **fields)


def can_apply(rec: SessionRecord, event: Event) -> bool:
    return (rec.state, event) in TRANSITIONS


def apply(rec: SessionRecord, event: Event, now_ms: int, **changes) -> tuple[SessionRecord,
                                                                          Transition]:
    """The next record (version + 1) and the transition; ``changes`` are the
    other fields that move with it (binding, candidate, ...)."""
    try:
        to, reason = TRANSITIONS[(rec.state, event)]
    except KeyError:
        raise IllegalTransition(rec.state, event) from None
    if to is S.DEGRADED:
        changes.setdefault("degraded_count", rec.degraded_count + 1)
    if to is S.TERMINATED:
        changes.setdefault("binding", None)
        changes.setdefault("candidate", None)
    new = rec.with_(state=to, version=rec.version + 1, last_change_ms=now_ms, **changes)
    _check_invariants(new)
    return new, Transition(rec.session_id, rec.state, to, event, reason, new.version, now_ms)


def _check_invariants(rec: SessionRecord) -> None:
    """I2, I3 of the seed: refuse to produce a record that breaks them."""
    if rec.state is S.ATTACHED and rec.binding is None:
        raise ValueError("I2: ATTACHED needs exactly one active binding")
    if rec.state is S.RECOVERING and rec.candidate is None:
        raise ValueError("I3: RECOVERING needs a candidate transport")
