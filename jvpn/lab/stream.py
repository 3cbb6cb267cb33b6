"""A TCP stream between two namespaces of a lab, hashed at both ends: the
proof that a tunnel carried every byte intact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from jvpn.lab.netns import Lab

SINK = r"""
import hashlib, json, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("listening", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    h.update(b); n += len(b)
open(sys.argv[3], "w").write(json.dumps({"bytes": n, "sha256": h.hexdigest()}))
"""

SOURCE = r"""
import hashlib, json, random, socket, sys, time
total, seconds = int(sys.argv[3]), float(sys.argv[4])
rng = random.Random(7); h = hashlib.sha256()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
chunk = 16384; sent = 0; pause = seconds / (total / chunk)
while sent < total:
    b = rng.randbytes(min(chunk, total - sent)); s.sendall(b); h.update(b); sent += len(b)
    time.sleep(pause)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
open(sys.argv[5], "w").write(json.dumps({"bytes": sent, "sha256": h.hexdigest()}))
"""


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
        err = src.communicate(timeout=timeout)[1]
        listener.wait(timeout=30)
        assert src.returncode == 0, f"stream failed: {err}\n{logs()}"
        return json.loads(src_out.read_text()), json.loads(sink_out.read_text())

    return finish


# ---------------------------------------------------------------- the attacker
