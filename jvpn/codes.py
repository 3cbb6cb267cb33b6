"""The vocabulary of events: reason codes, security codes and event types.

Names are the seed's (shared/SPEC-NOTES.md) where it has one, so operators who
read the model recognize them; the rest are jvpn's own and documented in
docs/protocol.md. Every member is a ``StrEnum``: it serializes as its name in
the JSON event stream, and compares equal to that string.
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """Reason codes: state transitions, reattach results and jvpn's own."""

    # transitions (seed)
    HANDSHAKE_OK = "HANDSHAKE_OK"
    HANDSHAKE_FAIL = "HANDSHAKE_FAIL"
    VOLATILITY_SIGNAL = "VOLATILITY_SIGNAL"
    QUALITY_FLOOR_VIOLATION = "QUALITY_FLOOR_VIOLATION"
    HEALTH_RECOVERED = "HEALTH_RECOVERED"
    RECOVERY_START = "RECOVERY_START"
    TRANSPORT_SWITCH_OK = "TRANSPORT_SWITCH_OK"
    TRANSPORT_SWITCH_DENIED = "TRANSPORT_SWITCH_DENIED"
    RECOVERY_RETRY = "RECOVERY_RETRY"
    RECOVERY_BOUNDS_EXCEEDED = "RECOVERY_BOUNDS_EXCEEDED"
    ENTER_DEGRADED_MODE = "ENTER_DEGRADED_MODE"
    EXIT_DEGRADED_MODE = "EXIT_DEGRADED_MODE"
    TTL_SESSION_EXPIRED = "TTL_SESSION_EXPIRED"
    TTL_TRANSPORT_LOSS_EXPIRED = "TTL_TRANSPORT_LOSS_EXPIRED"
    POLICY_TERMINATION = "POLICY_TERMINATION"
    # operator actions (jvpn): `jvpn-xdp terminate`; a peer removed by a reload
    OPERATOR_TERMINATED = "OPERATOR_TERMINATED"
    PEER_REVOKED = "PEER_REVOKED"
    CLIENT_STOPPED = "CLIENT_STOPPED"  # the client's TERMINATE (jvpn; issue 12)
    FATAL_PROTOCOL_ERROR = "FATAL_PROTOCOL_ERROR"
    # reattach results (seed)
    REATTACH_ACCEPT = "REATTACH_ACCEPT"
    AUTH_FAIL = "AUTH_FAIL"
    FRESHNESS_INVALID = "FRESHNESS_INVALID"
    REPLAY_DETECTED = "REPLAY_DETECTED"
    OWNERSHIP_CONFLICT = "OWNERSHIP_CONFLICT"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    SESSION_EXPIRED = "SESSION_EXPIRED"
    POLICY_DENY = "POLICY_DENY"
    RATE_LIMITED = "RATE_LIMITED"
    # cluster ownership (jvpn)
    HANDOFF_REQUESTED = "HANDOFF_REQUESTED"
    HANDOFF_RELEASED = "HANDOFF_RELEASED"
    OWNER_LEASE_EXPIRED = "OWNER_LEASE_EXPIRED"
    OWNERSHIP_LOST = "OWNERSHIP_LOST"
    LEASE_RENEWED = "LEASE_RENEWED"
    # lifecycle (jvpn)
    OK = "OK"
    GATE_DETACHED = "GATE_DETACHED"
    CONFIG_INVALID = "CONFIG_INVALID"  # a reload refused
    DRAINING = "DRAINING"  # a handshake refused: the gateway drains
    GATEWAY_FULL = "GATEWAY_FULL"  # a handshake refused: MaxSessions live (or the maps full)
    # contained daemon errors (jvpn; the reason_code of a DaemonError)
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    STORE_RECORD_UNREADABLE = "STORE_RECORD_UNREADABLE"
    COUNTER_UNAVAILABLE = "COUNTER_UNAVAILABLE"
    OS_ERROR = "OS_ERROR"
    EVENTS_WRITE_FAILED = "EVENTS_WRITE_FAILED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    THREAD_DIED = "THREAD_DIED"
    # data path drops of authenticated messages (jvpn; DataPathDrops)
    DATA_DROPPED = "DATA_DROPPED"
    # the client's setup and teardown steps (jvpn; client_lifecycle)
    TEARDOWN_FAILED = "TEARDOWN_FAILED"
    # the client's session is over (jvpn; issue 12): no authenticated answer for OrphanTimeout
    ORPHANED = "ORPHANED"
    # key lifecycle (jvpn; issue 13, docs/protocol.md "Rekey")
    KEY_ROTATED = "KEY_ROTATED"  # a rekey completed: the new epoch is current
    KEY_EXPIRED = "KEY_EXPIRED"  # the keys passed reject_after_* without a rekey
    REKEY_REQUESTED = "REKEY_REQUESTED"  # the key age / count limit, or an operator, asks
    REKEY_CONFIRMED = "REKEY_CONFIRMED"  # the peer used the new keys: sealed under them
    PREVIOUS_KEYS_DROPPED = "PREVIOUS_KEYS_DROPPED"  # the overlap ended
    # transport selection (jvpn; issue 14): a switch to a better path while the old one works
    PLANNED_MOVE = "planned_move"


class Security(enum.StrEnum):
    """Security codes (seed): the ``reason_code`` of a ``SecurityEvent``."""

    SEC_REPLAY_ATTEMPT = "SEC_REPLAY_ATTEMPT"
    SEC_SESSION_FIXATION_ATTEMPT = "SEC_SESSION_FIXATION_ATTEMPT"
    SEC_OWNERSHIP_ANOMALY = "SEC_OWNERSHIP_ANOMALY"
    SEC_ABUSE_CONTROL_PLANE = "SEC_ABUSE_CONTROL_PLANE"
    # jvpn: an authenticated peer sent inner packets from an address not its own
    SEC_INNER_SOURCE_SPOOFED = "SEC_INNER_SOURCE_SPOOFED"
    # jvpn (issue 13): a second holder of a session's keys (docs/protocol.md "Rekey")
    SEC_KEY_COMPROMISE_SUSPECTED = "SEC_KEY_COMPROMISE_SUSPECTED"


class SwitchDenial(enum.StrEnum):
    """Why a proven switch was denied (seed), in the event's ``detail``."""

    SWITCH_RATE_LIMITED = "switch_rate_limited"
    COOLDOWN_ACTIVE = "cooldown_active"
    NO_VALID_CANDIDATE = "no_valid_candidate"
    POLICY_DENIED = "policy_denied"


class Volatility(enum.StrEnum):
    """Why a path was declared VOLATILE (seed): the ``reason_code`` of a
    ``PathVolatile`` event (the client's active path, issue 14), and the
    ``detail`` of the gateway's ATTACHED -> VOLATILE transition."""

    LOSS_THRESHOLD_EXCEEDED = "loss_threshold_exceeded"  # loss over the window
    CONSECUTIVE_DROP_EXCEEDED = "consecutive_drop_exceeded"  # heartbeats in a row
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"  # nothing authenticated for heartbeat_volatile_ms
    TRANSPORT_DEAD = "transport_dead"  # the uplink, its address or its route is gone


class EventType(enum.StrEnum):
    """The ``event_type`` of every line of the event stream."""

    # seed
    SESSION_STATE_CHANGE = "SessionStateChange"
    TRANSPORT_SWITCH = "TransportSwitch"
    TRANSPORT_SWITCH_DENIED = "TransportSwitchDenied"
    SESSION_TERMINATED = "SessionTerminated"
    REATTACH_ATTEMPT = "ReattachAttempt"
    REATTACH_RESULT = "ReattachResult"
    SECURITY_EVENT = "SecurityEvent"
    # jvpn
    GATEWAY_STARTED = "GatewayStarted"
    GATEWAY_STOPPED = "GatewayStopped"
    RECONCILED = "Reconciled"
    TRANSITION_REJECTED = "TransitionRejected"
    HANDSHAKE_REJECTED = "HandshakeRejected"
    HANDSHAKE_FAILED = "HandshakeFailed"
    HANDSHAKE_COOKIE = "HandshakeCookie"
    OWNERSHIP_HANDOFF = "OwnershipHandoff"
    XDP_SECURITY_DROP = "XdpSecurityDrop"
    GATE_LOST = "GateLost"
    DAEMON_ERROR = "DaemonError"  # a loop contained an error (counted per interval)
    DATAPATH_DROPS = "DataPathDrops"  # authenticated data not delivered (counts per interval)
    # a start lowered a claim a record dated ahead left (jvpn/gateway/dated_ahead.py)
    INITIATION_CLAIM_LOWERED = "InitiationClaimLowered"
    # client (jvpn)
    ENDPOINT_RESOLVED = "EndpointResolved"  # an Endpoint host name, resolved at `client up`
    CLIENT_STEP_FAILED = "ClientStepFailed"  # a down hook, the DNS restore... failed at down
    ROUTE_FAILED = "RouteFailed"  # a route to a subnet behind a peer not installed / removed
    # operator actions on the running gateway (jvpn)
    GATEWAY_RELOADED = "GatewayReloaded"  # peers and policy re-read and applied
    RELOAD_REFUSED = "ReloadRefused"  # ... or refused: the old configuration stays
    DRAIN_CHANGED = "DrainChanged"  # new sessions refused (drain) or admitted again
    SESSION_RENEWED = "SessionRenewed"  # Reconnect = yes: a new session replaced an ended one
    # key lifecycle (issue 13: the names the seed's key lifecycle gives)
    KEY_ROTATED = "KeyRotated"  # a new key epoch is current (key_epoch)
    KEY_EXPIRED = "KeyExpired"  # the keys passed reject_after_* without a rekey
    REKEY_DENIED = "RekeyDenied"  # a rekey request refused (reason_code says why)
    SECURITY_KEY_COMPROMISE_SUSPECTED = "SecurityKeyCompromiseSuspected"
    # transport selection (issue 14; docs/protocol.md "Transport selection")
    PATH_CANDIDATE = "PathCandidate"  # a candidate path added or removed (client)
    PATH_VOLATILE = "PathVolatile"  # the active path crossed a threshold (client)
    PATH_RECOVERED = "PathRecovered"  # ... and is below every threshold again (client)
    PATH_SELECTED = "PathSelected"  # the client chose a candidate: a switch starts
