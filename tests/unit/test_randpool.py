"""jvpn/randpool.py: the kernel's random bytes a page at a time, each
handed out once (issue 15: three urandom calls a restored session)."""

from __future__ import annotations

import os
import signal
import threading

from jvpn.randpool import RandomPool


def test_bytes_are_handed_out_once_in_order_across_pages():
    pages = [bytes(range(i, i + 8)) for i in (0, 100, 200)]
    pool = RandomPool(page=8, source=lambda n: pages.pop(0)[:n])
    assert pool.token_bytes(3) == bytes([0, 1, 2])
    assert pool.token_bytes(5) == bytes([3, 4, 5, 6, 7])
    assert pool.token_bytes(6) == bytes(range(100, 106))  # a new page, not a tail and a head
    assert pool.token_bytes(4) == bytes(range(200, 204))


def test_randbits_spans_exactly_k_bits():
    pool = RandomPool()
    assert all(0 <= pool.randbits(12) < 1 << 12 for _ in range(2000))
    assert max(pool.randbits(64) for _ in range(200)) >= 1 << 60
    assert len({pool.token_bytes(16) for _ in range(1000)}) == 1000


def test_a_forked_child_draws_other_bytes_than_its_parent():
    pool = RandomPool()
    pool.token_bytes(1)  # a page held
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(w, pool.token_bytes(16))
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 16) != pool.token_bytes(16)
    os.close(r)
    os.close(w)


def test_a_child_forked_while_a_draw_was_in_flight_can_draw():
    """Review k18r1 F2: a fork while another thread is inside a draw (its
    page read blocked) leaves the child no lock held for ever."""
    reading, release = threading.Event(), threading.Event()

    def slow_source(n: int) -> bytes:
        reading.set()
        release.wait(10)
        return os.urandom(n)

    pool = RandomPool(source=slow_source)
    drawer = threading.Thread(target=pool.token_bytes, args=(16,), daemon=True)
    drawer.start()
    assert reading.wait(5)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one draw (its own page), or SIGALRM after 2 s
        try:
            signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
            signal.alarm(2)
            release.set()  # the child's source must not wait on the parent
            pool.token_bytes(16)
            os.write(w, b"ok")
        finally:
            os._exit(0)
    release.set()
    drawer.join(5)
    os.close(w)
    os.waitpid(pid, 0)
    got = os.read(r, 2)
    os.close(r)
    assert got == b"ok", "the forked child's first draw hung on the parent's lock"
