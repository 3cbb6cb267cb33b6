"""`sessions --json`'s fast rows (cli/rowtext.py) are json.dumps(indent=2)'s
text of the merged row, byte for byte, whatever the values (issue 15)."""

import json

import pytest

from jvpn_cli import rowtext, sessions, views

SID = "00000000000000a1"
ODD = ['a"b', "back\\slash", "é ü 漢", "\u2028\x00\x1f\x7f", "tab\tnew\nline", "%s %d %%", "",
       "\ud800", "😀"]


def _kernel(sid=SID, owner="node-1", **over):
    row = dict(zip(views.KERNEL, (sid, "ACTIVE", owner, 7, 3, "192.0.2.1:4500", "192.0.2.1", 4500,
                                  12, 3400, 99), strict=True))
    row.update(over)
    return tuple(row.values())


def _daemon(sid=SID, **over):
    row = dict.fromkeys(views.DAEMON)
    row.update(session_id=sid, state="ACTIVE", owner="node-1", version=7, bound="x",
               rx_packets=1, rx_bytes=2, peer="alice", public_key="k" * 44, inner="10.0.0.2",
               allowed_ips=["10.0.0.2/32", "fd00::2/128"], confirmed=True, created_ms=1000,
               last_handshake_ms=2000, key_epoch=3, keys_ms=1500, key_age_s=1.25,
               rekey_requested=False, key_confirmed=True, key_overlap=False,
               last_rx_ms=4000, last_rx_age_s=0.5, tx_packets=5, tx_bytes=2**70)
    row.update(over)
    return tuple(row[k] for k in views.DAEMON)


def _expected(kernel, daemon, now):
    """The row as the listing wrote it before (k18list's _merged, by hand)."""
    if kernel is None:
        d = dict(zip(views.DAEMON, daemon, strict=True))
        kernel = (d["session_id"], d["state"], d["owner"], d["version"], None, d["bound"], None,
                  None, d["rx_packets"], d["rx_bytes"], None)
    row = dict(zip(views.KERNEL, kernel, strict=True))
    if daemon is None:
        row.update(dict.fromkeys(views.IDENTITY))
        return row
    row.update(zip(views.IDENTITY, daemon[7:], strict=True))
    row["daemon_state"] = daemon[1]
    if now is not None and row["last_rx_ms"] is not None:
        row["last_rx_age_s"] = round(max(0, now - row["last_rx_ms"]) / 1000, 3)
    return row


def _same(kernel, daemon, now=5000):
    text = rowtext.RowText(now)(kernel, daemon)
    row = _expected(kernel, daemon, now)
    assert text == json.dumps(row, indent=2).replace("\n", "\n    ")
    assert text == sessions.indented(row).replace("\n", "\n    ")  # the generic path's
    assert json.loads(text) == json.loads(json.dumps(row))  # NaN aside: see below


@pytest.mark.parametrize("value", ODD)
def test_an_odd_string_anywhere_is_escaped_as_json_dumps_does(value):
    _same(_kernel(owner=value), _daemon(peer=value, public_key=value, inner=value,
                                        allowed_ips=[value, value], state=value))
    _same(_kernel(owner=value, bound=value), None)
    _same(None, _daemon(owner=value, bound=value))


@pytest.mark.parametrize("over", [
    {}, {"allowed_ips": []}, {"allowed_ips": None}, {"allowed_ips": ["one"]},
    {"last_rx_ms": None}, {"last_rx_ms": 9000}, {"last_rx_ms": 4000.5},
    {"key_age_s": 1e100}, {"key_age_s": -0.0}, {"tx_bytes": -(2**80)}, {"confirmed": None},
    {"key_confirmed": False, "key_overlap": True}, {"peer": 12, "inner": 1.5},
])
def test_a_merged_row_is_the_generic_rows_text(over):
    _same(_kernel(), _daemon(**over))
    _same(None, _daemon(**over))
    _same(_kernel(), _daemon(**over), now=None)


@pytest.mark.parametrize("over", [
    {"peer": {"a": 1}}, {"peer": ["x", "y"]}, {"inner": ["x"]}, {"allowed_ips": [["x"]]},
    {"allowed_ips": [{"a": 1}]}, {"allowed_ips": "10.0.0.2/32"}, {"allowed_ips": {"a": [1, 2]}},
    {"key_age_s": float("nan")}, {"tx_bytes": float("inf")}, {"allowed_ips": [float("nan")]},
])
def test_a_value_the_daemon_should_not_send_is_written_as_json_dumps_would(over):
    """The generic path writes it: the same text, valid JSON (NaN as json.dumps spells it)."""
    for kernel in (_kernel(), None):
        text = rowtext.RowText(5000)(kernel, _daemon(**over))
        assert text == json.dumps(_expected(kernel, _daemon(**over), 5000),
                                  indent=2).replace("\n", "\n    ")


def test_a_kernel_row_without_the_daemon_and_a_remote_one():
    _same(_kernel(rx_packets=None, rx_bytes=None, highest_counter=None, bind_addr=None,
                  bind_port=None, bound="-"), None)
    _same(_kernel(owner=None, version=None, fence=0), None)
    _same(_kernel(version=2**64 - 1, fence=2**63), _daemon())


def test_an_odd_last_receive_fails_as_before():
    with pytest.raises(TypeError):
        rowtext.RowText(5000)(_kernel(), _daemon(last_rx_ms="soon"))


def test_a_whole_listing_is_json_dumps_of_it():
    kernels = [_kernel(sid=f"{i:016x}", owner=ODD[i % len(ODD)]) for i in range(600)]
    daemons = {f"{i:016x}": _daemon(sid=f"{i:016x}", peer=ODD[i % len(ODD)],
                                    allowed_ips=[] if i % 3 else ["10.0.0.1/32"])
               for i in range(0, 600, 2)}
    make = rowtext.RowText(5000)
    texts = {"eth0": [make(k, daemons.get(k[0])) for k in kernels], "eth1": []}
    rows = {"eth0": [_expected(k, daemons.get(k[0]), 5000) for k in kernels], "eth1": []}
    writes = []

    class Out:
        write = writes.append

        def flush(self):
            pass
    sessions.stream_json({n: iter(t) for n, t in texts.items()}, Out())
    assert "".join(writes) == json.dumps(rows, indent=2) + "\n"
    assert json.loads("".join(writes)) == rows
    assert 3 < len(writes) and max(map(len, writes)) < 300 * 1000  # a few hundred rows a write


# ------------------------------------------------ batches (RowText.batch, joined)
_ODD_ROWS = [
    {}, {"allowed_ips": []}, {"allowed_ips": None}, {"allowed_ips": ["one"]},
    {"allowed_ips": ["a", "b", "c"]}, {"last_rx_ms": None}, {"last_rx_ms": 9000},
    {"last_rx_ms": 4000.5, "peer": "%s %d %%"}, {"last_rx_ms": True}, {"key_age_s": 1e100},
    {"key_age_s": -0.0}, {"tx_bytes": -(2**80)}, {"confirmed": None}, {"peer": 12, "inner": 1.5},
    {"allowed_ips": "10.0.0.2/32"}, {"allowed_ips": {"a": [1, 2]}}, {"allowed_ips": [["x"]]},
    {"peer": {"a": 1}}, {"inner": ["x"]}, {"key_age_s": float("nan")},
    {"allowed_ips": [float("nan"), "%s"]}, {"owner": "%(x)s"}, {"state": "\ud800"},
]


def _pairs():
    """Merged rows with every odd value above (each also as its own only
    odd row, the others plain), kernel-only rows, daemon-only rows."""
    pairs = []
    for i, over in enumerate(_ODD_ROWS):
        value = ODD[i % len(ODD)]
        pairs += [(_kernel(owner=value), _daemon(**over)), (_kernel(bound=value), None),
                  (None, _daemon(**over)), (_kernel(), _daemon(public_key=value))]
    return pairs


@pytest.mark.parametrize("now", [5000, None, 5000.5, 0, -(2**70)])
def test_a_batch_is_the_rows_texts_one_by_one(now):
    make = rowtext.RowText(now)
    pairs = _pairs()
    one_by_one = [make(k, d) for k, d in pairs]
    assert make.batch(pairs) == ",\n    ".join(one_by_one)
    for start in range(len(pairs)):  # each odd row alone in a batch of plain ones too
        some = [(_kernel(), _daemon()), pairs[start], (_kernel(), None)]
        assert make.batch(some) == ",\n    ".join(make(k, d) for k, d in some)


def test_a_batch_with_an_odd_last_receive_fails_as_before():
    with pytest.raises(TypeError):
        rowtext.RowText(5000).batch([(_kernel(), _daemon()), (_kernel(), _daemon(last_rx_ms="x"))])
    with pytest.raises(OverflowError):  # as views.merged's sum
        rowtext.RowText(5000).batch([(_kernel(), _daemon(last_rx_ms=-(10**400)))])
    with pytest.raises(OverflowError):
        rowtext.RowText(5000)(_kernel(), _daemon(last_rx_ms=-(10**400)))


def test_joined_is_views_joined_in_batches_and_reads_the_daemon_to_its_end(monkeypatch):
    monkeypatch.setattr(rowtext, "BATCH_ROWS", 7)
    kernels = [_kernel(sid=f"{i:016x}", owner=ODD[i % len(ODD)]) for i in range(0, 60, 3)]
    daemons = [_daemon(sid=f"{i:016x}", peer=ODD[i % len(ODD)],
                       allowed_ips=[f"10.0.{i}.1/32"] * (i % 4)) for i in range(0, 80, 2)]
    make = rowtext.RowText(5000)
    one_by_one = list(views._joined(kernels, iter(daemons), make))
    rest = iter(daemons)
    texts = list(make.joined(kernels, rest))
    assert ",\n    ".join(texts) == ",\n    ".join(one_by_one)
    assert len(texts) == 3 and next(rest, None) is None  # 20 rows, 7 a batch; all read
    assert list(make.joined([], iter(daemons))) == []
    alone = list(make.daemon_only(iter(daemons)))
    assert ",\n    ".join(alone) == ",\n    ".join(make(None, d) for d in daemons)


def test_a_whole_listing_in_batches_is_json_dumps_of_it():
    kernels = [_kernel(sid=f"{i:016x}", owner=ODD[i % len(ODD)]) for i in range(600)]
    daemons = [_daemon(sid=f"{i:016x}", peer=ODD[i % len(ODD)],
                       allowed_ips=[] if i % 3 else ["10.0.0.1/32"]) for i in range(0, 700, 2)]
    by_id = {d[0]: d for d in daemons}
    rows = {"eth0": [_expected(k, by_id.get(k[0]), 5000) for k in kernels], "eth1": []}
    writes = []

    class Out:
        write = writes.append

        def flush(self):
            pass
    make = rowtext.RowText(5000)
    sessions.stream_json({"eth0": make.joined(kernels, iter(daemons)),
                          "eth1": make.joined([], iter(()))}, Out())
    assert "".join(writes) == json.dumps(rows, indent=2) + "\n"
    assert 2 < len(writes) and max(map(len, writes)) < 600 * 1000


# ------------------------------------------------ batches of rows alike, a column at a time
def _alike(over, value, rows=5, odd_at=None):
    """ROWS merged rows with the same fields; OVER and VALUE in every row (or
    only in row ODD_AT: a column of mixed values)."""
    out = []
    for i in range(rows):
        odd = odd_at is None or i == odd_at
        sid = f"{i:016x}"
        out.append((_kernel(sid=sid, owner=value if odd else "node-1"),
                    _daemon(sid=sid, **(over if odd else {}), public_key=value if odd else "k")))
    return out


@pytest.mark.parametrize("over", _ODD_ROWS)
@pytest.mark.parametrize("odd_at", [None, 0, 4])
def test_a_batch_of_rows_alike_is_the_rows_texts_one_by_one(over, odd_at):
    make = rowtext.RowText(5000)
    for value in ODD:
        pairs = _alike(over, value, odd_at=odd_at)
        assert make.batch(pairs) == ",\n    ".join(make(k, d) for k, d in pairs)


@pytest.mark.parametrize("over", [
    {}, {"allowed_ips": []}, {"allowed_ips": ["a", "b", "c"]}, {"key_age_s": -0.0},
    {"tx_bytes": -(2**80)}, {"confirmed": None}, {"peer": 12, "inner": 1.5},
    {"key_age_s": float("nan")}, {"owner": "%(x)s"}, {"state": "\ud800"},
])
def test_rows_alike_are_written_a_column_at_a_time(over):
    """The columns' path is the one taken for rows alike (flat values, the
    same number of allowed IPs, int last receives), and its text is the
    rows' one by one."""
    pairs = _alike(over, "%s \"x\" \u2028")
    text = rowtext._by_columns(pairs, 5000)
    assert text is not None
    assert text == ",\n    ".join(rowtext.RowText(5000)(k, d) for k, d in pairs)


@pytest.mark.parametrize("over", [
    {"peer": {"a": 1}}, {"peer": ["x", "y"]}, {"inner": ["x"]}, {"allowed_ips": [["x"]]},
    {"allowed_ips": [{"a": 1}]}, {"tx_bytes": [1]}, {"key_age_s": {"s": 1}},
])
def test_a_value_not_flat_in_rows_alike_leaves_the_columns_path(over):
    """A list or dict where none belongs, in every row or in one: not
    written inline by the encoder (json.dumps' indented text instead)."""
    for odd_at in (None, 2):
        pairs = _alike(over, "v", odd_at=odd_at)
        assert rowtext._by_columns(pairs, 5000) is None
        make = rowtext.RowText(5000)
        assert make.batch(pairs) == ",\n    ".join(make(k, d) for k, d in pairs)
        expected = [_expected(k, d, 5000) for k, d in pairs]
        assert make.batch(pairs) == ",\n    ".join(
            json.dumps(r, indent=2).replace("\n", "\n    ") for r in expected)


def test_rows_not_alike_leave_the_columns_path():
    plain = _alike({}, "v")
    assert rowtext._by_columns(plain, 5000) is not None
    assert rowtext._by_columns([*plain, (_kernel(sid="f" * 16), None)], 5000) is None
    assert rowtext._by_columns([*plain, (None, _daemon(sid="f" * 16))], 5000) is None
    for over in ({"allowed_ips": ["a"]}, {"allowed_ips": None}, {"last_rx_ms": None},
                 {"last_rx_ms": True}, {"last_rx_ms": 4000.5}):
        assert rowtext._by_columns(_alike(over, "v", odd_at=1), 5000) is None
    assert rowtext._by_columns([], 5000) is None
