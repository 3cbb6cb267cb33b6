"""The kernel tier's one gate per module: the XDP program loaded once with
no rate limit (the control floors, windows and per-session buckets are the
subject, not the gateway-wide ones), closed when the module ends. A module
that needs another configuration or preloaded maps defines its own
``gate`` (tests/bpf/test_xdp_property.py)."""

from __future__ import annotations

import pytest

from jvpn.gate.config import GateConfig
from kits.xdp_harness import Gate
from kits.xdp_lockstep import UNLIMITED


@pytest.fixture(scope="module")
def gate():
    g = Gate(GateConfig(**UNLIMITED))
    yield g
    g.close()
