"""The gate in the kernel: session records projected into the pinned XDP maps."""

from __future__ import annotations

from jvpn.gate.element import session_element
from jvpn.gate.paths import DEFAULT_PATHS, GatePaths
from jvpn.keys import SessionKeys
from jvpn.session import SessionRecord


class XdpGate:
    """Projection of session records into a pinned XDP sessions map."""

    def __init__(self, ifname: str, paths: GatePaths = DEFAULT_PATHS):
        from jvpn.gate.pins import GateMaps
        from jvpn.gate.records import Attachment

        att = Attachment.load(ifname, paths)
        self.ifname, self.paths, self._published, self._fence = ifname, paths, None, None
        self.pins = paths.pin_dir(ifname)
        self.maps = GateMaps(self.pins, att.replay_bits)
        self.checks_in_kernel = True

    def event_reader(self):
        from jvpn.gate.ringbuf import EventReader  # noqa: PLC0415

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
        from jvpn.gate.records import Owners  # noqa: PLC0415

        doc = Owners(node=node, lease=lease,
                     remote={f"{sid:016x}": o for sid, o in sorted(remote.items())})
        if doc != self._published:
            doc.save(self.ifname, self.paths)
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
