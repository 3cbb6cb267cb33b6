"""The JSON run records next to an attachment: the attachment itself (written
by `jvpn-xdp attach`) and the owners document (written by the gateway daemon)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from jvpn.errors import JvpnError, NotAttached
from jvpn.gate.paths import GatePaths


@dataclass
class Attachment:
    ifname: str
    ifindex: int
    mode: str
    ports: list[int]
    pin_dir: str
    replay_bits: int
    attached_at: float
    note: str = ""

    @staticmethod
    def path(ifname: str, paths: GatePaths) -> Path:
        return paths.run_dir / f"{ifname}.json"

    def save(self, paths: GatePaths) -> None:
        paths.run_dir.mkdir(parents=True, exist_ok=True)
        self.path(self.ifname, paths).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, ifname: str, paths: GatePaths) -> Attachment:
        path = cls.path(ifname, paths)
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise NotAttached(f"jvpn is not attached to {ifname}") from None
        except (ValueError, TypeError) as e:
            raise JvpnError(f"{path} is unreadable ({e}): run detach") from e

    @classmethod
    def all(cls, paths: GatePaths) -> list[Attachment]:
        if not paths.run_dir.is_dir():
            return []
        out = []
        for p in sorted(paths.run_dir.glob("*.json")):
            try:
                out.append(cls.load(p.stem, paths))
            except JvpnError:
                continue
        return out


@dataclass
class Owners:
    """Written by the gateway daemon next to the attachment record: its node
    id, its lease (the fence of its own elements) and the owners of its
    standby elements. Read by `jvpn-xdp sessions`."""

    node: str
    lease: int
    remote: dict

    @staticmethod
    def path(ifname: str, paths: GatePaths) -> Path:
        return paths.run_dir / f"{ifname}.owners.json"

    def save(self, ifname: str, paths: GatePaths) -> None:
        paths.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path(ifname, paths).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(self.path(ifname, paths))  # readers see the old or the new file

    @classmethod
    def load(cls, ifname: str, paths: GatePaths) -> Owners | None:
        try:
            return cls(**json.loads(cls.path(ifname, paths).read_text()))
        except (OSError, ValueError, TypeError):
            return None  # no daemon has run here (yet)
