"""The JSON run records next to an attachment: the attachment itself (written
by `jvpn-xdp attach`) and the owners document (written by the gateway daemon)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from jvpn.errors import JvpnError, NotAttached
from jvpn.gate.pins import run_dir


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

    @classmethod
    def path(cls, ifname: str) -> Path:
        return run_dir() / f"{ifname}.json"

    def save(self) -> None:
        run_dir().mkdir(parents=True, exist_ok=True)
        self.path(self.ifname).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, ifname: str) -> Attachment:
        try:
            return cls(**json.loads(cls.path(ifname).read_text()))
        except FileNotFoundError:
            raise NotAttached(f"jvpn is not attached to {ifname}") from None
        except (ValueError, TypeError) as e:
            raise JvpnError(f"{cls.path(ifname)} is unreadable ({e}): run detach") from e

    @classmethod
    def all(cls) -> list[Attachment]:
        if not run_dir().is_dir():
            return []
        out = []
        for p in sorted(run_dir().glob("*.json")):
            try:
                out.append(cls.load(p.stem))
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

    @classmethod
    def path(cls, ifname: str) -> Path:
        return run_dir() / f"{ifname}.owners.json"

    def save(self, ifname: str) -> None:
        run_dir().mkdir(parents=True, exist_ok=True)
        tmp = self.path(ifname).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(self.path(ifname))  # readers see the old or the new file

    @classmethod
    def load(cls, ifname: str) -> Owners | None:
        try:
            return cls(**json.loads(cls.path(ifname).read_text()))
        except (OSError, ValueError, TypeError):
            return None  # no daemon has run here (yet)
