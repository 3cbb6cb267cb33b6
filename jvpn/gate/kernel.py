"""The gate in the kernel: session records projected into the pinned XDP maps.

The daemon writes three maps only: its session elements, the remote
sessions (others' sessions of the cluster, jvpn_remote) and its fence. The
runtime slots (replay windows) are the XDP program's: a session new on this
gateway gets a new generation and a replay floor in its element, and the
program initializes the slot from them (jvpn_abi.h, jvpn_sessions)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from jvpn.errors import NotAttached
from jvpn.gate import abi
from jvpn.gate.batch import ElementBatch
from jvpn.gate.element import (
    GateFull,
    RuntimeSlots,
    element_of,
    enforced_top,
    floors_kept,
    raised_ctl_floor,
    raised_floor,
    remote_ctl_floor,
    remote_entry,
)
from jvpn.gate.paths import DEFAULT_PATHS, GatePaths
from jvpn.keys import KeyRing, SessionKeys
from jvpn.session import SessionRecord


class XdpGate:
    """Projection of session records into a pinned XDP sessions map."""

    def __init__(self, ifname: str, paths: GatePaths = DEFAULT_PATHS):
        from jvpn.gate.inuse import GateUse
        from jvpn.gate.loader import pinned_prog_id
        from jvpn.gate.pins import GateMaps
        from jvpn.gate.records import Attachment

        att = Attachment.load(ifname, paths)
        att.require_here()  # another namespace's gate: its maps are not ours to write
        self.ifname, self.paths, self._published, self._fence = ifname, paths, None, None
        self.pins = paths.pin_dir(ifname)
        self.prog_id = pinned_prog_id(self.pins)
        # held until close(): `jvpn-xdp detach` refuses while we use the gate (inuse.py)
        self._use = GateUse.hold(ifname, paths)
        try:
            self.maps = GateMaps(self.pins, att.replay_bits)
        except BaseException:
            self._use.release()
            raise
        self.slots = RuntimeSlots(self.maps.runtime_capacity(), dict(self.maps.list_sessions()))
        # what the maps hold (attach --max-sessions); `gateway up` may lower it (MaxSessions)
        self.capacity = self.max_sessions = self.maps.sessions.max_entries()
        self.checks_in_kernel = True
        self._element_lock = threading.Lock()
        self._batch: ElementBatch | None = None
        problem = self.detached()
        if problem is not None:
            self.close()
            raise NotAttached(f"{problem}: attach it again (jvpn-xdp detach, then attach)")

    def detached(self) -> str | None:
        """None while the program whose maps this gate writes is the one
        attached to the interface; else what happened (a detach, another
        program attached, the interface gone). One netlink query: cheap
        enough for the daemon's timer (jvpn/gateway/daemon.py)."""
        from jvpn.gate.attach import xdp_prog_id  # noqa: PLC0415

        if self.prog_id is None:
            return f"no jvpn program is pinned at {self.pins}"
        try:
            now = xdp_prog_id(self.ifname)
        except Exception as e:  # noqa: BLE001 - pyroute2 raises NetlinkError, OSError, ...
            return f"cannot read the XDP program of {self.ifname}: {e}"
        if now is None:
            return f"no XDP program is attached to {self.ifname} any more"
        if now != self.prog_id:
            return (f"the XDP program on {self.ifname} is id {now}, not the jvpn gate whose maps "
                    f"this gateway writes (id {self.prog_id})")
        return None

    def event_reader(self):
        from jvpn.gate.ringbuf import EventReader  # noqa: PLC0415

        return EventReader(self.pins)

    def put(self, rec: SessionRecord, keys: SessionKeys | KeyRing, fence: int = 0,
            first: bool = False, c2s_floor: int = 0, was_remote: bool = False) -> None:
        """``first``: the element is new on this gateway; its replay window
        starts above ``c2s_floor`` (what a previous owner accepted).
        ``keys``: the live key epochs (a KeyRing during a rekey's overlap):
        the element accepts exactly their phases; a rekey's steps are each
        one replace that keeps the runtime slot (window, buckets).
        ``was_remote``: the session has a remote entry here (a handoff made
        it ours): a new element starts at its control floor (one more map
        lookup, only then)."""
        self._write(rec, keys, fence, False, first, c2s_floor, was_remote)

    def standby(self, rec: SessionRecord, keys: SessionKeys | KeyRing,
                was_remote: bool = False) -> None:
        self._write(rec, keys, 0, True, False, 0, was_remote)

    def _write(self, rec, keys, fence: int, remote: bool, first: bool, floor: int,
               was_remote: bool) -> None:
        sid = rec.session_id
        with self._element_lock:
            batch = self._batch
            old = batch.old(sid) if batch is not None else self.maps.get_session(sid)
            rt_slot, rt_gen, replay_floor = self.slots.placed(sid, old, first, floor)
            entry = self.maps.get_remote(sid) if old is None and was_remote else None
            ctl_floor, probe_floor = floors_kept(old, entry)
            element = element_of(rec, keys, fence, remote, rt_slot, rt_gen, replay_floor,
                                 ctl_floor, probe_floor)
            if batch is not None:
                batch.put(sid, element)
                return
            try:
                self.maps.put_session(sid, element)
            except GateFull:
                if old is None:
                    self.slots.free(sid)  # the slot it took goes back: no element names it
                raise

    @contextmanager
    def batched(self) -> Iterator[ElementBatch]:
        """Element writes inside are written in batches (jvpn/gate/batch.py),
        the last ones when the block ends. All or nothing for the caller: a
        batch the maps refuse raises BatchNotWritten; a block that raises
        writes nothing more (what is pending is dropped). Either way the
        runtime slots of new elements that did not land go back."""
        with self._element_lock:
            self._batch = batch = ElementBatch(self.maps)
        try:
            yield batch
        except BaseException:
            self._end_batch(batch, write=False)
            raise
        self._end_batch(batch, write=True)

    def _end_batch(self, batch: ElementBatch, write: bool) -> None:
        with self._element_lock:
            self._batch = None
            try:
                if write:
                    batch.flush()
                else:
                    batch.drop()
            finally:
                for sid in batch.unwritten:
                    if batch.old(sid) is None:  # no element names its slot
                        self.slots.free(sid)

    def put_remote(self, sid: int, keys: SessionKeys | KeyRing) -> None:
        """A session another gateway owns: its client's reattach traffic
        reaches us (a handoff), never its data (docs/cluster.md)."""
        with self._element_lock:
            batch = self._batch
            element = batch.old(sid) if batch is not None else self.maps.get_session(sid)
            floor = remote_ctl_floor(self.maps.get_remote(sid), element)
            self.maps.put_remote(sid, remote_entry(keys, floor))

    def remove_remote(self, sid: int) -> None:
        with self._element_lock:
            self.maps.remove_remote(sid)

    def remote_ids(self) -> set[int]:
        return self.maps.remote_ids()

    def raise_ctl_floor(self, sid: int, counter: int) -> None:
        """A keepalive or control counter the daemon verified: the gate drops
        every keepalive / control message at or below it (issue 10 item 5)."""
        self._raise(sid, counter, "ctl_floor")

    def raise_probe_floor(self, sid: int, counter: int) -> None:
        """A PATH_PROBE counter the daemon verified: the gate drops every
        probe at or below it, before the probe bucket (issue 14)."""
        self._raise(sid, counter, "probe_floor")

    def _raise(self, sid: int, counter: int, floor: str) -> None:
        """The element lock makes this read-modify-write and ``_write`` one
        after the other (the data thread raises, the control thread puts)."""
        with self._element_lock:
            if self._batch is not None:
                self._batch.raise_floor(sid, counter, floor)
            old = self.maps.get_session(sid)
            if old is not None:
                new = raised_floor(old, counter, floor)
                if new is not None:
                    self.maps.put_session(sid, new)
                return
            if floor != "ctl_floor":
                return  # a remote entry has a control floor only: it passes no probe
            new = raised_ctl_floor(self.maps.get_remote(sid), counter)  # a handoff's request
            if new is not None:
                self.maps.put_remote(sid, new)

    def set_fence(self, token: int, deadline_ns: int) -> None:
        """The kernel's own fence (jvpn_abi.h, jvpn_fence): only elements
        under ``token`` pass data, and only until ``deadline_ns``."""
        if self._fence == (token, deadline_ns):
            return  # the timer calls this every 100 ms; the deadline moves per refresh
        current = self._fence[0] if self._fence else self.maps.read_fence().token
        if deadline_ns and current != token:
            # A new token: a reader may see one field of each write, so first
            # a deadline that has passed (nothing passes), then the real one.
            self.maps.write_fence(abi.Fence(token=token, deadline_ns=1))
        self.maps.write_fence(abi.Fence(token=token, deadline_ns=deadline_ns))
        self._fence = (token, deadline_ns)

    def publish_owners(self, node: str, lease: int, remote: dict[int, str]) -> None:
        """Who this gateway is (and its fencing token) and who owns the
        standby elements, for `jvpn-xdp sessions` (written only on change)."""
        from jvpn.gate.records import Owners  # noqa: PLC0415

        doc = Owners(node=node, lease=lease,
                     remote={f"{sid:016x}": o for sid, o in sorted(remote.items())})
        if doc != self._published:
            doc.save(self.ifname, self.paths)
            self._published = doc

    def remove(self, sid: int) -> None:
        with self._element_lock:  # a floor raised after it must not bring it back
            if self._batch is not None:
                self._batch.forget(sid)
            self.maps.remove_session(sid)
            self.slots.free(sid)

    def counter_top(self, sid: int) -> int:
        batch = self._batch
        if batch is None:
            return self.maps.counter_top(sid)
        element = batch.old(sid)  # one runtime lookup, not two
        if element is None:
            return 0  # no element: no window kept (enforced_top's answer, without the call)
        return enforced_top(sid, element, self.maps.runtime_slot(element.rt_slot))

    def ids(self) -> set[int]:
        return self.maps.session_ids()

    def runtime(self, sid: int) -> tuple[int, int] | None:
        """(rx packets, rx bytes) the XDP program counted for the session's
        element, or None before its first packet (jvpn/gateway/snapshot.py)."""
        rt = self.maps.get_runtime(sid)
        return None if rt is None else (rt.rx_packets, rt.rx_bytes)

    def read_counters(self) -> dict[str, dict[str, int]]:
        """The verdict counters, as `jvpn-xdp stats --json` shows them."""
        return self.maps.read_counters()

    def admit(self, msg: bytes, src: tuple[str, int]) -> bool:
        return True  # the kernel already did

    def close(self) -> None:
        self.maps.close()
        self._use.release()
