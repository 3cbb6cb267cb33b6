"""The operator socket (jvpn/gateway/operator.py) and its CLI side
(jvpn/operator.py), with handlers of the test's own."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time

import pytest

from jvpn import operator as client
from jvpn.files import UnsafeFile
from jvpn.gateway import operator
from jvpn.gateway.operator import OperatorServer, Refused, SocketInUse


@pytest.fixture
def serve(tmp_path):
    """serve(handlers, **kw) -> the running server (stopped after the test)."""
    running = []

    def start(handlers, **kw):
        server = OperatorServer(tmp_path / "run" / "gateway.sock", handlers, **kw)
        server.open()
        stop = threading.Event()
        thread = threading.Thread(target=server.serve, args=(stop,), daemon=True)
        thread.start()
        running.append((server, stop, thread))
        return server

    yield start
    for server, stop, thread in running:
        stop.set()
        server.close()
        thread.join(2)


def test_a_request_gets_its_handlers_result(serve):
    server = serve({"echo": lambda req: {"got": req["value"]}})
    assert client.call(server.path, "echo", value=[1, "x"]) == {"got": [1, "x"]}


def test_the_socket_is_0600_in_a_private_directory(serve, monkeypatch):
    # created 0600 by bind itself (the umask), not only by the chmod after it
    monkeypatch.setattr(os, "chmod", lambda *_a, **_k: None)
    server = serve({})
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(server.path.parent).st_mode) & 0o077 == 0


def test_a_peer_whose_uid_is_not_allowed_is_refused_before_its_request_is_read(serve):
    called = []
    server = serve({"ping": lambda req: called.append(req)}, allowed_uids=())
    with pytest.raises(client.OperatorError, match=rf"uid {os.geteuid()} may not"):
        client.call(server.path, "ping")
    assert called == []


def test_an_unknown_operation_is_refused_naming_the_known_ones(serve):
    server = serve({"ping": lambda req: 1, "health": lambda req: 2})
    known = r"unknown operation .nope. \(known: health, ping\)"
    with pytest.raises(client.OperatorError, match=known):
        client.call(server.path, "nope")


def test_a_refusal_is_the_handlers_one_line(serve):
    def refuse(_req):
        raise Refused("no session 00ff: nothing\nchanged")

    server = serve({"terminate": refuse})
    with pytest.raises(client.OperatorError, match=r"^no session 00ff: nothing changed$"):
        client.call(server.path, "terminate")


def test_a_handler_bug_is_reported_to_the_daemon_and_the_server_goes_on(serve):
    reported = []
    server = serve({"bad": lambda req: 1 / 0, "ping": lambda req: "pong"},
                   report=lambda where, exc: reported.append((where, type(exc).__name__)))
    with pytest.raises(client.OperatorError, match="bad failed inside the daemon"):
        client.call(server.path, "bad")
    assert reported == [("operator:bad", "ZeroDivisionError")]
    assert client.call(server.path, "ping") == "pong"


@pytest.mark.parametrize("payload, why", [
    (b"not json\n", "not one JSON object"),
    (b"[1, 2]\n", "not a JSON object"),
    (b"\xff\xfe\n", "not one JSON object"),
    (b"{" + b" " * (operator.MAX_REQUEST_BYTES + 10), "larger than"),
])
def test_garbage_is_refused_and_changes_nothing(serve, payload, why):
    called = []
    server = serve({"ping": lambda req: called.append(req)})
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(server.path))
        s.sendall(payload)
        reply = s.makefile("rb").readline()
    assert why.encode() in reply and b'"ok": false' in reply
    assert called == []


def test_a_silent_client_holds_the_server_only_for_the_io_timeout(serve, monkeypatch):
    monkeypatch.setattr(operator, "IO_TIMEOUT_S", 0.3)
    server = serve({"ping": lambda req: "pong"})
    with socket.socket(socket.AF_UNIX) as silent:
        silent.connect(str(server.path))
        t0 = time.monotonic()
        assert client.call(server.path, "ping", timeout_s=5) == "pong"
        assert time.monotonic() - t0 < 3


def test_no_daemon_is_one_line(tmp_path):
    with pytest.raises(client.NoDaemon, match="no gateway daemon answers on"):
        client.call(tmp_path / "gateway.sock", "ping")


def test_a_crashed_daemons_socket_is_replaced(tmp_path, serve):
    path = tmp_path / "run" / "gateway.sock"
    path.parent.mkdir(mode=0o700)
    left = socket.socket(socket.AF_UNIX)
    left.bind(str(path))  # bound, never listening: what a killed daemon leaves
    left.close()
    server = serve({"ping": lambda req: "pong"})
    assert server.path == path and client.call(path, "ping") == "pong"


def test_a_live_daemons_socket_is_not_taken(serve, tmp_path):
    first = serve({"ping": lambda req: "first"})
    second = OperatorServer(first.path, {})
    with pytest.raises(SocketInUse, match="ControlSocket"):
        second.open()
    assert client.call(first.path, "ping") == "first"


def test_a_file_in_the_sockets_place_is_refused(tmp_path):
    path = tmp_path / "run" / "gateway.sock"
    path.parent.mkdir(mode=0o700)
    path.write_text("mine")
    with pytest.raises(UnsafeFile, match="not a socket"):
        OperatorServer(path, {}).open()
    assert path.read_text() == "mine"


def test_a_directory_others_may_write_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o777)
    with pytest.raises(UnsafeFile, match="writable by group or others"):
        OperatorServer(run / "gateway.sock", {}).open()


def test_close_removes_only_its_own_socket_file(serve):
    server = serve({})
    os.unlink(server.path)
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(server.path))  # another daemon's, bound since
    try:
        server.close()
        assert server.path.exists()
    finally:
        other.close()


def test_json_nested_deeper_than_the_stack_is_refused_and_the_server_goes_on(serve):
    server = serve({"ping": lambda req: "pong"})
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(server.path))
        s.sendall(b"[" * 60000 + b"\n")
        reply = s.makefile("rb").readline()
    assert b"not one JSON object" in reply
    assert client.call(server.path, "ping") == "pong"


def test_a_client_dripping_bytes_is_cut_off_at_the_io_timeout_in_all(serve, monkeypatch):
    monkeypatch.setattr(operator, "IO_TIMEOUT_S", 0.5)
    server = serve({"ping": lambda req: "pong"})
    stop = threading.Event()
    with socket.socket(socket.AF_UNIX) as slow:
        slow.connect(str(server.path))

        def drip():
            while not stop.wait(0.1):
                try:
                    slow.send(b" ")
                except OSError:
                    return

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        try:
            t0 = time.monotonic()
            assert client.call(server.path, "ping", timeout_s=10) == "pong"
            assert time.monotonic() - t0 < 5  # not the 64 KiB the dripper could send
        finally:
            stop.set()
            dripper.join(2)


def test_a_live_daemon_that_does_not_accept_is_still_in_use(tmp_path):
    first = OperatorServer(tmp_path / "run" / "gateway.sock", {})
    first.open()  # listening, but nobody accepts (its serving thread stuck)
    waiting = []
    try:
        for _ in range(64):  # fill its backlog
            c = socket.socket(socket.AF_UNIX)
            c.setblocking(False)
            try:
                c.connect(str(first.path))
            except BlockingIOError:
                c.close()
                break
            waiting.append(c)
        with pytest.raises(SocketInUse, match="ControlSocket"):
            OperatorServer(first.path, {}).open()
        assert first.path.exists()
    finally:
        for c in waiting:
            c.close()
        first.close()


def test_a_large_reply_waits_for_a_reader_paused_past_the_io_timeout(serve, monkeypatch):
    """A page of 10,000 sessions is megabytes; its reader paused for 2 s (a
    loaded machine) got it cut off mid-reply (`bench scale` at 1M)."""
    monkeypatch.setattr(operator, "IO_TIMEOUT_S", 0.3)
    big = "x" * (8 << 20)
    server = serve({"page": lambda req: big})
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(server.path))
        s.sendall(b'{"op": "page"}\n')
        time.sleep(1.0)  # paused past the request's timeout, the reply half sent
        reply = s.makefile("rb").readline()
    assert reply.endswith(b"\n") and big.encode() in reply


def test_a_reply_cut_off_is_said_so(tmp_path):
    path = tmp_path / "gateway.sock"
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(str(path))
        srv.listen(1)

        def half_an_answer():
            conn, _ = srv.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b'{"ok": true, "result": "trunc')

        t = threading.Thread(target=half_an_answer)
        t.start()
        with pytest.raises(client.JvpnError, match="closed the connection mid-reply"):
            client.call(path, "ping", timeout_s=5)
        t.join()
