"""The timers' transitions, many at once (a mixin of the session table,
jvpn/gateway/table.py; issue 15, "Silent clients make a storm").

When many sessions fall silent together, each went ATTACHED -> VOLATILE
through its own durable write (one fsync each) under the control lock. Here
a batch of them is one ``cas_many`` (jvpn/store): one transaction, one
fsync, each record still a compare-and-swap over the version it was
decided on. Only after the batch committed does the gate follow and each
session's events go out, for the records that were written; a record whose
write conflicted is that record's rejection alone; a batch the store did
not take changes nothing (records, elements, events) and is reported once
by the caller, which looks at the sessions again next tick.

A crash before the commit: no record changed, none of the batch's elements
did either (the restart decides again from the records). A crash after the
commit, before the gate followed: the records are newer than the elements
and their events were not said; the restart's reconcile projects the
records (as for a single commit's crash between its write and its gate
write). A crash between the batch's commit and its deletes: the
TERMINATED records stay in the store and the restart forgets them.

After the commit the ended sessions' elements leave the gate first, all of
them, before any send or further store write (review k16r2 #4); then one
transaction writes the send-counter floors their TERMINATEs need (a
restored session's first send; review k16r2 #3). A crash after that
transaction: a floor is only ever raised, so a TERMINATE never sent only
leaves counters unused. A record whose transition cannot be made or
checked (anything raised) is rejected alone, before the write (review
k16r2 #2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from jvpn.codes import EventType, Reason
from jvpn.gateway.announce import announce
from jvpn.session import Event, SessionRecord, State, Transition, apply
from jvpn.store import StoreError, VersionConflict, cas_many, check_cas, set_floors


@dataclass(frozen=True, slots=True)
class Due:
    """One timer transition the timers decided (jvpn/gateway/timers.py)."""

    live: object  # the table's Live
    event: Event
    detail: str
    changes: dict
    key_expiry: SessionRecord | None = None  # a key expiry's: the record it was decided on


@dataclass(frozen=True, slots=True)
class _Planned:
    due: Due
    base: SessionRecord
    new: SessionRecord
    step: Transition


class TimerWrites:
    """Needs from the table: ``store``, ``events``, ``clock_ms``,
    ``_project``, ``forget_batch``."""

    def transition_batch(self, batch: list[Due],
                         report: Callable[[Exception], None]) -> StoreError | None:
        """The batch's transitions in one store transaction, then the gate
        and the events of those written; the sessions they ended are
        forgotten (their deletes: one more transaction). A record whose
        gate write failed goes to ``report`` (its commit stands, as
        ``commit``'s; the others still follow). Returns the store's error
        if it did not take them (those records unchanged: retried by the
        caller), else None."""
        planned = [p for p in map(self._plan, batch) if p is not None]
        if not planned:
            return None
        results = cas_many(self.store, [(p.base, p.new) for p in planned])
        failed, written = None, []
        for p, result in zip(planned, results, strict=True):
            if result is None:
                written.append(p)
            elif isinstance(result, VersionConflict):
                self._rejected(p.base, result)  # that record's own: as one transition
            else:
                failed = failed or result
        ended = [p.new for p in written if p.new.state is State.TERMINATED]
        for rec in ended:  # first, all of them: no packet passes (review k16r2 #4)
            _step(report, self.gate.remove, rec.session_id)
        _step(report, self._reserve_terminates,
              [p.due.live for p in written if p.new.state is State.TERMINATED])
        for p in written:
            _step(report, self._follow, p)
        if ended:
            self.forget_batch([(rec.session_id, rec.version) for rec in ended], report)
        return failed

    def _plan(self, due: Due) -> _Planned | None:
        """The transition and its new record; one whose making or checking
        raises anything (an illegal step, a stored version at the store's
        top) is rejected alone: the others are written (review k16r2 #2)."""
        base = due.live.record
        try:
            new, step = apply(base, due.event, self.clock_ms(), **due.changes)
            check_cas(base.session_id, base.version, new, None)
        except Exception as e:  # noqa: BLE001 - one record's: reported, never the batch's
            self._rejected(base, e)
            return None
        return _Planned(due, base, new, step)

    def _follow(self, p: _Planned) -> None:
        """After the commit: the gate follows, then the event (as
        ``commit``). A TERMINATE told to an ended session's client uses a
        send counter ``_reserve_terminates`` covered: no store write per
        session under the batch's hold (review k16r2 #3, #4); one the store
        did not cover is unsaid, and the client's next message meets a
        closed session."""
        steps = [(p.new, p.step)]
        self._project(p.new, p.due.live.keys, steps, floor_writes=False)
        announce(self.events, p.base, steps, p.due.detail, self.clock_ms())

    def _reserve_terminates(self, ended: list) -> None:
        """The send-counter floors the ended sessions' TERMINATEs need, in
        one store transaction (review k16r2 #3: not one fsync per session
        under the batch's hold). A floor the store did not take leaves that
        TERMINATE unsaid (``_follow``); a crash after it: a floor is only
        ever raised, the next owner resumes above it."""
        floors = []
        for live in ended:
            counter = live.channel.counter
            floor = counter.wanted_floor()
            if floor is None or not (live.record.binding or live.record.candidate):
                continue  # covered already, or nobody to tell
            if floor <= getattr(counter.reserve_writer, "durable", 0):
                counter.reserved(floor)  # the handshake's transaction wrote it
            else:
                floors.append((live, floor))
        results = set_floors(self.store, [(live.record.session_id, floor)
                                          for live, floor in floors])
        for (live, floor), result in zip(floors, results, strict=True):
            if result is None:
                live.channel.counter.reserved(floor)

    def _rejected(self, base: SessionRecord, e: Exception) -> None:
        self.events.emit(EventType.TRANSITION_REJECTED,
                         getattr(e, "reason_code", Reason.OWNERSHIP_CONFLICT),
                         base.session_id, detail=str(e))


def _step(report: Callable[[Exception], None], step, *args) -> None:
    try:
        step(*args)
    except Exception as e:  # noqa: BLE001 - one session's step ends no other's
        report(e)
