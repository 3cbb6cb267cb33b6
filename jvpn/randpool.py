"""Random bytes from the kernel's CSPRNG, read a page at a time (issue 15:
a restart's reconcile asked ``os.urandom`` three times a session, a
system call and two Python layers each, for a runtime generation, an
unused key slot and a traffic incarnation: about 6 µs a session, 6 s at
1M). The bytes are the same ``os.urandom`` gives, each handed out once;
for values that must be unpredictable, not for key material (keys are
made where they are: jvpn/keys.py, noise)."""

from __future__ import annotations

import os
import threading
from array import array

PAGE = 4096  # bytes read from the kernel at a time
KEY = 16  # bytes of the values token_bytes(16) hands out from a page of their own


class RandomPool:
    def __init__(self, page: int = PAGE, source=os.urandom):
        self._page, self._source = page, source
        self._buf, self._at = b"", 0
        self._lock = threading.Lock()  # two threads never get the same bytes
        # the two draws a restored session makes (a runtime generation, an
        # unused key slot: issue 15), each from a page of its own through a C
        # iterator whose ``next`` moves on BEFORE it makes anything a garbage
        # collection could start from (an array's 64-bit words; a range of a
        # bytes page's offsets): each value handed out once under the GIL with
        # no lock, even to code a collection runs inside a draw (finalizers,
        # gc.callbacks). struct.iter_unpack made its tuple first and handed a
        # value out twice, or read a freed page (review k20r2). A thread that
        # finds a page spent starts another; a page left behind by two such
        # threads is never read again.
        self._words, self._keys = iter(()), (b"", iter(()))
        # a forked child never hands out the bytes its parent will
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        # a fresh lock too: a fork while another thread drew leaves the
        # parent's lock held for ever in the child (review k18r1 F2)
        self._buf, self._at, self._lock = b"", 0, threading.Lock()
        self._words, self._keys = iter(()), (b"", iter(()))

    def token_bytes(self, n: int) -> bytes:
        while n == KEY:  # until a page has one left (another thread may spend a new one)
            page, offsets = self._keys  # one object: a page and its own offsets
            for at in offsets:  # the next one, if the page has one left
                return page[at:at + KEY]
            page = self._source(max(self._page // KEY, 1) * KEY)
            self._keys = (page, iter(range(0, len(page), KEY)))
        with self._lock:
            at = self._at
            if at + n > len(self._buf):
                self._buf, at = self._source(max(self._page, n)), 0
            self._at = at + n
            return self._buf[at:at + n]

    def randbits(self, k: int) -> int:
        """As ``secrets.randbits``: an int of ``k`` random bits."""
        while k == 64:  # as token_bytes(16)
            for word in self._words:
                return word
            self._words = iter(array("Q", self._source(max(self._page // 8, 1) * 8)))
        return int.from_bytes(self.token_bytes((k + 7) // 8), "little") >> (-k % 8)


POOL = RandomPool()
token_bytes, randbits = POOL.token_bytes, POOL.randbits
