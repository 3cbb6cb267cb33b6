"""`sudo make demo` until the full lab exists: the XDP gate on a veth pair
between two network namespaces this demo creates, real UDP sent through it,
and the live counters read back with the CLI from another process.

Everything happens inside the two namespaces of a :class:`jvpn.lab.netns.Lab`
(the demo's addresses exist only there); they are removed on exit, on Ctrl-C
and after a failure, and a run after a crash first removes what the crashed
run left (the namespaces have fixed names for that).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from jvpn import wire
from jvpn.errors import JvpnError
from jvpn.gate import abi
from jvpn.gate.paths import DEFAULT_PATHS, GatePaths
from jvpn.lab.addresses import (
    DEMO_CL_IP,
    DEMO_CL_PORT,
    DEMO_GW_IP,
    DEMO_OTHER_PORT,
    LAN_PREFIX,
    PORT,
)
from jvpn.lab.netns import Lab

LAB = Lab(("gw", "cl"), prefix="jvpn-demo")  # namespaces jvpn-demo-gw, jvpn-demo-cl
GW_NS, CL_NS = "gw", "cl"  # roles in LAB
GW_IF, CL_IF = "jvdemo-gw", "jvdemo-cl"
GW_IP, CL_IP = DEMO_GW_IP, DEMO_CL_IP
JVPN_XDP = str(Path(sys.executable).with_name("jvpn-xdp"))  # the venv's console script

console = Console()


def in_ns(role: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(max(console.width, 120))}
    return subprocess.run(LAB.cmd(role, *args), check=check, capture_output=True, text=True,
                          env=env)


def cli_args(paths: GatePaths) -> list[str]:
    """The CLI, told explicitly where this demo's pins and records live."""
    return [JVPN_XDP, "--pin-root", str(paths.pin_root), "--run-dir", str(paths.run_dir)]


def teardown(paths: GatePaths) -> None:
    in_ns(GW_NS, *cli_args(paths), "detach", GW_IF, check=False)
    LAB.down()


def setup_namespaces(paths: GatePaths) -> None:
    teardown(paths)  # whatever a crashed run left
    LAB.up()
    LAB.veth(GW_NS, GW_IF, f"{GW_IP}/{LAN_PREFIX}", CL_NS, CL_IF, f"{CL_IP}/{LAN_PREFIX}")


@contextmanager
def ns_socket(role: str, port: int = 0):
    """A UDP socket that lives in ``role``'s namespace (sockets keep the
    namespace they were created in)."""
    with LAB.socket(role, socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", port))
        yield s


def drain(sock: socket.socket, wait: float = 0.3) -> int:
    sock.settimeout(wait)
    n = 0
    while True:
        try:
            sock.recv(65535)
            n += 1
        except TimeoutError:
            return n


def run_demo(paths: GatePaths) -> int:
    from jvpn.gate.pins import GateMaps

    cli = cli_args(paths)
    console.print(Panel("jvpn XDP gate demo: two namespaces, one veth, real UDP", style="bold"))
    setup_namespaces(paths)
    out = in_ns(GW_NS, *cli, "attach", GW_IF, "--port", str(PORT), check=False)
    console.print(out.stdout.strip() or out.stderr.strip())
    if out.returncode:
        return 1

    sid, key = secrets.randbits(64) | 1, secrets.token_bytes(16)
    with GateMaps(paths.pin_dir(GW_IF)) as maps, ns_socket(GW_NS, PORT) as gw, \
            ns_socket(CL_NS, DEMO_CL_PORT) as cl, ns_socket(CL_NS, DEMO_OTHER_PORT) as other:
        maps.put_session(sid, abi.Session(
            tag_key=wire.key_words(key), key_phases=abi.key_phase_bit(0),
            state=abi.STATE_ATTACHED, version=1,
            bind_family=abi.AF_INET, bind_addr=abi.addr_words(CL_IP),
            bind_port=abi.port_word(DEMO_CL_PORT)))
        console.print(f"session [bold]{sid:016x}[/bold] bound to {CL_IP}:{DEMO_CL_PORT} "
                      "(written into the sessions map, as the daemon will)")
        dst = (GW_IP, PORT)

        def data(counter: int, k: bytes = key, s: int = sid) -> bytes:
            return wire.message(wire.Header(type=abi.MSG_DATA, session_id=s, counter=counter),
                                k, b"hello through the gate".ljust(64, b"."))

        steps = [
            ("20 valid data packets from the bound transport", cl, [data(c) for c in range(20)]),
            ("5 replays of packets already accepted", cl, [data(c) for c in range(5)]),
            ("5 packets with a forged header tag", cl,
             [data(100 + c, bytes(16)) for c in range(5)]),
            ("5 authentic packets from another port (wrong binding)", other,
             [data(200 + c) for c in range(5)]),
            ("300 packets for unknown session IDs (a flood)", cl,
             [data(c, s=secrets.randbits(64)) for c in range(300)]),
            ("5 truncated datagrams", cl, [b"\x04" * 20] * 5),
        ]
        for what, sock, msgs in steps:
            for m in msgs:
                sock.sendto(m, dst)
            got = drain(gw)
            console.print(f"  sent {what}: the gateway socket received [bold]{got}[/bold]")
            time.sleep(0.05)

    console.print("\n[bold]live counters, read from the pinned maps by another process:[/bold]")
    console.print(in_ns(GW_NS, *cli, "stats", GW_IF, check=False).stdout)
    console.print(in_ns(GW_NS, *cli, "sessions", GW_IF, check=False).stdout)
    return 0


def main(paths: GatePaths = DEFAULT_PATHS) -> int:
    if os.geteuid() != 0:
        console.print("error: the demo needs root (namespaces, XDP): sudo make demo")
        return 1
    if not shutil.which("ip"):
        console.print("error: iproute2 (`ip`) is missing: sudo make setup")
        return 1
    try:
        return run_demo(paths)
    except JvpnError as e:
        console.print(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        teardown(paths)
        console.print("[dim]namespaces removed, XDP detached, pins removed[/dim]")


if __name__ == "__main__":
    sys.exit(main())
