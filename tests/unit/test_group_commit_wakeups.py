"""jvpn/store/group_commit.py: the writer is woken for a first op and for a
full batch only (issue 15: not once per op to find the batch not full
yet); what is queued meanwhile still commits together, at the batch's
deadline or as soon as the batch is full."""

from __future__ import annotations

import threading
import time

from jvpn.store.group_commit import GroupCommit


class _Store:
    """write_many as SQLite's: every op of one call in one transaction."""

    def __init__(self):
        self.transactions: list[int] = []
        self.committed = threading.Event()

    def write_many(self, ops):
        self.transactions.append(len(ops))
        self.committed.set()
        return [op(None) for op in ops]


def _submit(writes: GroupCommit, n: int, answers: list) -> None:
    for i in range(n):
        writes.submit(lambda _db, i=i: i, answers.append)


def test_ops_queued_in_the_window_commit_together_at_its_deadline():
    store, answers = _Store(), []
    writes = GroupCommit(store, max_wait_s=1.0, max_batch=100)
    try:
        _submit(writes, 5, answers)
        assert store.committed.wait(5)
        deadline = time.monotonic() + 5
        while len(answers) < 5 and time.monotonic() < deadline:  # answered after the commit
            time.sleep(0.01)
        assert store.transactions == [5] and answers == [0, 1, 2, 3, 4]
    finally:
        writes.close()


def test_a_full_batch_commits_at_once_not_at_the_deadline():
    store, answers = _Store(), []
    writes = GroupCommit(store, max_wait_s=30.0, max_batch=4)
    try:
        started = time.monotonic()
        _submit(writes, 4, answers)  # the 2nd and 3rd wake nobody; the 4th fills it
        assert store.committed.wait(5)
        assert time.monotonic() - started < 5
        assert store.transactions == [4]
    finally:
        writes.close()
