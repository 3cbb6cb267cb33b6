"""The client's view of its path to the gateway, as the routing table has it:
the lookup its outer datagrams make, and a wake-up on any routing change."""

from __future__ import annotations

import socket
import threading


def route_to(dst: str, mark: int | None = None):
    """(preferred source, output interface index) of ``route get dst``, asked
    with the outer socket's mark when it has one: the lookup its datagrams
    make (full tunnel: the uplink, not the tunnel's own default route).
    None when there is no route: the path is gone."""
    from pyroute2 import IPRoute  # noqa: PLC0415

    try:
        with IPRoute() as ipr:
            r = ipr.route("get", dst=dst, **({"mark": mark} if mark else {}))[0]
            return r.get_attr("RTA_PREFSRC"), r.get_attr("RTA_OIF")
    except Exception:  # noqa: BLE001 - no route: the path is gone
        return None


def watch_routing(stop: threading.Event, wake: threading.Event) -> None:
    """Set ``wake`` on any link/address/route change, until ``stop``."""
    from pyroute2 import IPRoute  # noqa: PLC0415

    with IPRoute() as ipr:
        ipr.bind()
        ipr.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                       (0).to_bytes(8, "little") + (200_000).to_bytes(8, "little"))
        while not stop.is_set():
            try:
                if ipr.get():
                    wake.set()
            except (OSError, TimeoutError):
                continue
            except Exception:  # noqa: BLE001 - pyroute2 parse errors must not kill the agent
                continue
