"""Where a gate's pins and run records live: one explicit value, built by the
CLI from its options (or their environment variables) and handed to every gate
function, never read from or written to ``os.environ`` here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jvpn import ifname
from jvpn.gate import ifnames

DEFAULT_PIN_ROOT = Path("/sys/fs/bpf/jvpn")
DEFAULT_RUN_DIR = Path("/run/jvpn")


@dataclass(frozen=True)
class GatePaths:
    pin_root: Path = DEFAULT_PIN_ROOT  # bpffs: one pin directory per interface
    run_dir: Path = DEFAULT_RUN_DIR  # the JSON run records (records.py)

    def __post_init__(self):
        object.__setattr__(self, "pin_root", Path(self.pin_root))
        object.__setattr__(self, "run_dir", Path(self.run_dir))

    def pin_dir(self, name: str) -> Path:
        # a checked name ("", "." or ".." would be the pin root or its parent),
        # encoded: bpffs refuses '.' (VLANs: eth0.100 pins in eth0_2e100)
        return self.pin_root / ifnames.encode(ifname.check(name))

    def record(self, name: str, suffix: str) -> Path:
        """RUN_DIR/IFACE<suffix>: every run record and lock of an interface,
        its name encoded as the pin dir's is, so that ``x.owners.json`` (the
        owners of ``x``) is never also the record of an interface ``x.owners``."""
        return self.run_dir / f"{ifnames.encode(ifname.check(name))}{suffix}"


DEFAULT_PATHS = GatePaths()
