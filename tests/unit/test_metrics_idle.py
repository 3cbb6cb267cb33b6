"""Idle connections to /metrics (review R4): a connection that has not sent
its whole request within REQUEST_DEADLINE_S is cut, and while every slot is
taken a new connection evicts the oldest one still without its request; a
slot serving a scrape is never evicted. The real server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

from jvpn.gateway.metrics import MAX_SCRAPES, REQUEST_DEADLINE_S, SCRAPE_DEADLINE_S, MetricsServer

MARGIN_S = 4.0  # a loaded test machine


def _scrape_took(url: str) -> float | None:
    """Seconds one scrape took, None if it failed."""
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=MARGIN_S) as r:
            r.read()
            return time.monotonic() - start if r.status == 200 else None
    except OSError:
        return None


def _closed_within(conn: socket.socket, seconds: float) -> bool:
    conn.settimeout(seconds)
    try:
        return conn.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_idle_connections_holding_every_slot_do_not_keep_a_scrape_out():
    server = MetricsServer(("127.0.0.1", 0))  # the daemon's deadlines
    idle = [socket.create_connection(server.address) for _ in range(MAX_SCRAPES)]
    try:
        time.sleep(0.3)  # both accepted, each holding a slot
        took = _scrape_took(server.url)
        assert took is not None and took < SCRAPE_DEADLINE_S / 2, "the idle ones kept the slots"
    finally:
        for c in idle:
            c.close()
        server.close()


def test_a_connection_without_its_request_is_cut_at_the_request_deadline():
    server = MetricsServer(("127.0.0.1", 0))
    conn = socket.create_connection(server.address)
    try:
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x")  # never the end of its headers
        start = time.monotonic()
        assert _closed_within(conn, REQUEST_DEADLINE_S + MARGIN_S)
        assert time.monotonic() - start < SCRAPE_DEADLINE_S / 2  # not the scrape deadline
    finally:
        conn.close()
        server.close()


class Held:
    """A collector that keeps each scrape in progress until released."""

    def __init__(self):
        self.release, self.inside = threading.Event(), threading.Semaphore(0)

    def collect(self):
        self.inside.release()
        self.release.wait(MARGIN_S * 2)
        return iter(())


def hold_every_slot(server: MetricsServer) -> tuple[Held, list[socket.socket]]:
    """MAX_SCRAPES scrapes in progress: their requests read, their answers held."""
    held = Held()
    server.registry.register(held)
    busy = []
    for _ in range(MAX_SCRAPES):
        c = socket.create_connection(server.address)
        c.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        busy.append(c)
    for _ in busy:
        assert held.inside.acquire(timeout=MARGIN_S)
    return held, busy


def test_scrapes_in_progress_are_not_evicted_a_third_is_closed_at_once():
    server = MetricsServer(("127.0.0.1", 0))
    held, busy = hold_every_slot(server)
    try:
        assert _scrape_took(server.url) is None  # closed at once, not queued
        time.sleep(REQUEST_DEADLINE_S + 0.5)  # past the request deadline: they are scrapes
        held.release.set()
        for c in busy:
            c.settimeout(MARGIN_S)
            assert c.recv(64).startswith(b"HTTP/1.0 200")
    finally:
        held.release.set()
        for c in busy:
            c.close()
        server.close()
