"""The replay ceiling (jvpn/gateway/ceiling.py): a client counter is
delivered only below a durably stored ceiling, written ahead in blocks."""

from jvpn.gateway.ceiling import ReplayCeiling, start_floor


class Store:
    def __init__(self):
        self.ceiling, self.writes, self.fail = 0, 0, False

    def raise_to(self, c: int) -> None:
        if self.fail:
            raise OSError("disk full")
        self.writes += 1
        self.ceiling = max(self.ceiling, c)


def test_written_ahead_in_blocks_not_per_packet():
    s = Store()
    rc = ReplayCeiling(0, 0, s.raise_to, block=64)
    for c in range(1, 1001):
        assert rc.admit(c) and c < s.ceiling
    assert s.writes <= 1000 // 48 + 1


def test_a_counter_not_below_the_durable_ceiling_is_refused_when_the_write_fails():
    s = Store()
    rc = ReplayCeiling(0, 0, s.raise_to, block=64, clock=lambda: 0.0)
    assert rc.admit(1)  # ceiling 65
    s.fail = True
    assert rc.admit(60)  # covered: the ahead-write failed, still below 65
    assert not rc.admit(65) and not rc.admit(1000)
    assert rc.failures >= 1 and rc.floor == 61


def test_retire_refuses_and_returns_the_exact_floor():
    s = Store()
    rc = ReplayCeiling(10, 0, s.raise_to, block=64)
    assert rc.admit(12)
    assert rc.retire() == 13
    assert not rc.admit(14)
    rc.resume()
    assert rc.admit(14)


def test_a_window_starts_above_floor_and_ceiling():
    assert start_floor(0, 0) == 0
    assert start_floor(7, 0) == 7
    assert start_floor(7, 1 << 16) == 1 << 16


def test_open_checks_window_and_ceiling_before_either_moves():
    """DataChannel.open: the AEAD first, then the window (read only) and the
    ceiling, and only a message both admit is recorded: a refusal by one
    leaves the other as it was (keepalives use the control window)."""
    from jvpn.gate import abi
    from jvpn.keys import SessionKeys
    from jvpn.tunnel import DataChannel

    keys = SessionKeys(7, bytes(range(32)), bytes(range(1, 33)), bytes(range(2, 18)),
                       bytes(range(3, 19)), bytes(range(4, 36)))
    s = Store()
    rc = ReplayCeiling(0, 0, s.raise_to, block=64, clock=lambda: 0.0)
    gw = DataChannel(keys, "gateway", check_replay=True, admit_counter=rc.admit)
    client = DataChannel(keys, "client")
    for kind in (abi.MSG_DATA, abi.MSG_KEEPALIVE):
        msg = client.seal(b"", kind)
        s.fail, writes = True, s.writes
        rc._durable = 0  # nothing durable: the ceiling refuses
        assert gw.open(msg) is None
        window = gw.control_replay if kind == abi.MSG_KEEPALIVE else gw.replay
        assert window.replay_top == 0  # the window did not move
        s.fail = False
        assert gw.open(msg) is not None and s.writes == writes + 1
        floor = rc.floor
        assert gw.open(msg) is None and rc.floor == floor  # a replay: the ceiling untouched
