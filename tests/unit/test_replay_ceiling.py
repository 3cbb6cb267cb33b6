"""The replay ceiling (jvpn/gateway/ceiling.py): a client counter is
delivered only below a durably stored ceiling, written ahead in blocks."""

from jvpn.client_reattach import retry_skip
from jvpn.gateway.ceiling import REPLAY_BLOCK, RETRY_S, ReplayCeiling, start_floor


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


class FailingStore(Store):
    def __init__(self):
        super().__init__()
        self.fail, self.calls = True, 0

    def raise_to(self, c: int) -> None:
        self.calls += 1
        super().raise_to(c)


def test_a_counter_past_the_block_calls_a_failing_store_once_per_retry_interval():
    """Review r14b C: a client's reattach retries skip counters (256, x4
    each, up to 2^24): past the ceiling's block every message was
    uncovered, and each one called the failing store on the receive thread
    (an etcd outage: seconds each, every session stalled). Paced now as
    the covered ones are; they pass again once the store does."""
    s, t = FailingStore(), [0.0]
    rc = ReplayCeiling(1000, 1000 + REPLAY_BLOCK, s.raise_to, clock=lambda: t[0])
    skipped = sum(retry_skip(i) for i in range(1, 6))
    assert skipped > REPLAY_BLOCK
    first = 2000 + skipped
    assert not any(rc.admit(first + i) for i in range(100))
    assert s.calls == 1  # one attempt, then dropped without a call until RETRY_S passed
    t[0] += RETRY_S / 2
    assert not rc.admit(first + 100) and s.calls == 1
    t[0] += RETRY_S / 2
    assert not rc.admit(first + 101) and s.calls == 2  # the next attempt, paced
    s.fail = False
    assert not rc.admit(first + 102) and s.calls == 2  # still within its interval
    t[0] += RETRY_S
    assert rc.admit(first + 103) and s.calls == 3  # the store is back: admitted
    assert all(rc.admit(first + 104 + i) for i in range(100)) and s.calls == 3


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
    s, t = Store(), [0.0]
    rc = ReplayCeiling(0, 0, s.raise_to, block=64, clock=lambda: t[0])
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
        t[0] += RETRY_S  # the failed write is retried once its interval passed
        assert gw.open(msg) is not None and s.writes == writes + 1
        floor = rc.floor
        assert gw.open(msg) is None and rc.floor == floor  # a replay: the ceiling untouched
