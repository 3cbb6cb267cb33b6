"""The remote sessions map (jvpn_remote, issue 15; docs/cluster.md "Remote
sessions"): a session another gateway of the cluster owns is a compact
entry, not a sessions-map element. The XDP program (BPF_PROG_TEST_RUN) and
the model (jvpn/gate/model.py) are fed the same entries and frames and must
give the same verdict for each: only the client's tag-checked reattach
traffic passes, never data."""

from __future__ import annotations

import ctypes

import pytest

from jvpn import wire
from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from jvpn.gate.element import remote_entry
from jvpn.gate.model import Model
from jvpn.keys import SessionKeys
from kits.xdp_harness import KEY, Gate, frame, session

pytestmark = pytest.mark.kernel

SID = 0x5151
UNLIMITED = dict(session_pps=0, session_bytes_per_sec=0, source_control_pps=0,
                 global_control_pps=0, session_control_pps=0, authed_control_pps=0)
OTHER_KEY = bytes(range(100, 116))


def _remote(key: bytes = KEY, key1: bytes | None = None, ctl_floor: int = 0) -> abi.Remote:
    words1 = wire.key_words(key1) if key1 is not None else (0, 0)
    phases = abi.key_phase_bit(0) | (abi.key_phase_bit(1) if key1 is not None else 0)
    return abi.Remote(tag_key=wire.key_words(key), tag_key_phase1=words1, ctl_floor=ctl_floor,
                      key_phases=phases)


class Both:
    """The kernel program and the model side by side: every verdict compared."""

    def __init__(self, gate: Gate, config: GateConfig):
        gate.set_config(config)
        for m in (gate.maps.sessions, gate.maps.remote, gate.maps.remote_buckets):
            for k in list(m.keys()):
                m.delete(k)
        gate.reset_runtime()
        self.gate = gate
        self.model = Model(config=abi.Config.from_buffer_copy(bytes(gate.config)),
                           max_sessions=gate.max_sessions)

    def remote(self, sid: int, entry: abi.Remote) -> None:
        self.gate.maps.put_remote(sid, entry)
        self.model.remote[sid] = abi.Remote.from_buffer_copy(entry)

    def element(self, sid: int, element: abi.Session) -> None:
        self.gate.put(sid, element)
        self.model.sessions[sid] = abi.Session.from_buffer_copy(element)

    def verdict(self, pkt: bytes) -> int:
        want = self.model.run(pkt, self.gate.now)
        got = self.gate.run(pkt)[1]
        assert got == want, f"kernel {abi.COUNTER_NAMES[got]}, model {abi.COUNTER_NAMES[want]}"
        return got


@pytest.fixture
def both(gate):
    b = Both(gate, GateConfig(**UNLIMITED))
    b.remote(SID, _remote())
    return b


def test_a_reattach_with_a_good_tag_passes_to_the_daemon(both):
    assert both.verdict(frame(5, sid=SID, t=abi.MSG_REATTACH_REQ)) == abi.R_PASS_CONTROL
    # from any source: the client's new path is the point of a handoff
    assert both.verdict(frame(6, sid=SID, src="198.51.100.7",
                              t=abi.MSG_REATTACH_REQ)) == abi.R_PASS_CONTROL
    assert both.verdict(frame(7, sid=SID, t=abi.MSG_PATH_RESPONSE)) == abi.R_PASS_CONTROL
    assert both.verdict(frame(8, sid=SID, t=abi.MSG_TERMINATE)) == abi.R_PASS_CONTROL


def test_a_forged_tag_is_dropped(both):
    assert both.verdict(frame(5, sid=SID, key=OTHER_KEY,
                              t=abi.MSG_REATTACH_REQ)) == abi.R_DROP_BAD_TAG


@pytest.mark.parametrize("t", [abi.MSG_DATA, abi.MSG_KEEPALIVE, abi.MSG_REKEY_INIT,
                               abi.MSG_PATH_PROBE])
def test_data_keepalives_and_what_the_daemon_refuses_never_pass(both, t):
    """No data of a session another gateway owns passes here, whatever its
    tag: 0 dual-active packets by construction."""
    assert both.verdict(frame(5, sid=SID, t=t)) == abi.R_DROP_STATE


def test_an_unknown_session_is_dropped_as_before(both):
    assert both.verdict(frame(5, sid=SID + 1, t=abi.MSG_REATTACH_REQ)) == \
        abi.R_DROP_UNKNOWN_SESSION


def test_counters_at_or_below_the_control_floor_are_replays(both):
    both.remote(SID, _remote(ctl_floor=100))
    assert both.verdict(frame(100, sid=SID, t=abi.MSG_REATTACH_REQ)) == abi.R_DROP_REPLAY
    assert both.verdict(frame(101, sid=SID, t=abi.MSG_REATTACH_REQ)) == abi.R_PASS_CONTROL
    assert both.verdict(frame(abi.reject_after(), sid=SID,
                              t=abi.MSG_REATTACH_REQ)) == abi.R_DROP_REPLAY


def test_only_the_live_key_phases_pass(both):
    phase1 = dict(t=abi.MSG_REATTACH_REQ, flags=abi.FLAG_KEY_PHASE)
    assert both.verdict(frame(5, sid=SID, key=OTHER_KEY, **phase1)) == abi.R_DROP_KEY_PHASE
    both.remote(SID, _remote(key1=OTHER_KEY))  # mid-rekey: both epochs
    assert both.verdict(frame(6, sid=SID, key=OTHER_KEY, **phase1)) == abi.R_PASS_CONTROL
    assert both.verdict(frame(7, sid=SID, t=abi.MSG_REATTACH_REQ)) == abi.R_PASS_CONTROL


def test_an_element_of_ours_wins_over_the_remote_entry(both):
    """The handoff's end on the new owner: its element is written, then the
    remote entry removed; in between the element decides."""
    assert both.verdict(frame(5, sid=SID)) == abi.R_DROP_STATE
    both.element(SID, session())
    assert both.verdict(frame(6, sid=SID)) == abi.R_PASS_DATA


def test_a_remote_sessions_control_spends_its_own_bucket_then_the_gateways(gate):
    both = Both(gate, GateConfig(**{**UNLIMITED, "session_control_pps": 20,
                                    "session_control_burst": 3}))
    both.remote(SID, _remote())
    both.remote(SID + 1, _remote())
    got = [both.verdict(frame(c, sid=SID, t=abi.MSG_REATTACH_REQ)) for c in range(1, 9)]
    assert got[:3] == [abi.R_PASS_CONTROL] * 3 and abi.R_DROP_RATE_SESSION in got
    # another session's bucket is its own
    assert both.verdict(frame(1, sid=SID + 1, t=abi.MSG_REATTACH_REQ)) == abi.R_PASS_CONTROL
    gate.tick(1_000_000_000)  # refilled
    assert both.verdict(frame(20, sid=SID, t=abi.MSG_REATTACH_REQ)) == abi.R_PASS_CONTROL


def test_the_gateways_authenticated_budget_is_spent_too(gate):
    both = Both(gate, GateConfig(**{**UNLIMITED, "authed_control_pps": 20,
                                    "authed_control_burst": 2}))
    both.remote(SID, _remote())
    got = [both.verdict(frame(c, sid=SID, t=abi.MSG_REATTACH_REQ)) for c in range(1, 7)]
    assert got[0] == abi.R_PASS_CONTROL and abi.R_DROP_RATE_AUTHED in got


def test_the_daemons_remote_entry_carries_the_live_epochs_keys():
    """jvpn/gate/element.py remote_entry: the keys the gate checks are the
    client->gateway header keys of the ring's live epochs, the floor kept."""
    keys = SessionKeys(session_id=SID, data_c2s=bytes(32), data_s2c=bytes(32),
                       hdr_c2s=KEY, hdr_s2c=bytes(16), reattach=bytes(32))
    entry = remote_entry(keys, ctl_floor=9)
    assert tuple(entry.tag_key) == wire.key_words(KEY)
    assert entry.key_phases == abi.key_phase_bit(0) and entry.ctl_floor == 9
    assert ctypes.sizeof(entry) == 48


def test_pins_made_before_the_remote_map_are_refused_by_name():
    """A gate attached by the build before issue 15 has no remote map: this
    build refuses its pins with a reason, not the verifier's bare error."""
    import uuid  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from jvpn.errors import LoadFailed  # noqa: PLC0415
    from jvpn.gate.attach import unpin  # noqa: PLC0415
    from jvpn.gate.loader import BuildOptions, Program, load_plain  # noqa: PLC0415

    pins = Path("/sys/fs/bpf") / f"jvt-{uuid.uuid4().hex[:11]}"
    pins.mkdir()
    old = load_plain(f"""
#include <uapi/linux/bpf.h>
#include "jvpn_abi.h"
BPF_TABLE_PINNED("hash", __u64, struct jvpn_session, s, 16, "{pins}/sessions",
                 BPF_F_NO_PREALLOC);
int xdp_main(struct xdp_md *ctx) {{ __u64 k = 0; return s.lookup(&k) ? XDP_DROP : XDP_PASS; }}
""")[0]
    try:
        with pytest.raises(LoadFailed, match=r"no remote sessions map"):
            Program(pins, BuildOptions(max_sessions=16, max_sources=16))
    finally:
        old.cleanup()
        unpin(pins)
