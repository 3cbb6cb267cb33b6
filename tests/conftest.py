"""Shared test set-up.

Tests marked ``kernel`` need root, an importable bcc and a mounted bpffs at
/sys/fs/bpf. Each such test gets the ``kernel_env`` fixture first: it skips
the test with the reason when something is missing, or fails it when
JVPN_REQUIRE_KERNEL=1 (CI), so a green run there proves the kernel tests ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BPFFS = Path("/sys/fs/bpf")
REQUIRE_ENV = "JVPN_REQUIRE_KERNEL"


def _bpffs_mounted(path: Path = BPFFS) -> bool:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if "-" in fields and fields[4] == str(path) and fields[fields.index("-") + 1] == "bpf":
            return True
    return False


def kernel_unavailable() -> str | None:
    """Why the kernel tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "kernel tests need root (BPF and XDP): run pytest with sudo"
    try:
        import bcc  # noqa: F401
    except ImportError as e:
        return f"kernel tests need bcc (python3-bpfcc; use the venv of `make setup`): {e}"
    if not _bpffs_mounted():
        return f"kernel tests need a bpf filesystem mounted at {BPFFS}"
    return None


@pytest.fixture(scope="session")
def kernel_env() -> None:
    """Skip (or, with JVPN_REQUIRE_KERNEL=1, fail) when the kernel tests cannot run."""
    reason = kernel_unavailable()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1 forbids skipping kernel tests)", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(config, items):
    # First among the test's fixtures, so that nothing (a module-scoped program
    # loader, namespaces) is set up before the check.
    for item in items:
        names = getattr(item, "fixturenames", None)
        if names is not None and item.get_closest_marker("kernel") and "kernel_env" not in names:
            names.insert(0, "kernel_env")


@pytest.fixture(scope="module")
def tl(tmp_path_factory):
    """A running jvpn in the lab (gateway with XDP, client), shared by the
    tests of one module (the threat tests)."""
    from jvpn.lab.tunnel import TunnelLab

    t = TunnelLab(tmp_path_factory.mktemp("lab")).up()
    yield t
    t.down()
