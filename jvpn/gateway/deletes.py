"""Store deletes that failed (a mixin of ``SessionTable``): a session the
gateway forgot is gone from its tables and the gate at once, but a store
that could not answer would keep the record, and a restart would restore
it (review R4 #4). The delete is retried on every tick until the store
answers; a record changed since (another gateway's write) or already gone
ends the retries."""

from __future__ import annotations

from collections.abc import Callable

from jvpn.store import StoreError, VersionConflict, delete_many


class PendingDeletes:
    """Needs from the table: ``store``, ``sessions``, ``drop_local``; sets
    ``undeleted`` (sid -> version, None: any version)."""

    undeleted: dict[int, int | None]

    def forget(self, sid: int) -> None:
        """Served no more, and gone from the store (or, if the store does
        not answer, deleted by a later tick)."""
        live = self.sessions.get(sid)
        self.drop_local(sid)
        try:
            self.store.delete(sid)
        except StoreError:
            self.undeleted[sid] = live.record.version if live is not None else None

    def forget_batch(self, ended: list[tuple[int, int]],
                     report: Callable[[Exception], None]) -> None:
        """``forget`` for many (session id, its last version of ours): the
        timers' ended sessions in one store transaction (issue 15); a
        delete the store refused is retried on its own, as ``forget``'s. A
        session whose local drop raises (the gate's element removal) goes to
        ``report``; the others and every store delete still go."""
        for sid, _version in ended:  # each alone: one's failure ends no other's
            try:  # forget (review k16r2 #2)
                self.drop_local(sid)
            except Exception as e:  # noqa: BLE001 - reported; its store delete still goes
                report(e)
        for (sid, version), result in zip(ended, delete_many(self.store, ended), strict=True):
            if result is not None and not isinstance(result, VersionConflict):
                self.undeleted[sid] = version

    def forgotten_then_confirmed(self, sid: int, version: int) -> None:
        """A confirmation queued before its session was forgotten landed
        (``version``, ours: a compare-and-swap on the version forget saw):
        that record is the one to delete now. A delete retried at the old
        version would conflict and give up, and the confirmed record would
        outlive its session (a restart restores it). Whatever wrote after
        it (another gateway's takeover) conflicts with this version, as
        before."""
        if sid not in self.sessions:
            self.undeleted[sid] = version

    def retry_deletes(self) -> None:
        """The timer loop: one more try for each delete the store refused."""
        for sid, version in list(self.undeleted.items()):
            try:
                self.store.delete(sid, version)
            except VersionConflict:
                pass  # gone already, or changed since: not ours to delete any more
            except StoreError:
                continue  # still unanswered: next tick
            del self.undeleted[sid]
