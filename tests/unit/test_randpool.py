"""jvpn/randpool.py: the kernel's random bytes a page at a time, each
handed out once (issue 15: three urandom calls a restored session)."""

from __future__ import annotations

import os
import signal
import sys
import threading

from jvpn.randpool import RandomPool


def test_bytes_are_handed_out_once_in_order_across_pages():
    pages = [bytes(range(i, i + 8)) for i in (0, 100, 200)]
    pool = RandomPool(page=8, source=lambda n: pages.pop(0)[:n])
    assert pool.token_bytes(3) == bytes([0, 1, 2])
    assert pool.token_bytes(5) == bytes([3, 4, 5, 6, 7])
    assert pool.token_bytes(6) == bytes(range(100, 106))  # a new page, not a tail and a head
    assert pool.token_bytes(4) == bytes(range(200, 204))


def test_the_restore_s_two_draws_are_each_handed_out_once_across_pages():
    """randbits(64) and token_bytes(16) (a runtime generation, an unused key
    slot: issue 15) from pages of their own, each value once, in order."""
    pages = [bytes(range(i, i + 32)) for i in (0, 40, 80, 120)]
    pool = RandomPool(page=32, source=lambda n: pages.pop(0)[:n])
    assert pool.token_bytes(16) == bytes(range(0, 16))
    assert pool.randbits(64) == int.from_bytes(bytes(range(40, 48)), sys.byteorder)
    assert pool.token_bytes(16) == bytes(range(16, 32))
    assert pool.token_bytes(16) == bytes(range(80, 96))  # the first page spent: the next
    words = [pool.randbits(64) for _ in range(4)]
    assert words[:3] == [int.from_bytes(bytes(range(i, i + 8)), sys.byteorder)
                         for i in (48, 56, 64)]
    assert words[3] == int.from_bytes(bytes(range(120, 128)), sys.byteorder)


def test_threads_drawing_at_once_never_get_the_same_value():
    pool = RandomPool(page=64)  # a new page every few draws: refills race too
    got: list[list] = [[] for _ in range(4)]

    def draw(out):
        for _ in range(20_000):
            out.append(pool.randbits(64))
            out.append(pool.token_bytes(16))

    threads = [threading.Thread(target=draw, args=(out,)) for out in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [v for out in got for v in out]
    assert len(set(everything)) == len(everything) == 160_000


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


def test_a_forked_child_draws_other_generations_than_its_parent():
    pool = RandomPool()
    pool.randbits(64)  # a page of words held
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(w, pool.randbits(64).to_bytes(8, "little"))
        os._exit(0)
    os.waitpid(pid, 0)
    assert int.from_bytes(os.read(r, 8), "little") != pool.randbits(64)
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
