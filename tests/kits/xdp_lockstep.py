"""The kernel program and the model side by side (tests/bpf): session 7's
element written to both, every frame's verdict compared (kits/rekey_table.py
``Target``)."""

from __future__ import annotations

from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from jvpn.gate.model import Model
from kits import rekey_table as rk
from kits.xdp_harness import Gate

UNLIMITED = dict(session_pps=0, session_bytes_per_sec=0, source_control_pps=0,
                 global_control_pps=0)


class Lockstep:
    """The kernel program and the model, fed the same elements and frames:
    every verdict must be the same."""

    def __init__(self, gate: Gate):
        self.gate = gate
        self.model = Model(config=abi.Config.from_buffer_copy(bytes(gate.config)),
                           max_sessions=gate.max_sessions)

    def element(self) -> abi.Session | None:
        return self.gate.maps.get_session(rk.SID)

    def write(self, element: abi.Session) -> None:
        self.gate.maps.put_session(rk.SID, element)
        self.model.sessions[rk.SID] = abi.Session.from_buffer_copy(element)

    def verdict(self, pkt: bytes) -> int:
        want = self.model.run(pkt, self.gate.now)
        got = self.gate.run(pkt)[1]
        assert got == want, f"kernel {abi.COUNTER_NAMES[got]}, model {abi.COUNTER_NAMES[want]}"
        return got

    def same_runtime(self) -> bool:
        got, want = self.gate.maps.get_runtime(rk.SID), self.model.runtime_of(rk.SID)
        return (got and bytes(got)[8:]) == (want and bytes(want)[8:])


def fresh(gate: Gate, config: GateConfig) -> Lockstep:
    gate.set_config(config)
    for k in list(gate.maps.sessions.keys()):
        gate.maps.sessions.delete(k)
    gate.reset_runtime()
    return Lockstep(gate)
