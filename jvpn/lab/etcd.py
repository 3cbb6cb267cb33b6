"""A throwaway etcd server on loopback (Debian's etcd-server) for tests,
benchmarks and the lab: temp data dir, free ports, stopped and removed after.
It can also listen on more addresses (the cluster lab's management links), on
the same client port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from jvpn.lab.wait import WaitTimeout, wait_until


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
            return b"true" in r.read()
    except OSError:
        return False


class EtcdServer:
    def __init__(self, host: str = "127.0.0.1", *, hosts: tuple[str, ...] = ()):
        """``hosts``: every address to serve clients on (the first one is
        advertised and health-checked); default just ``host``. The addresses
        must exist when ``start`` runs."""
        if not shutil.which("etcd"):
            raise RuntimeError("etcd is not installed (Debian etcd-server): sudo make setup")
        self.hosts = tuple(hosts) or (host,)
        self.host = self.hosts[0]
        # one client port for every address: free on all of them ("" = any address)
        self.port = _free_port("" if len(self.hosts) > 1 else self.host)
        self.peer_port = _free_port(self.host)
        self.dir = Path(tempfile.mkdtemp(prefix="jvpn-etcd-"))
        self.proc: subprocess.Popen | None = None

    def start(self) -> EtcdServer:
        url = f"http://{self.host}:{self.port}"
        listen = ",".join(f"http://{h}:{self.port}" for h in self.hosts)
        peer = f"http://{self.host}:{self.peer_port}"
        self.proc = subprocess.Popen(
            ["etcd", "--name", "jvpn-test", "--data-dir", str(self.dir / "data"),
             "--listen-client-urls", listen, "--advertise-client-urls", url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"jvpn-test={peer}", "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "etcd.log", "wb"))  # noqa: SIM115
        try:
            wait_until(lambda: _healthy(url), "etcd", 20, proc=self.proc, interval=0.1)
        except WaitTimeout:
            self.stop()
            raise RuntimeError(
                f"etcd did not start: {(self.dir / 'etcd.log').read_text()[-500:]}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
