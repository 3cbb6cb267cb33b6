"""The session table: the sessions this gateway serves, and the one writer
of their state.

Only this module writes session records to the store (create, compare-and-
swap, delete, the ownership compare-and-swap with its lease condition),
writes the gate's elements (put / standby / remove), and emits the state
events (SessionStateChange, SessionTerminated). Every change of a record goes
through ``commit``: the store first, then the gate, then the events; a store
that refuses or cannot answer changes nothing here. Validation (admission,
reattach, ownership, timers) happens before, elsewhere, and returns what to
commit.

The data loops read ``sessions``, ``by_inner`` and ``downstream`` without the
control lock; everything that writes runs under it (jvpn/gateway/daemon.py).

Routing: a peer's downstream goes to one session (``by_inner``, keyed by the
peer's assigned IPv4). While it does, that session owns the peer's
AllowedIPs in ``downstream`` (longest-prefix match, jvpn/prefixes.py) and
the kernel routes to the subnets behind the peer (jvpn/gateway/routes.py);
``_route`` and ``_unroute`` are the one place both change.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from dataclasses import dataclass

from jvpn import pathmtu, wire
from jvpn.codes import Reason
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gate.batch import BatchNotWritten
from jvpn.gateway.announce import announce
from jvpn.gateway.capacity import Capacity
from jvpn.gateway.ceiling import ReplayCeiling, StoreBreaker, start_floor
from jvpn.gateway.deletes import PendingDeletes
from jvpn.gateway.downstream import Downstream
from jvpn.gateway.floors import Floors
from jvpn.gateway.indexes import Indexes
from jvpn.gateway.key_writes import KeyWrites
from jvpn.gateway.new_session import NewSessions
from jvpn.gateway.ownership import OwnerWrite
from jvpn.gateway.routes import NoRoutes
from jvpn.gateway.sealing import seal_control
from jvpn.gateway.standby import StandbyWrites
from jvpn.gateway.terminate import OperatorEnds
from jvpn.gateway.timer_writes import TimerWrites
from jvpn.gateway.traffic import NOT_COUNTED, Traffic
from jvpn.keys import KeyRing, SessionKeys
from jvpn.prefixes import Network, PrefixMap
from jvpn.replay import DEFAULT_CONTROL_WINDOW
from jvpn.session import Event, IllegalTransition, SessionRecord, State, Transport, apply
from jvpn.store import NOTHING_PREWRITTEN, Prewritten, Store, StoreError
from jvpn.store.group_commit import ImmediateWrites
from jvpn.tunnel import CounterUnavailable, DataChannel

Send = Callable[[bytes, Transport], None]
# A session that received nothing for this long drops its AEAD objects
# (their OpenSSL contexts are most of an active session's memory, issue 15);
# its next message makes them again from the key bytes. Five times the
# default heartbeat (policy heartbeat_volatile_ms): a client that keeps
# its path alive never gets there.
AEAD_IDLE_MS = 10_000
# Held while a restored session's channel is made at its first use, so that
# two threads using it first at once make one (two send counters under one
# key would reuse nonces); also by ``retire``/``resume`` of one not made yet.
_MAKING_CHANNEL = threading.Lock()
# Held while a session's Traffic is made at its first count: the UDP and
# the TUN loop count into it, and one must never count into an object the
# other then replaces (its counts, the echo's delivered count, lost).
_MAKING_TRAFFIC = threading.Lock()


class _StoreWrite:
    """``table.store.<method>(sid, value)`` as a one-argument callable, the
    store read at each call: a session's floor or ceiling write (a closure
    per session costs four times its size, issue 15)."""

    __slots__ = ("durable", "method", "sid", "table")

    def __init__(self, table: SessionTable, method: str, sid: int, durable: int = 0):
        self.table, self.method, self.sid = table, method, sid
        # a floor at or below it is durable already (the handshake's own
        # transaction wrote it; a floor is never lowered): no write
        self.durable = durable

    def __call__(self, value: int) -> None:
        if value <= self.durable:
            return
        getattr(self.table.store, self.method)(self.sid, value)
        if self.method == "raise_replay_ceiling":
            # a new block of client counters: the client chose them, and one
            # jump can spend the keys' message budget at once, so key expiry
            # is looked at next tick, not at the time the rate bound assumed
            # (jvpn/gateway/key_timers.py due_at; within a block, the bound holds)
            self.table.timers.nudge(self.sid)


class _ChannelPlan:
    """A restored session's DataChannel before its first use (issue 15: a
    restart at 1M made a million channels that idle sessions never use):
    what it is made from besides the Live's own fields (its keys, AllowedIPs,
    ceiling, binding). ``retired``: retired before it was made."""

    __slots__ = ("first_counter", "retired", "table")

    def __init__(self, table: SessionTable, first_counter: int):
        self.table, self.first_counter, self.retired = table, first_counter, False


@dataclass(slots=True)  # slots: one per session (issue 15)
class Live:
    record: SessionRecord
    keys: KeyRing  # the live key epochs (jvpn/keys.py); the channel holds the same ring
    _channel: DataChannel | _ChannelPlan  # ``channel``: made at first use after a restore
    inner: bytes  # the client's inner IPv4 address, packed
    # the last authenticated receive on the TIMER clock (the table's
    # ``timer_ms``, never set back), so that silence is measured in the
    # gateway's time, not across a wall-clock step (a step forward sent
    # every session VOLATILE); written by the data path, and by a proven
    # switch (control.py); ``heard_ms`` gives it on the wall clock
    last_rx_ms: int
    ceiling: ReplayCeiling  # client counters: delivered only below the durable ceiling
    installed: bool = True  # our element is in the gate (False: adopted, or parked)
    parked: bool = False  # element removed for a handover/fence that did not complete
    # False: a new handshake's session, until its initiator's first
    # authenticated message from the bound address (jvpn/gateway/control.py);
    # downstream goes to the peer's previous session until then
    confirmed: bool = True
    # its confirmation write is queued or in flight: a newer attempt's
    # commit does not end it meanwhile (the confirmation decides), it only
    # marks it ``superseded``: ended if that confirmation fails
    # (jvpn/gateway/new_session.py, review k16r1)
    confirming: bool = False
    superseded: bool = False
    # The window could not be restored exactly (a crash): no data until a
    # reattach past this epoch proves the path (jvpn/gateway/ceiling.py).
    blind_epoch: int | None = None
    # its revocation was decided but the store refused to end it: no element,
    # no downstream, until the retry ends it (jvpn/gateway/revocation.py)
    quarantined: bool = False
    # the quarantine is key expiry's (jvpn/gateway/key_timers.py): lifted
    # once its retried write lands (review R4 #2); a revocation's never is
    quarantine_lifts: bool = False
    allowed: tuple[Network, ...] = ()  # the peer's AllowedIPs (its sources, its downstream)
    subnets: tuple[Network, ...] = ()  # those behind the peer: kernel routes while routed
    _traffic: Traffic | None = None  # ``traffic``: made at its first count
    # the operator asked for a rekey (`jvpn-xdp rekey`): the gateway flags
    # its replies with FLAG_REKEY until the next epoch is committed
    # (jvpn/gateway/rekey.py clears it)
    rekey_requested: bool = False
    # when the previous epoch stops being accepted (set at the confirmation,
    # or at a restart that found one): jvpn/gateway/key_writes.py
    overlap_until_ms: int | None = None
    # the previous epoch left memory and the element, the store still holds
    # it: the timer writes the secrets again each tick (key_writes.py)
    secrets_unsaved: bool = False
    # the earliest next try of a refused confirmation write, on the timer
    # clock (rekey_control.py)
    confirm_retry_ms: int = 0

    @property
    def channel(self) -> DataChannel:
        """The session's DataChannel. A restored session's is made here, at
        its first use, by whichever thread comes first, once: its counters
        start at the stored floor and its AllowedIPs, ceiling and keys are
        the Live's, as they would have been at the restore (the replay
        ceiling, its floors, was restored eagerly: no window moves back)."""
        ch = self._channel
        if ch.__class__ is not _ChannelPlan:
            return ch
        with _MAKING_CHANNEL:
            ch = self._channel
            if ch.__class__ is _ChannelPlan:
                plan, ch = ch, ch.table.channel_of(self, ch.first_counter)
                if plan.retired:
                    ch.retire()
                self._channel = ch
            return ch

    @channel.setter
    def channel(self, channel: DataChannel) -> None:
        self._channel = channel

    @property
    def traffic(self) -> Traffic:
        """The daemon's own rx/tx counts (jvpn/gateway/traffic.py), made at
        the first count or echo, once, whichever loop comes first (issue 15:
        an idle session never makes one); under a new incarnation per Live,
        as when it was made with the Live."""
        traffic = self._traffic
        if traffic is not None:
            return traffic
        with _MAKING_TRAFFIC:
            if self._traffic is None:
                self._traffic = Traffic()
            return self._traffic

    @traffic.setter
    def traffic(self, traffic: Traffic) -> None:
        self._traffic = traffic

    @property
    def traffic_so_far(self) -> Traffic:
        """The counts for a reader (a listing) without making them: zeros
        (NOT_COUNTED) before the first."""
        traffic = self._traffic
        return NOT_COUNTED if traffic is None else traffic  # type: ignore[return-value]

    @property
    def made_channel(self) -> DataChannel | None:
        """The channel if it was made (readers that need none: drop counts)."""
        ch = self._channel
        return None if ch.__class__ is _ChannelPlan else ch

    @property
    def unmade_first_counter(self) -> int | None:
        """The send counter the channel will start at while it is not made
        (a restored session's plan), None once it is (idle_due.py)."""
        ch = self._channel
        return ch.first_counter if ch.__class__ is _ChannelPlan else None

    def send_upcoming(self) -> int:
        """The next send counter, without making the channel (key age)."""
        ch = self._channel
        return ch.first_counter if ch.__class__ is _ChannelPlan else ch.counter.upcoming

    @property
    def holds_aead(self) -> bool:
        ch = self.made_channel
        return ch is not None and ch.holds_aead

    def heard_ms(self, lead: int) -> int:
        """The last receive on the wall clock's current reckoning (``lead``:
        the wall clock's now less the timer clock's): now less the silence."""
        return self.last_rx_ms + lead

    def shed_if_idle(self, timer_now: int) -> None:
        """The timer's, each tick: an idle session keeps only its key bytes
        (``timer_now``: the timer clock's, as ``last_rx_ms``)."""
        ch = self.made_channel
        if ch is not None and timer_now - self.last_rx_ms >= AEAD_IDLE_MS:
            ch.shed()

    def retire(self) -> int:
        """No counter is sent and no client message delivered after this
        returns (no store write in flight). Returns the exact replay ceiling."""
        self._retired(True)
        return self.ceiling.retire()

    def resume(self) -> None:
        self._retired(False)
        self.ceiling.resume()

    def _retired(self, retired: bool) -> None:
        with _MAKING_CHANNEL:  # a channel made meanwhile is retired (or not) too
            ch = self._channel
            if ch.__class__ is _ChannelPlan:
                ch.retired = retired
                return
        if retired:
            ch.retire()
        else:
            ch.resume()


class SessionTable(NewSessions, StandbyWrites, Downstream, OperatorEnds, PendingDeletes,
                   KeyWrites, Capacity, Indexes, Floors, TimerWrites):
    def __init__(self, *, store: Store, gate, events: EventLog, ownership,
                 clock_ms: Callable[[], int], send: Send,
                 control_window: int = DEFAULT_CONTROL_WINDOW, peers=None, routes=None,
                 path_mtu: int = pathmtu.DEFAULT_PATH_MTU):
        """``peers``: the configured peers by packed inner IPv4 (a session's
        AllowedIPs; a session whose address no peer has any more keeps its
        /32 alone); ``routes``: jvpn/gateway/routes.py (default: none);
        ``path_mtu``: our side's outer path MTU (config PathMTU)."""
        self.store, self.gate, self.events, self.ownership = store, gate, events, ownership
        self.clock_ms, self.send = clock_ms, send
        self.control_window = control_window  # the policy's security.replay_window_size
        self.path_mtu = path_mtu  # no session's datagrams are larger (datapath.py)
        self.sessions: dict[int, Live] = {}
        self.by_inner: dict[bytes, int] = {}
        self.downstream = PrefixMap()  # the routed sessions' AllowedIPs -> session id
        self.peers = peers or {}
        self.routes = routes if routes is not None else NoRoutes()
        self.standby: dict[int, tuple[KeyRing, str]] = {}  # others' sessions: (ring, owner)
        self.standby_inner: dict[int, bytes] = {}  # and their peer's inner IPv4 (--peer)
        self.fenced = False  # no element of ours may pass data (jvpn/gateway/follower.py)
        self.undeleted: dict[int, int | None] = {}  # store deletes to retry (deletes.py)
        self._init_indexes()  # timers, unconfirmed, added (indexes.py, issue 15)
        self.writes = ImmediateWrites(store)  # the daemon's: a GroupCommit (group_commit.py)
        self.pending_new = 0  # start_new's sessions whose writes are queued
        # every session's ceiling writes run on the one receive loop: one
        # pace for all of them (jvpn/gateway/ceiling.py, review D)
        self.ceiling_breaker = StoreBreaker()

    # ------------------------------------------------------------ reads
    def get(self, sid: int) -> Live | None:
        return self.sessions.get(sid)

    def __contains__(self, sid: int) -> bool:
        return sid in self.sessions

    def for_inner(self, inner: bytes) -> Live | None:
        """The session the peer with this assigned IPv4 is served by."""
        sid = self.by_inner.get(inner)
        return self.sessions.get(sid) if sid is not None else None

    def next_counter(self, sid: int) -> int:
        return self.sessions[sid].channel.next_counter()

    def remote_owners(self) -> dict[int, str]:
        return {sid: owner for sid, (_keys, owner) in self.standby.items()}

    def unused_id(self, randbits: Callable[[int], int]) -> int:
        """An id unused here; the store's create refuses one used elsewhere
        (AlreadyExists, in the handshake's own transaction: no read first,
        which would wait behind the group commit's fsync)."""
        while True:
            sid = randbits(64)
            if sid and sid not in self.sessions and sid not in self.standby:
                return sid

    # ------------------------------------------------------------ store writes
    def commit(self, base: SessionRecord, new: SessionRecord, keys,
               steps=(), detail: str = "", ring: KeyRing | None = None) -> None:
        """The one way a record changes: compare-and-swap over ``base`` (and
        ``ring``, a rekey's secrets: key_writes.py), then the gate follows,
        then one event per transition in ``steps``.
        Raises StoreError (VersionConflict included): nothing changed."""
        self._cas(base, new, ring)
        self._project(new, keys, steps)
        announce(self.events, base, steps, detail, self.clock_ms())

    def transition(self, live: Live, event: Event, detail: str = "", **changes) -> None:
        """A transition the gateway decides itself (timers, a replacing
        handshake); a terminated session is forgotten at once."""
        rec = live.record
        try:
            new, tr = apply(rec, event, self.clock_ms(), **changes)
            self.commit(rec, new, live.keys, [(new, tr)], detail=detail)
        except (IllegalTransition, StoreError) as e:
            self._rejected(rec, e)
            return
        if new.state is State.TERMINATED:
            self.forget(rec.session_id)

    def write_owner(self, w: OwnerWrite) -> SessionRecord:
        """An ownership change (jvpn/gateway/ownership.py): the record only,
        the gate follows through the caller's next step. Raises StoreError."""
        if w.alive is None:
            self.store.cas(w.old.session_id, w.old.version, w.new)
        else:
            self.store.cas(w.old.session_id, w.old.version, w.new, alive=w.alive)
        return w.new

    # ------------------------------------------------------------ the gate follows
    def _project(self, rec: SessionRecord, keys: SessionKeys, steps,
                 floor_writes: bool = True) -> None:
        """After every successful store write: the gate follows.
        ``floor_writes``: a TERMINATE may reserve its counter in the store."""
        live = self.sessions.get(rec.session_id)
        if live is not None:
            self.timers.touch(rec.session_id)  # its timers follow the new record
        if rec.state is State.TERMINATED:
            self.gate.remove(rec.session_id)  # first: no packet passes any more
            if live is not None:
                reason = next((tr.reason_code for _r, tr in steps
                               if tr.new is State.TERMINATED), "")
                self._send_terminate(live, rec, reason, floor_writes)
                live.record = rec  # the timer loop forgets it (store, tables)
            return
        if live is None:
            return
        live.record = rec
        if live.installed or (rec.state is State.ATTACHED and not self.fenced):
            self._put(live, rec)

    def _send_terminate(self, live: Live, rec: SessionRecord, reason: str,
                        floor_writes: bool = True) -> None:
        """Best effort, authenticated: the client learns its session is over
        instead of retrying into an unknown session. Without
        ``floor_writes`` only under a counter already reserved."""
        old = live.record
        to = old.binding or old.candidate
        if to is None or reason == Reason.CLIENT_STOPPED:  # the client said it is gone
            return
        code = reason if reason in wire.TERMINATE_REASONS else Reason.POLICY_TERMINATION
        try:
            counter = (live.channel.next_counter() if floor_writes
                       else live.channel.next_reserved_counter())
        except CounterUnavailable:
            return  # no durable counter: unsaid (the client's retries meet a closed session)
        msg = seal_control(live.channel.send_keys, abi.MSG_TERMINATE, rec.session_id, counter,
                           wire.TERMINATE_REASONS.index(code))
        self.send(msg, to)

    def _put(self, live: Live, rec: SessionRecord) -> None:
        """Our element, fenced by our lease; a session new to this gateway
        starts its window above what the previous owner saw."""
        if live.quarantined:
            return
        # a handoff made it ours: the remote entry's control floor carries over
        was_remote = rec.session_id in self.standby
        if live.blind_epoch is not None:
            if rec.epoch <= live.blind_epoch:
                self.gate.standby(rec, live.keys, was_remote=was_remote)  # no data
                return
            live.ceiling.proven(rec.c2s_floor)
            live.blind_epoch = None
        if live.parked:
            live.resume()
        self.gate.put(rec, live.keys, self.ownership.token, first=not live.installed,
                      c2s_floor=max(rec.c2s_floor, live.ceiling.floor), was_remote=was_remote)
        live.installed, live.parked = True, False
        self.stand_down(rec.session_id)

    def _live(self, rec: SessionRecord, keys: KeyRing | SessionKeys, inner: bytes,
              first_counter: int = 1, stored_ceiling: tuple[int, bool] | None = None,
              gate_window: bool = False, routed: bool = True,
              prewritten: Prewritten = NOTHING_PREWRITTEN, ceiling_ahead: int = 0,
              lazy_channel: bool = False) -> Live:
        """``stored_ceiling``: the store's replay ceiling and whether it is
        exact (None: read it).
        ``gate_window``: the gate kept this session's window across our
        restart (pinned XDP maps): it saw every counter we delivered.
        ``routed``: the peer's downstream goes to this session (not yet for
        an unconfirmed one).
        ``prewritten``: the send-counter floor a handshake's transaction
        wrote with the record (jvpn/store ``HandshakeWrites``);
        ``ceiling_ahead``: the replay ceiling the confirmation writes
        (jvpn/gateway/new_session.py).
        ``lazy_channel``: the DataChannel is made at its first use (a
        restored session: ``Live.channel``)."""
        sid, stored_keys, now = rec.session_id, KeyRing.of(keys), self.clock_ms()
        keys = stored_keys.loaded(now) if stored_keys.previous else stored_keys  # as loaded
        stored, exact = (self.store.get_replay_ceiling(sid) if stored_ceiling is None
                         else stored_ceiling)
        allowed, subnets = self._allowed(inner)
        kept = self.gate.counter_top(sid) if gate_window else 0
        floor = max(rec.c2s_floor, kept) if kept else start_floor(rec.c2s_floor, stored)
        blind = rec.epoch if not kept and not exact and stored > rec.c2s_floor else None
        ceiling = ReplayCeiling(floor, max(stored, ceiling_ahead),
                                _StoreWrite(self, "raise_replay_ceiling", sid),
                                breaker=self.ceiling_breaker)
        first = max(first_counter, 1)
        live = Live(rec, keys, _ChannelPlan(self, first), inner, self.timer_ms(), ceiling,
                    installed=False, blind_epoch=blind, allowed=allowed, subnets=subnets)
        if not lazy_channel:
            live.channel = self.channel_of(live, first, prewritten)
        live.secrets_unsaved = keys is not stored_keys  # the timer's next tick writes it
        self.sessions[sid] = live
        self._indexed(live, routed)
        if routed:
            self._route(live)
        return live

    def channel_of(self, live: Live, first_counter: int,
                   prewritten: Prewritten = NOTHING_PREWRITTEN) -> DataChannel:
        """A new DataChannel for ``live`` (its keys, AllowedIPs, ceiling;
        sized to its binding's family until its client announces a path MTU)."""
        rec = live.record
        channel = DataChannel(live.keys, "gateway", first_counter=first_counter,
                              check_replay=not self.gate.checks_in_kernel,
                              check_tag=not self.gate.checks_in_kernel,
                              reserve=_StoreWrite(self, "set_floor", rec.session_id, prewritten),
                              allowed_inner_src=live.allowed,
                              admit_counter=live.ceiling.admit,
                              control_window=self.control_window)
        family = pathmtu.family_of(rec.binding.addr) if rec.binding is not None else 4
        channel.size_to(min(self.path_mtu, pathmtu.DEFAULT_PATH_MTU), family)  # until announced
        return channel

    def install(self, rec: SessionRecord, keys: KeyRing, inner: bytes,
                first_counter: int = 1, stored_ceiling: tuple[int, bool] | None = None,
                gate_window: bool = False) -> Live:
        """A session served here, with its element in the gate (raises StoreError);
        unrouted while unconfirmed (a restart: ``rec.confirmed``)."""
        live = self._live(rec, keys, inner, first_counter, stored_ceiling, gate_window,
                          routed=rec.confirmed, lazy_channel=True)
        live.confirmed = rec.confirmed
        try:
            self._put(live, rec)
        except BatchNotWritten:
            raise  # the whole start fails (reconcile.py): nothing of it removed
        except Exception:
            self.drop_local(rec.session_id)  # no half-installed session (review k18r4 #2)
            raise
        return live

    def adopt(self, rec: SessionRecord, keys: KeyRing) -> Live:
        """A session this gateway just became owner of: counters resume above
        the cluster-wide floor; no element until its reattach completes."""
        return self._live(rec, keys, ipaddress.IPv4Address(rec.inner_addr).packed,
                          first_counter=self.store.get_floor(rec.session_id))

    def observe(self, live: Live, rec: SessionRecord) -> None:
        """A newer record of ours seen in the store (the owner's own write)."""
        live.record = rec
        self.timers.touch(rec.session_id)

    def serve_again(self, live: Live, rec: SessionRecord) -> None:
        """A parked session is ours to serve again (a handover that did not happen)."""
        live.record = rec
        self.timers.touch(rec.session_id)
        self._put(live, rec)

    def drop_local(self, sid: int) -> None:
        """This gateway stops serving the session (the store keeps it)."""
        live = self.sessions.get(sid)
        if live is not None:
            self._unroute(live)
            self.ceiling_breaker.forget(live.ceiling)  # its place in the queue of turns
            del self.sessions[sid]
        self._unindexed(sid, live.inner if live is not None else None)
        self.gate.remove(sid)
