"""The ownership store: authoritative session records, compare-and-swap on
the record's version. The daemon writes here first and only then projects a
binding into the BPF maps.

Backends: ``SqliteStore`` (embedded default, jvpn/store/sqlite.py) and
``EtcdStore`` (clusters, jvpn/store/etcd.py: also gateway leases and a
session watch: the ``ClusterStore`` protocol, used through
jvpn/gateway/ownership.py and jvpn/gateway/follower.py).
"""

from __future__ import annotations

import json
import operator
import threading
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, fields
from typing import Protocol, runtime_checkable

from jvpn.config import HANDSHAKE_AHEAD_MAX_MS
from jvpn.errors import JvpnError
from jvpn.session import SessionRecord, State, Transport, stored_ip
from jvpn.store.record_text import fields_of, make_record, make_transport


class StoreError(JvpnError):
    """The store could not answer: callers must fail closed (a command
    that meets one prints it as a one-line error)."""


class VersionConflict(StoreError):
    """Someone else changed the record first (compare-and-swap lost)."""


class AlreadyExists(StoreError):
    pass


class Unreadable(StoreError):
    """A stored value that does not parse as what its key says it is. Reads
    skip it (a listing goes on; ``get`` answers as if it were absent) and
    tell the store's ``on_unreadable(key, detail)``: one bad value must not
    stop a gateway, nor every gateway of a cluster. ``dated_ahead``: set
    when the value is a session record whose one fault is that it is dated
    ahead (what it says of its peer's claim: ``DatedAhead``)."""

    dated_ahead: DatedAhead | None = None


@dataclass(frozen=True)
class DatedAhead:
    """A record dated ahead (``_AHEAD_MAX_NS``), as the evidence it is of
    its peer's claim (review k21r2 F1): a gateway before k21age that took
    its initiation claimed the same ``handshake_ns`` for ``peer_key``, at
    its own clock ``created_ms`` (jvpn/gateway/dated_ahead.py)."""

    session_id: int
    peer_key: str  # the record's, as written (jvpn.keys.encode of the static key)
    handshake_ns: int
    created_ms: int


class _RecordDatedAhead(ValueError):
    """``_in_range``'s refusal of a record dated ahead, with its evidence."""

    def __init__(self, detail: str, evidence: DatedAhead):
        super().__init__(detail)
        self.evidence = evidence


class GatewayGone(StoreError):
    """A compare-and-swap that required a gateway's lease found it gone."""


@dataclass(frozen=True)
class Change:
    revision: int
    session_id: int
    version: int  # -1 for a deletion
    kind: str  # "create" | "update" | "delete"


@dataclass(frozen=True, slots=True)  # slots: a restart makes one per session
class Stored:
    """One session as a restart restores it (Store.restorable): its record,
    secrets, send-counter floor and replay ceiling (ceiling, exact), read in
    one pass over the store rather than four reads per session. ``problem``:
    why this one cannot be restored (its secrets do not open); the others
    still can."""

    record: SessionRecord
    secrets: bytes
    floor: int = 0
    ceiling: tuple[int, bool] = (0, True)
    problem: StoreError | None = None


@dataclass(frozen=True)
class HandshakeWrites:
    """What a handshake makes durable before its response goes out
    (docs/protocol.md "A handshake's durable writes"): the initiation's
    claim, the session's record and secrets, and, where the store takes it
    in the same transaction, the send-counter floor reserved ahead of the
    session's first counter."""

    peer: bytes  # the initiator's static public key
    timestamp_ns: int  # its initiation's timestamp (the claim)
    record: SessionRecord
    secrets: bytes
    floor: int  # gateway send counters below it may be used


# the send-counter floor a handshake's writes made durable with the record; 0: none
Prewritten = int
NOTHING_PREWRITTEN: Prewritten = 0


def write_handshake(store: Store, w: HandshakeWrites) -> Prewritten | None:
    """A handshake's writes: None when the claim finds a replay (nothing
    written). A store with one transaction for all of them
    (``write_handshake``, SQLite) takes them at once; any other claims and
    creates one write after the other, as before, and its floor is written
    at its first use (etcd: one request per write).
    Raises StoreError: the claim may stand, nothing else does."""
    one = getattr(store, "write_handshake", None)
    return one(w) if one is not None else one_by_one(store, w)


def one_by_one(store: Store, w: HandshakeWrites) -> Prewritten | None:
    """The claim, then the record, each its own write (the floor left to
    its first use)."""
    if not store.claim_initiation(w.peer, w.timestamp_ns):
        return None
    store.create(w.record, w.secrets)
    return NOTHING_PREWRITTEN


RESTORE_PAGE = 10_000  # records per read of Store.restorable (bounds memory and lock holds)


def write_confirm(store: Store, base: SessionRecord, new: SessionRecord, ceiling: int) -> None:
    """A new session's confirmation (``new``: confirmed, over ``base``) and
    the replay ceiling its first messages are delivered under: one
    transaction where the store has one (SQLite), else one write after the
    other. Raises StoreError (VersionConflict included)."""
    one = getattr(store, "write_confirm", None)
    if one is not None:
        one(base, new, ceiling)
    else:
        confirm_one_by_one(store, base, new, ceiling)


def confirm_one_by_one(store: Store, base: SessionRecord, new: SessionRecord,
                       ceiling: int) -> None:
    """The ceiling first: raised alone it changes nothing (the next message
    raises it again, no higher, and retries the record); a confirmed record
    whose ceiling failed would leave the session here at a version the
    store no longer has."""
    store.raise_replay_ceiling(base.session_id, ceiling)
    store.cas(base.session_id, base.version, new)


Cas = tuple[SessionRecord, SessionRecord]  # (the base record, the new one over it)


def cas_many(store: Store, writes: list[Cas]) -> list[StoreError | None]:
    """Compare-and-swaps of many records (the timers' transitions, issue
    15): each over its own base version, one transaction and one fsync
    where the store has them (SQLite ``cas_many``). One result per write,
    in order: None (written) or the StoreError that left that record as it
    was (a VersionConflict is that record's alone; a failed commit fails
    every write of the batch). Never raises a StoreError."""
    return _many(store, "cas_many", writes, lambda w: cas_one_by_one(store, w))


def cas_one_by_one(store: Store, writes: list[Cas]) -> list[StoreError | None]:
    """A store without transactions over many records (etcd): one write
    after the other. A failure that is not the record's own (the store does
    not answer) ends the batch: the writes after it are not tried, and
    fail with it (the caller retries them later)."""
    return _one_by_one(writes, lambda w: store.cas(w[0].session_id, w[0].version, w[1]))


Delete = tuple[int, int | None]  # (session id, the version to delete; None: any)


def delete_many(store: Store, deletes: list[Delete]) -> list[StoreError | None]:
    """Deletes of many records (the timers' ended sessions, issue 15), as
    ``cas_many``: one transaction where the store has one (SQLite
    ``delete_many``), one result per delete. Never raises a StoreError."""
    return _many(store, "delete_many", deletes, lambda d: delete_one_by_one(store, d))


def delete_one_by_one(store: Store, deletes: list[Delete]) -> list[StoreError | None]:
    """One delete after the other, as ``cas_one_by_one``: a failure that is
    not the record's own ends the batch (the rest fail with it)."""
    return _one_by_one(deletes, lambda d: store.delete(*d))


Floor = tuple[int, int]  # (session id, its send-counter floor)


def set_floors(store: Store, floors: list[Floor]) -> list[StoreError | None]:
    """Send-counter floors of many sessions (the TERMINATEs of a batch of
    the timers' ends, review k16r2 #3), as ``cas_many``: one transaction
    where the store has one (SQLite ``set_floor_many``), one result per
    floor. Never raises a StoreError."""
    return _many(store, "set_floor_many", floors, lambda f: set_floor_one_by_one(store, f))


def set_floor_one_by_one(store: Store, floors: list[Floor]) -> list[StoreError | None]:
    """One floor after the other: a store that does not answer ends the
    batch (the rest fail with it)."""
    return _one_by_one(floors, lambda f: store.set_floor(*f))


def _many(store: Store, method: str, items: list, one_by_one) -> list[StoreError | None]:
    """The store's batched ``method`` over ``items`` (a StoreError it raises
    fails every item), or ``one_by_one`` where it has none."""
    if not items:
        return []
    many = getattr(store, method, None)
    if many is None:
        return one_by_one(items)
    try:
        return many(items)
    except StoreError as e:
        return [e] * len(items)


def _one_by_one(items: list, write) -> list[StoreError | None]:
    """``write`` each item in turn: a VersionConflict is that item's alone;
    any other StoreError (the store does not answer) ends the batch, and
    the items not tried fail with it."""
    results: list[StoreError | None] = []
    for item in items:
        try:
            write(item)
            results.append(None)
        except VersionConflict as e:
            results.append(e)
        except StoreError as e:
            results.extend([e] * (len(items) - len(results)))
            break
    return results


class Store(Protocol):
    """``claim_initiation``: the handshake timestamps of every gateway on
    this store. True when ``timestamp_ns`` is newer than every initiation of
    ``peer`` accepted before, and is now the one recorded (compare-and-swap:
    of two gateways claiming one initiation, one wins); False when it is not
    newer (a replay). A StoreError when the store cannot answer: the caller
    refuses the handshake (jvpn/gateway/control.py)."""

    def create(self, rec: SessionRecord, secrets: bytes) -> None: ...
    def get(self, session_id: int) -> tuple[SessionRecord, bytes] | None: ...
    # ``secrets``: new session secrets (a rekey's key ring, jvpn/keys.py) in
    # the same compare-and-swap (None: unchanged)
    def cas(self, session_id: int, expected_version: int, new: SessionRecord,
            secrets: bytes | None = None) -> None: ...
    def delete(self, session_id: int, expected_version: int | None = None) -> None: ...
    # After a write that dropped keys (an epoch's end, a replaced pending
    # epoch): what the store can erase of older copies of the secrets
    # (SQLite: its WAL; etcd: nothing, revisions live until compaction).
    # Never raises; False when it could not (the next drop tries again).
    def forget_old_secrets(self) -> bool: ...
    def list(self) -> list[SessionRecord]: ...
    # Every session that parses (the others skipped and reported, as list()),
    # with what a restart needs of it, in pages: one pass, not a read per session
    def restorable(self) -> Iterator[Stored]: ...
    def get_floor(self, session_id: int) -> int: ...
    def set_floor(self, session_id: int, floor: int) -> None: ...
    def claim_initiation(self, peer: bytes, timestamp_ns: int) -> bool: ...
    def last_initiation(self, peer: bytes) -> int: ...
    # The peer's claim set to ``lowered_ns`` only if it is ``claimed_ns``
    # now (one compare-and-swap): True when it was; False, nothing
    # changed, otherwise (jvpn/gateway/dated_ahead.py decides when).
    def lower_claim(self, peer: bytes, claimed_ns: int, lowered_ns: int) -> bool: ...
    # Client counters: every counter the gateway delivered is below the
    # replay ceiling (raised ahead in blocks, settled exactly when nothing
    # more is delivered; docs/protocol.md, "Replay windows across restarts").
    def get_replay_ceiling(self, session_id: int) -> tuple[int, bool]: ...  # (C, exact)
    def raise_replay_ceiling(self, session_id: int, ceiling: int) -> None: ...
    def settle_replay_ceiling(self, session_id: int, ceiling: int) -> None: ...
    def changes(self, since_revision: int = 0) -> Iterator[Change]: ...
    def close(self) -> None: ...


@runtime_checkable
class ClusterStore(Store, Protocol):
    """What only a store shared by several gateways offers (etcd): gateway
    registrations under leases (the lease id is the fencing token), a
    compare-and-swap that also requires another gateway's lease, and a
    watch of the session records. ``isinstance(store, ClusterStore)`` is how
    a gateway knows it is part of a cluster."""

    lease_id: int  # our registration's lease: the fencing token (0: none)
    lease_ttl_s: int

    def cas(self, session_id: int, expected_version: int, new: SessionRecord,
            alive: tuple[str, int] | None = None, secrets: bytes | None = None) -> None: ...
    def register_gateway(self, node_id: str, ttl_s: int = 2) -> int: ...
    def lease_expired(self) -> bool: ...
    def lease_deadline(self) -> float: ...
    def lease_valid(self, margin_s: float = 0.0) -> bool: ...
    def gateway_lease(self, node_id: str) -> int | None: ...
    def gateways(self) -> list[str]: ...
    def watch_sessions(self, on_record: Callable[[int, SessionRecord | None], None],
                       stop: threading.Event) -> None: ...


def check_cas(session_id: int, expected_version: int, new: SessionRecord,
              secrets: bytes | None) -> None:
    """A compare-and-swap writes the same session at a higher version, or,
    with new ``secrets`` only (a rekey's confirmation, the end of its
    overlap: the record is unchanged), at the same version: such a write
    does not move the version, so nothing that waits on it (a reattach's
    path challenge) is refused as "record moved"."""
    same = new.version == expected_version and secrets is not None
    if new.session_id != session_id or (new.version <= expected_version and not same):
        raise StoreError("cas: the new record must be the same session at a higher version")
    if new.version > MAX_VERSION:  # a damaged or hostile stored version (review k16r2 #2)
        raise StoreError(f"cas: version {new.version} does not fit the store")


MAX_VERSION = (1 << 63) - 1  # the stores' integers are signed 64-bit (SQLite's)


def check_lowering(claimed_ns: int, lowered_ns: int) -> None:
    """Store.lower_claim's arguments: a lowering, between values a claim
    can hold (else a StoreError, nothing written)."""
    if not 0 <= lowered_ns < claimed_ns <= MAX_VERSION:
        raise StoreError(f"a claim lowered from {claimed_ns} to {lowered_ns}: not a lowering")


_FIELD_NAMES = tuple(f.name for f in fields(SessionRecord))
_NESTED = ("binding", "candidate")  # the record's Transport fields
# the fields in the order json.dumps(sort_keys=True) writes them: a dict made
# in that order is written so without sorting (issue 15: twice per handshake)
_SORTED_NAMES = tuple(sorted(_FIELD_NAMES))
_sorted_values = operator.attrgetter(*_SORTED_NAMES)


def record_to_json(rec: SessionRecord) -> str:
    """The record as JSON. Field by field, not ``asdict``: its deep copy of
    every value cost more than the rest of a handshake's store write
    (issue 15); a Transport as its two fields."""
    # in sorted order: a key set again below keeps its place
    d = dict(zip(_SORTED_NAMES, _sorted_values(rec), strict=True))
    for name in _NESTED:  # a Transport's two fields, as asdict gives them
        value = d[name]
        if value is not None:
            d[name] = {"addr": value.addr, "port": value.port}
    d["state"] = rec.state.name
    d["switches_ms"] = list(rec.switches_ms)
    if rec.confirmed:  # the usual case: a record as before the field existed
        del d["confirmed"]
    return json.dumps(d)  # already in sort_keys order (_SORTED_NAMES)


# A field this version does not know (written by a newer one) is ignored,
# so a record format that only adds fields stays readable by the version before.
def _field_default(f):
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else _REQUIRED


_REQUIRED = object()  # a field without a default: its absence makes the value no record
# the defaults of the fields that have one; the record made positionally, in
# __init__'s order, from the value's fields over them (C-level: a restart
# decodes a million records, issue 15): a field it does not name is ignored,
# a required one it lacks is a KeyError
_DEFAULTS = {f.name: d for f in fields(SessionRecord)
             if (d := _field_default(f)) is not _REQUIRED}
_in_init_order = operator.itemgetter(*_FIELD_NAMES)
_scan_once = json.JSONDecoder().scan_once  # json.loads without its wrappers


def _json_value(text: str | bytes):
    """``json.loads(text)``; a str that is exactly one value (what the
    stores write) is scanned at once; anything else (bytes, whitespace
    around it, no value at all, extra data) goes to json.loads, which
    answers or raises as it always did."""
    if isinstance(text, str):
        try:
            value, end = _scan_once(text, 0)
        except StopIteration:
            end = -1
        if end == len(text):
            return value
    return json.loads(text)


def record_from_json(text: str | bytes) -> SessionRecord:
    """Raises Unreadable for anything that is not a session record (a
    missing field, a wrong type); fields it does not know are ignored."""
    try:
        values = fields_of(text)  # the layout the stores write, read at once
        if values is not None:
            # its expression gives each field the one type it is written as
            # (integers, strings, the state, a bool): the ranges are left
            rec = make_record(*values)
            _in_range(rec)
            return rec
        rec = _decoded(text)
        if not (isinstance(rec.session_id, int) and isinstance(rec.version, int)
                and isinstance(rec.epoch, int)):
            raise TypeError("session_id, version and epoch must be integers")
        if not isinstance(rec.peer_key, str):
            raise TypeError("peer_key must be a string")
        if type(rec.inner_addr) is not str:  # an int reads as an address (review k20rall F2)
            raise TypeError("inner_addr must be a string")
        if not isinstance(rec.confirmed, bool):
            raise TypeError("confirmed must be a boolean")
        _in_range(rec)
        return rec
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        # RecursionError: a value nested deeper than the decoder goes (a
        # damaged or hostile store value): that record, not the whole pass
        unreadable = Unreadable(f"not a session record ({type(e).__name__}: {e})")
        unreadable.dated_ahead = getattr(e, "evidence", None)  # _RecordDatedAhead's
        raise unreadable from None


def _decoded(text: str | bytes) -> SessionRecord:
    """``record_from_json``'s record of any other text: decoded as JSON, its
    fields laid over the defaults (raises ValueError, KeyError, TypeError,
    AttributeError or RecursionError for what is not a record)."""
    d = _json_value(text)
    d["state"] = State[d["state"]]
    for k in _NESTED:
        nested = d.get(k)
        if nested and type(nested.get("addr")) is not str:  # Transport would take an int
            raise TypeError(f"{k} address must be a string")  # review k18rall F4
        d[k] = _transport(nested) if nested else None
    d["switches_ms"] = tuple(d.get("switches_ms", ()))
    return make_record(*_in_init_order({**_DEFAULTS, **d}))  # SessionRecord(*...)


def _transport(nested: dict) -> Transport:
    """``Transport(**nested)`` of a value whose address is a string: made
    at once when it holds exactly its two fields (its ``__post_init__``'s
    canonical address, then the fields), by the class otherwise (an extra
    or a missing field: its TypeError, as before)."""
    if len(nested) == 2 and "port" in nested:
        return make_transport(stored_ip(nested["addr"]), nested["port"])
    return Transport(**nested)


_U64 = 1 << 64


def stored_json(rec: SessionRecord) -> str:
    """What the stores write: :func:`record_to_json` of a record they can
    read back; one out of range (a floor past 2**63 - 1) is a StoreError,
    the write fails closed, never a row every later read skips (review
    k18rall F1)."""
    try:
        _in_range(rec)
        for t in (rec.binding, rec.candidate):  # what every read checks as it parses
            if t is not None:
                stored_ip(t.addr)
    except ValueError as e:
        raise StoreError(f"session {rec.session_id:#x}: not written: {e}") from None
    return record_to_json(rec)


_RANGED = ("version", "epoch", "c2s_floor", "created_ms", "handshake_ns")  # _in_range's order


def _in_range(rec: SessionRecord) -> None:
    """Integers the gate's element holds fit it: a damaged store's value is
    that record unreadable, never an element refused later (a fence, an
    install: review k18r4) nor one with the value cut short. And the
    record's initiation is not dated ahead of its making (``_AHEAD_MAX_NS``).
    A transport's port is a UDP source's (1..65535); its address is checked
    where a read parses it (``stored_ip``: no address, no record) and by
    ``stored_json``, not here a second time (a restart reads a million)."""
    if not 0 <= rec.session_id < _U64:
        raise ValueError("session_id out of range")
    # created_ms and handshake_ns too: compared with clocks and with a new
    # initiation's timestamp (review k19r1 R3: a string was a TypeError at
    # the peer's every initiation, a value past 2**63 one the store never wrote)
    values = (rec.version, rec.epoch, rec.c2s_floor, rec.created_ms, rec.handshake_ns)
    for n, value in enumerate(values):  # the fields read at once (a restart reads a million)
        if type(value) is not int or not 0 <= value <= MAX_VERSION:
            raise ValueError(f"{_RANGED[n]} out of range")
    for t in (rec.binding, rec.candidate):
        if t is None:
            continue
        if type(t.port) is not int or not 1 <= t.port <= 0xFFFF:  # 0: no UDP source
            raise ValueError("a transport port out of range")
    if rec.handshake_ns - rec.created_ms * 1_000_000 > _AHEAD_MAX_NS:  # both ints by now
        raise _RecordDatedAhead(
            f"handshake_ns more than {HANDSHAKE_AHEAD_MAX_MS // 1000} s ahead of created_ms: "
            "no gateway wrote it",
            DatedAhead(rec.session_id, rec.peer_key, rec.handshake_ns, rec.created_ms))


# A record dated ahead: its ``handshake_ns`` (its client's clock) more than
# HANDSHAKE_AHEAD_MAX_MS ahead of its ``created_ms`` (the answering gateway's
# clock, read once with the check that refuses such an initiation:
# jvpn/gateway/handshakes.py) was written by no gateway: a damaged or hostile
# store. Served, its peer's every new initiation would be a replay until it
# ended (jvpn/config.py). So it is no record, to every read (the restart's, a
# reattach's, a cluster's watch and sweep: skipped and reported, the store
# left as it is) and to every write (the write fails closed). Both fields are
# the record's own, never compared with today's clock: a gateway started with
# its clock wrong drops nothing by this rule. Checked in line in _in_range (a
# restart reads a million records: no call more per record).
_AHEAD_MAX_NS = HANDSHAKE_AHEAD_MAX_MS * 1_000_000



class SkipsUnreadable:
    """A store's reads skip what does not parse and report it here; a
    record dated ahead is also told to ``on_dated_ahead`` (a restart's
    pass collects them: jvpn/gateway/dated_ahead.py)."""

    on_unreadable: Callable[[str, str], None] | None = None
    on_dated_ahead: Callable[[DatedAhead], None] | None = None
    unreadable = 0  # values skipped so far

    def _skipped(self, key: str, e: Exception) -> None:
        self.unreadable += 1
        if self.on_unreadable is not None:
            self.on_unreadable(key, str(e))
        evidence = getattr(e, "dated_ahead", None)
        if evidence is not None and self.on_dated_ahead is not None:
            self.on_dated_ahead(evidence)
