"""A TCP stream between two namespaces of a lab, hashed at both ends: the
proof that a tunnel carried every byte intact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from jvpn.lab.netns import Lab

SINK = r"""
import hashlib, json, signal, socket, sys
n = 0
def stopped(*_):  # killed by finish() after a failure: say how far the stream got
    print(f"received {n} bytes before being stopped", flush=True); sys.exit(1)
signal.signal(signal.SIGTERM, stopped)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("listening", flush=True)
c, _ = s.accept(); h = hashlib.sha256()
while True:
    b = c.recv(65536)
    if not b: break
    h.update(b); n += len(b)
open(sys.argv[3], "w").write(json.dumps({"bytes": n, "sha256": h.hexdigest()}))
"""

SOURCE = r"""
import hashlib, json, random, socket, struct, sys, time
def tcp_info(s):  # struct tcp_info's head: why a stream stalled (linux/tcp.h)
    try:
        f = struct.unpack("8B4I5I4I", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 60))
    except OSError:
        return "no tcp_info"
    return (f"state {f[0]} retransmits {f[2]} backoff {f[4]} rto {f[8] // 1000} ms "
            f"unacked {f[12]} lost {f[14]} retrans {f[15]} last data sent {f[17]} ms ago "
            f"last ack {f[20]} ms ago")
s = None
total, seconds = int(sys.argv[3]), float(sys.argv[4])
rng = random.Random(7); h = hashlib.sha256(); sent = 0; t0 = time.monotonic(); step = "connect"
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
    chunk = 16384; pause = seconds / (total / chunk); step = "send"
    while sent < total:
        b = rng.randbytes(min(chunk, total - sent)); s.sendall(b); h.update(b); sent += len(b)
        time.sleep(pause)
    step = "shutdown"; s.shutdown(socket.SHUT_WR); step = "wait for the sink's close"; s.recv(1)
    s.close()
except OSError as e:  # say where and when: a stall after a handoff shows as a timeout here
    sys.exit(f"source: {step}: {e!r} after {time.monotonic() - t0:.1f} s, {sent} bytes sent; "
             f"tcp: {tcp_info(s) if s else '-'}")
open(sys.argv[5], "w").write(json.dumps({"bytes": sent, "sha256": h.hexdigest()}))
"""


class StreamFailed(AssertionError):
    """The stream did not complete: its source failed or hung (killed after
    the timeout), or the sink never saw the end. The message says which,
    with both ends' TCP state and the lab's logs."""


def start_stream(lab: Lab, sink: tuple[str, str], nbytes: int, seconds: float, port: int,
                 tmp: Path, logs=lambda: "", source: str = "cl"):
    """A TCP stream from the ``source`` namespace (the client's by default)
    to ``sink`` = (role, address) (a sink there hashes what arrives); returns
    a function that waits for it and returns (sent, received), each
    {"bytes", "sha256"}."""
    sink_out, src_out = tmp / f"sink{port}.json", tmp / f"source{port}.json"
    role, addr = sink
    listener = subprocess.Popen(lab.cmd(role, sys.executable, "-u", "-c", SINK, addr, str(port),
                                        str(sink_out)), stdout=subprocess.PIPE, text=True)
    lab.procs.append(listener)
    assert listener.stdout.readline().strip() == "listening"
    src = subprocess.Popen(lab.cmd(source, sys.executable, "-c", SOURCE, addr, str(port),
                                   str(nbytes), str(seconds), str(src_out)),
                           stderr=subprocess.PIPE, text=True)
    lab.procs.append(src)

    def finish(timeout: float = 120):
        """The source's outcome first: when it failed (or hangs), the sink
        never sees EOF, so waiting for the sink would hide the real error."""
        try:
            err = src.communicate(timeout=timeout)[1]
        except subprocess.TimeoutExpired:
            src.kill()
            err = src.communicate()[1] + f"\nsource: still running after {timeout} s: killed"
        if src.returncode != 0:
            raise StreamFailed(f"stream failed: {err.strip()}\n{_stop_sink(listener)}\n"
                                 f"{_sockets(lab, role)}\n{logs()}")
        try:
            listener.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise StreamFailed(f"the sink saw no EOF 30 s after the source closed\n"
                                 f"{_stop_sink(listener)}\n{_sockets(lab, role)}\n"
                                 f"{logs()}") from None
        return json.loads(src_out.read_text()), json.loads(sink_out.read_text())

    return finish


def _stop_sink(listener: subprocess.Popen) -> str:
    """Stop a sink that is still waiting; what it says it received."""
    if listener.poll() is None:
        listener.terminate()
        try:
            listener.wait(timeout=5)
        except subprocess.TimeoutExpired:
            listener.kill()
            listener.wait()
    return f"sink: {(listener.stdout.read() or '').strip() or 'exited'} (rc {listener.returncode})"


def _sockets(lab: Lab, sink_role: str) -> str:
    """TCP state at both ends (retransmissions, backoff, unacknowledged bytes)."""
    out = []
    for role in ("cl", sink_role):
        got = lab.run(role, "ss", "-tin", check=False)
        out.append(f"--- ss -tin in {role}\n{got.stdout.strip()}{got.stderr.strip()}")
    return "\n".join(out)


# ---------------------------------------------------------------- the attacker
