"""Element writes gathered into BPF_MAP_UPDATE_BATCH calls (a restart's
reconcile: a million elements in a few dozen syscalls, not two million).

While a batch is open, XdpGate's element writes go to ``pending`` and are
written ``flush_every`` at a time; what an element replaces (its runtime
slot, generation, control and probe floors) is read from one batch read of
the map taken when the batch opened, kept current by the batch's own writes
and by the floors raised meanwhile (XdpGate.raise_ctl_floor and
raise_probe_floor), so a write inside a batch computes exactly the element
a single write would."""

from __future__ import annotations

from jvpn.errors import JvpnError
from jvpn.gate import abi

FLUSH_EVERY = 4096  # elements per BPF_MAP_UPDATE_BATCH: ~0.4 MiB of values per call


class BatchNotWritten(JvpnError):
    """A batch the maps refused, whole or in part (the map full, a kernel
    error): the restart that wrote it fails, not the one session whose write
    happened to fill the batch (jvpn/gateway/reconcile.py)."""


class ElementBatch:
    def __init__(self, maps, flush_every: int = FLUSH_EVERY):
        self.maps = maps
        self.flush_every = flush_every
        self.written: dict[int, abi.Session] = dict(maps.list_sessions())  # the map, as of now
        self.pending: dict[int, abi.Session] = {}
        self.unwritten: list[int] = []  # ids a failed flush or a drop did not write
        self.flushed = 0

    def old(self, sid: int) -> abi.Session | None:
        """The element a write of ``sid`` replaces (pending or in the map)."""
        got = self.pending.get(sid)
        return got if got is not None else self.written.get(sid)

    def put(self, sid: int, element: abi.Session) -> None:
        self.pending[sid] = element
        if len(self.pending) >= self.flush_every:
            self.flush()

    def raise_floor(self, sid: int, counter: int, floor: str = "ctl_floor") -> None:
        """``floor``: the element's ctl_floor or probe_floor (jvpn/gate/element.py)."""
        for kept in (self.pending.get(sid), self.written.get(sid)):
            if kept is not None and counter > getattr(kept, floor):
                setattr(kept, floor, counter)

    def forget(self, sid: int) -> None:
        self.pending.pop(sid, None)
        self.written.pop(sid, None)

    def flush(self) -> None:
        """Write what is pending. On a failure (GateFull past the map's
        capacity, any other error) the map is read back: ``written`` gains
        exactly the elements that landed, ``unwritten`` names the others, and
        BatchNotWritten is raised."""
        if not self.pending:
            return
        items = list(self.pending.items())
        try:
            self.maps.put_sessions(items)
        except Exception as e:
            self.pending.clear()
            landed = [(sid, el) for sid, el in items if self._landed(sid, el)]
            self._wrote(landed)
            self.unwritten += [sid for sid, _ in items if sid not in dict(landed)]
            raise BatchNotWritten(f"{len(items) - len(landed)} of {len(items)} session "
                                  f"elements not written: {e}") from e
        self.pending.clear()
        self._wrote(items)

    def drop(self) -> None:
        """Forget what is pending, unwritten (the writer failed: nothing more
        of it goes to the map)."""
        self.unwritten += list(self.pending)
        self.pending.clear()

    def _wrote(self, items: list[tuple[int, abi.Session]]) -> None:
        self.written.update(items)
        self.flushed += len(items)


    def _landed(self, sid: int, element: abi.Session) -> bool:
        """The map holds ``element`` for ``sid``; an element that cannot be
        read back counts as landed (its runtime slot stays taken: a slot
        freed while an element names it would be the worse mistake)."""
        try:
            got = self.maps.get_session(sid)
        except Exception:  # noqa: BLE001 - the maps failing already: assume the worst
            return True
        return got is not None and bytes(got) == bytes(element)
