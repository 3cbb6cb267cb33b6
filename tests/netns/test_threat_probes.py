"""Path probes as a lever (issue 14, docs/protocol.md "The probe budget"),
against the real gateway with its XDP gate: forged probes, replayed
captured probes and fresh probes sealed with the session's keys (an
attacker who took them from the lab's store) sent from the attacker's own
address. Forgeries die at the tag (drop_bad_tag) with no reply; a fresh
authentic probe gets exactly one reply, no larger than the probe, at the
attacker's address; its replays, from any source, die at the gate's
probe floor (drop_replay, before the session's probe bucket: issue 14),
with no reply; and nothing moves: the store record and the XDP element
(but its floors) are byte-identical, the binding stays the client's and
its stream goes on."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from jvpn import wire
from jvpn.gate import abi
from jvpn.lab.addresses import GW_INNER, GW_IP, PORT
from jvpn.lab.capture import Sniffer
from kits.threat_kit import attacker, counters, delta, settle, snapshot, victim

pytestmark = pytest.mark.kernel

PROBE_LEN = abi.HDR_LEN + wire.PATH_PROBE.size + wire.MAC_LEN


def _probe(sid: int, hdr_key: bytes, control_key: bytes, counter: int, probe_id: int,
           phase: int = 0) -> bytes:
    hdr = wire.Header(type=abi.MSG_PATH_PROBE, session_id=sid, counter=counter,
                      flags=abi.FLAG_KEY_PHASE if phase else 0)
    return wire.seal_control(hdr, hdr_key, control_key, probe_id)


RACE_AHEAD = 4  # counters: about 0.2 s of the client's stream (20 pings a second)


def _latest(sniffer: Sniffer) -> int:
    """The highest header counter the client used so far, from any of its
    sockets (one counter space: its own probes leave from its candidate
    uplink, jvpn/client_candidates.py)."""
    return max(wire.parse_header(m).counter for msgs in list(sniffer.captured.values())
               for m, _src in list(msgs))


def _replies(s: socket.socket, wait_s: float = 1.0) -> list[bytes]:
    s.settimeout(wait_s)
    got = []
    while True:
        try:
            got.append(s.recvfrom(2048)[0])
        except TimeoutError:
            return got
        s.settimeout(0.2)


def _forged(tl, s: socket.socket, sid: int) -> None:
    """No keys, any counter: dropped at the tag, nothing answers."""
    before = counters(tl)
    for i in range(50):
        s.sendto(_probe(sid, os.urandom(16), os.urandom(32), 10**6 + i, i), (GW_IP, PORT))
    assert _replies(s) == []
    assert delta(before, counters(tl)).get("drop_bad_tag") == 50


def _raced(s: socket.socket, sniffer: Sniffer, sid: int, keys, binding) -> list[bytes]:
    """Fresh probes sealed with the session's keys, raced from the attacker's
    own address with a counter the client is about to use (as a captured
    probe's is): one reply each, the probe's size, at the attacker's."""
    fresh = []
    for i in range(3):
        # a few ahead of the last one captured: the capture lags the client,
        # whose next data may have taken latest + 1 already (then the probe
        # is a replay and gets no reply: 1 in a full run, 69b9277)
        latest = _latest(sniffer)
        msg = _probe(sid, keys.hdr_c2s, keys.reattach, latest + RACE_AHEAD, 77 + i, keys.phase)
        s.sendto(msg, (GW_IP, PORT))
        [reply] = _replies(s)
        assert len(reply) == len(msg) == PROBE_LEN
        hdr, (probe_id, state, flags, _age, _version) = wire.open_control(reply, keys.reattach)
        assert hdr.type == abi.MSG_PATH_PROBE_REPLY and hdr.tag_valid(keys.hdr_s2c)
        assert (probe_id, state, flags) == (77 + i, abi.STATE_ATTACHED, 0)  # not the binding
        fresh.append(msg)
        time.sleep(0.3)  # the client's data moves its counter past the raced one
    return fresh


def test_forged_replayed_and_raced_probes_move_nothing(tl):
    # the client on one uplink: its own probes of a candidate (answered too)
    # and its own moves are not this test's
    tl.lab.link("cl", "lte", "down")
    time.sleep(0.5)
    sid, keys = victim(tl)
    state = snapshot(tl, sid)
    binding = state[0][0].binding
    sniffer = Sniffer(tl.lab)
    # the client's stream all along: its counters move on by data (a raced
    # probe's counter is the client's next one: a keepalive of ours with it
    # still passes, the probe raised the probe floor, not the control floor)
    stream = subprocess.Popen(tl.lab.cmd("cl", "ping", "-c", "80", "-i", "0.05", "-W", "1",
                                         GW_INNER), stdout=subprocess.PIPE, text=True)
    try:
        with tl.lab.socket("atk", socket.AF_INET, socket.SOCK_DGRAM) as s:
            _forged(tl, s, sid)
            tl.wait(lambda: sniffer.captured.get(abi.MSG_DATA), "the client's data")
            fresh = _raced(s, sniffer, sid, keys, binding)
            # the same probes again, from the attacker and with the client's
            # source: the daemon verified each (the probe floor is at the
            # last one's counter), so every copy is a replay at the gate
            # (drop_replay), before the probe bucket; nothing answers
            before = counters(tl)
            for msg in fresh:
                s.sendto(msg, (GW_IP, PORT))
            attacker(tl).send(fresh, spoof=(binding.addr, binding.port))
            assert _replies(s) == []
            settle()
            moved = delta(before, counters(tl))
            assert moved.get("drop_replay") == 6 and not moved.get("pass_control"), moved
        out, _ = stream.communicate(timeout=30)
    finally:
        sniffer.stop()
        if stream.poll() is None:
            stream.kill()
            stream.wait()
    assert " 0% packet loss" in out, out  # the client's stream is unaffected
    # nothing moved: the record (binding, state, version), the element (but
    # its floors, which the client's own keepalives and probes raise too)
    assert snapshot(tl, sid) == state
    probes = tl.cli_json("health")["path_probes"]
    assert probes["answered"] == 3 and probes["replayed"] == 0, probes
