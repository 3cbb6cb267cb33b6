"""The gate in the kernel: session records projected into the pinned XDP maps."""

from __future__ import annotations

from jvpn.errors import NotAttached
from jvpn.gate.element import session_element
from jvpn.keys import SessionKeys
from jvpn.session import SessionRecord


class XdpGate:
    """Projection of session records into a pinned XDP sessions map."""

    def __init__(self, ifname: str):
        from jvpn.gate.maps import Attachment, GateMaps, pin_dir, pinned_prog_id

        att = Attachment.load(ifname)
        self.ifname, self._published, self._fence = ifname, None, None
        self.pins = pin_dir(ifname)
        self.prog_id = pinned_prog_id(self.pins)
        self.maps = GateMaps(self.pins, att.replay_bits)
        self.checks_in_kernel = True
        problem = self.detached()
        if problem is not None:
            self.maps.close()
            raise NotAttached(f"{problem}: attach it again (jvpn-xdp detach, then attach)")

    def detached(self) -> str | None:
        """None while the program whose maps this gate writes is the one
        attached to the interface; else what happened (a detach, another
        program attached, the interface gone). One netlink query: cheap
        enough for the daemon's timer (jvpn/gateway/daemon.py)."""
        from jvpn.gate.maps import xdp_prog_id  # noqa: PLC0415

        if self.prog_id is None:
            return f"no jvpn program is pinned at {self.pins}"
        try:
            now = xdp_prog_id(self.ifname)
        except Exception as e:  # noqa: BLE001 - pyroute2 raises NetlinkError, OSError, ...
            return f"cannot read the XDP program of {self.ifname}: {e}"
        if now is None:
            return f"no XDP program is attached to {self.ifname} any more"
        if now != self.prog_id:
            return (f"the XDP program on {self.ifname} is id {now}, not the jvpn gate whose maps "
                    f"this gateway writes (id {self.prog_id})")
        return None

    def event_reader(self):
        from jvpn.gate.maps import EventReader  # noqa: PLC0415

        return EventReader(self.pins)

    def put(self, rec: SessionRecord, keys: SessionKeys, fence: int = 0,
            first: bool = False, c2s_floor: int = 0) -> None:
        """``first``: the element is new on this gateway; its replay window
        starts above ``c2s_floor`` (what a previous owner accepted)."""
        if first:
            self.maps.seed_runtime(rec.session_id, c2s_floor)
        self.maps.put_session(rec.session_id, session_element(rec, keys, fence))

    def standby(self, rec: SessionRecord, keys: SessionKeys) -> None:
        self.maps.put_session(rec.session_id, session_element(rec, keys, remote=True))

    def set_fence(self, token: int, deadline_ns: int) -> None:
        """The kernel's own fence (jvpn_abi.h, jvpn_config): only elements
        under ``token`` pass data, and only until ``deadline_ns``."""
        if self._fence == (token, deadline_ns):
            return  # the timer calls this every 100 ms; the deadline moves per refresh
        cfg = self.maps.read_config()
        cfg.fence_token, cfg.fence_deadline_ns = token, deadline_ns
        self.maps.write_config(cfg)
        self._fence = (token, deadline_ns)

    def publish_owners(self, node: str, lease: int, remote: dict[int, str]) -> None:
        """Who this gateway is (and its fencing token) and who owns the
        standby elements, for `jvpn-xdp sessions` (written only on change)."""
        from jvpn.gate.maps import Owners  # noqa: PLC0415

        doc = Owners(node=node, lease=lease,
                     remote={f"{sid:016x}": o for sid, o in sorted(remote.items())})
        if doc != self._published:
            doc.save(self.ifname)
            self._published = doc

    def remove(self, sid: int) -> None:
        self.maps.remove_session(sid)

    def counter_top(self, sid: int) -> int:
        rt = self.maps.get_runtime(sid)
        return int(rt.replay_top) if rt is not None else 0

    def ids(self) -> set[int]:
        return {sid for sid, _ in self.maps.list_sessions()}

    def admit(self, msg: bytes, src: tuple[str, int]) -> bool:
        return True  # the kernel already did

    def close(self) -> None:
        self.maps.close()
