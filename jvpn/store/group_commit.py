"""How a handshake's durable writes reach the store (issue 15).

``ImmediateWrites``: each handshake's writes at once, on the caller's
thread, and its continuation right after (any store; etcd: one request per
write, as before).

``GroupCommit``: SQLite's group commit. Handshakes (and the confirmations
of their sessions) queue their writes; one writer thread takes what is
queued (up to ``max_batch``, waiting at most ``max_wait_s`` after the first
for more), runs them in one transaction and commits them with one fsync
(without savepoints first; if an op fails, the batch again with a
savepoint per op: jvpn/store/sqlite.py ``write_many``); only then does
each continuation run (a response, or a first message's delivery, goes
out there, never before). An op that fails is undone alone and only its
continuation sees the error; a commit that fails fails every op of the
batch. The continuations run through ``deliver`` (the gateway: under its
control lock), in queue order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from jvpn.session import SessionRecord
from jvpn.store import HandshakeWrites, Store, StoreError, write_confirm, write_handshake

GROUP_WAIT_S = 0.002  # the longest a queued write waits for others to share its fsync
GROUP_MAX = 128  # writes per transaction at most

Done = Callable[[object], None]  # the op's result, or the StoreError that failed it


def _run_now(fn: Callable[[], None]) -> None:
    fn()


class ImmediateWrites:
    """One handshake, one write, continuation on the caller's thread."""

    commits = 0  # not counted: one per write

    def __init__(self, store: Store):
        self.store = store

    def handshake(self, w: HandshakeWrites, done: Done) -> None:
        try:
            result = write_handshake(self.store, w)
        except StoreError as e:
            result = e
        done(result)

    def confirm(self, base: SessionRecord, new: SessionRecord, ceiling: int,
                done: Done) -> None:
        try:
            write_confirm(self.store, base, new, ceiling)
            result: object = True
        except StoreError as e:
            result = e
        done(result)

    def close(self) -> None:
        pass


class GroupCommit:
    """The batching writer of a SQLite store (``write_many``)."""

    def __init__(self, store, *, deliver: Callable[[Callable[[], None]], None] = _run_now,
                 report: Callable[[str, Exception], None] | None = None,
                 max_wait_s: float = GROUP_WAIT_S, max_batch: int = GROUP_MAX):
        """``deliver(fn)`` runs a batch's continuations (the gateway: under
        its control lock); ``report(where, error)``: a continuation that
        raised (contained: the writer goes on)."""
        from jvpn.store import sqlite  # noqa: PLC0415 - its ops: only with a SQLite store

        self.store, self._ops = store, sqlite
        self.deliver, self.report = deliver, report
        self.max_wait_s, self.max_batch = max_wait_s, max_batch
        self.commits = 0  # transactions committed (tests count them)
        self._queue: list[tuple[Callable, Done]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="store-group-commit",
                                        daemon=True)
        self._thread.start()

    def handshake(self, w: HandshakeWrites, done: Done) -> None:
        self.submit(self._ops.handshake_op(w), done)

    def confirm(self, base: SessionRecord, new: SessionRecord, ceiling: int,
                done: Done) -> None:
        self.submit(self._ops.confirm_op(base, new, ceiling), done)

    def submit(self, op: Callable, done: Done) -> None:
        """Queue ``op`` (a callable on the transaction's connection); ``done``
        gets its result once committed. A stopped writer refuses at once."""
        with self._cond:
            if self._closed:
                raise StoreError("the session store's writer is stopped")
            self._queue.append((op, done))
            # the writer waits for a first op, then for a full batch or its
            # deadline: waking it for every op between (to find the batch
            # not full yet) cost two thread switches per op (issue 15)
            if len(self._queue) == 1 or len(self._queue) >= self.max_batch:
                self._cond.notify()

    def close(self) -> None:
        """What is queued is still committed and answered, then the thread ends."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._commit(batch)

    def _next_batch(self) -> list[tuple[Callable, Done]] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            deadline = time.monotonic() + self.max_wait_s
            while len(self._queue) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = self._queue[:self.max_batch]
            del self._queue[:self.max_batch]
            return batch

    def _commit(self, batch: list[tuple[Callable, Done]]) -> None:
        try:
            results = self.store.write_many([op for op, _done in batch])
            self.commits += 1
        except Exception as e:  # noqa: BLE001 - the commit failed: every op of it did
            failed = e if isinstance(e, StoreError) else StoreError(
                f"session store commit failed: {e}")
            results = [failed] * len(batch)
        try:
            self.deliver(lambda: self._answer(batch, results))
        except Exception as e:  # noqa: BLE001 - contained: the writer goes on
            if self.report is not None:
                self.report("store-group-commit", e)

    def _answer(self, batch: list[tuple[Callable, Done]], results: list) -> None:
        for (_op, done), result in zip(batch, results, strict=True):
            try:
                done(result)
            except Exception as e:  # noqa: BLE001 - one continuation ends no other
                if self.report is not None:
                    self.report("store-group-commit", e)
