"""Where the gate's C sources are at run time.

The C sources (jvpn_xdp.c and include/*.h) ship as package data of
``jvpn.gate``, so they are found through importlib.resources: the same lookup
works in the source tree, in an editable install and in an installed wheel,
whatever the current directory. bcc compiles from a real file and passes
``-I`` to clang, so the package must be installed as files (pip always does),
not imported from a zip.

``JVPN_BPF_DIR`` overrides the lookup (a checkout of modified C sources
against an installed jvpn); it is read here and nowhere else.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

BPF_DIR_ENV = "JVPN_BPF_DIR"


def bpf_dir() -> Path:
    """The directory holding jvpn_xdp.c and include/."""
    override = os.environ.get(BPF_DIR_ENV)
    if override:
        return Path(override)
    return Path(str(files("jvpn.gate") / "bpf"))
