"""Where a gate's pins and run records live: one explicit value, built by the
CLI from its options (or their environment variables) and handed to every gate
function, never read from or written to ``os.environ`` here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jvpn import ifname as ifnames

DEFAULT_PIN_ROOT = Path("/sys/fs/bpf/jvpn")
DEFAULT_RUN_DIR = Path("/run/jvpn")


@dataclass(frozen=True)
class GatePaths:
    pin_root: Path = DEFAULT_PIN_ROOT  # bpffs: one pin directory per interface
    run_dir: Path = DEFAULT_RUN_DIR  # the JSON run records (records.py)

    def __post_init__(self):
        object.__setattr__(self, "pin_root", Path(self.pin_root))
        object.__setattr__(self, "run_dir", Path(self.run_dir))

    def pin_dir(self, ifname: str) -> Path:
        # a checked name: "", "." or ".." would be the pin root or its parent
        return self.pin_root / ifnames.check(ifname)

    def record(self, ifname: str, suffix: str) -> Path:
        """RUN_DIR/IFACE<suffix>: every run record and lock of an interface."""
        return self.run_dir / f"{ifnames.check(ifname)}{suffix}"


DEFAULT_PATHS = GatePaths()
