"""`jvpn-xdp sessions`, `health` and `top` through click's CliRunner (issue
12, inspect): the kernel's rows merged with the daemon's identities, a
kernel-only view when no daemon answers, readable at 80 columns. The maps
and the daemon are fakes here; tests/netns/test_metrics_lab.py runs them for
real."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from types import SimpleNamespace
from typing import ClassVar

import pytest
from click.testing import CliRunner

from jvpn.gate import abi, loader, pins
from jvpn.operator import NoDaemon
from jvpn_cli import app as app_mod
from jvpn_cli import sessions as sessions_mod
from jvpn_cli import top as top_mod
from jvpn_cli import views
from jvpn_cli.main import cli

SID_A, SID_B = 0x1234_5678_9ABC_DEF0, 0x0FED_CBA9_8765_4321
PUB = "Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyMDA="
NOW_MS = 1_700_000_100_000


def _element(state: int, addr: str, port: int, version: int, slot: int = 0) -> abi.Session:
    s = abi.Session()
    s.state, s.version, s.fence = state, version, 0
    s.rt_slot, s.rt_gen = slot, 1
    s.bind_family = abi.AF_INET
    s.bind_addr[:] = abi.addr_words(ipaddress.ip_address(addr))
    s.bind_port = abi.port_word(port)
    return s


class FakeMaps:
    """The pinned maps of one interface: two sessions, one with traffic, and
    the remote entries ``remote`` (sessions another gateway owns). Read as
    the kernel's are, in batches only (no lookup per session)."""

    remote: ClassVar[set[int]] = set()
    batch_reads = 0

    def remote_ids(self):
        return set(self.remote)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def list_sessions(self):
        FakeMaps.batch_reads += 1
        return [(SID_A, _element(abi.STATE_ATTACHED, "203.0.113.200", 51234, 7, slot=3)),
                (SID_B, _element(abi.STATE_VOLATILE, "198.51.100.17", 40000, 12, slot=4))]

    def session_fields(self):
        """As GateMaps reads them: each element's bytes unpacked."""
        return [(sid, pins.SESSION_LAYOUT.unpack(bytes(e))) for sid, e in self.list_sessions()]

    def runtime_views(self):
        """slot -> (session id, generation, rx packets, rx bytes, replay top);
        slot 4 holds a stale generation of SID_B's: not its traffic."""
        FakeMaps.batch_reads += 1
        return {3: (SID_A, 1, 123_456, 987_654_321, 123_457), 4: (SID_B, 0, 9, 9, 9)}


def _daemon_row(sid: int, peer: str, inner: str) -> dict:
    return {"session_id": f"{sid:016x}", "peer": peer, "public_key": PUB, "inner": inner,
            "allowed_ips": [f"{inner}/32", "192.168.77.0/24"], "bound": "x", "state": "ATTACHED",
            "version": 7, "owner": "gw-a", "confirmed": True, "created_ms": NOW_MS - 7_200_000,
            "last_handshake_ms": NOW_MS - 7_200_000, "key_epoch": 59, "keys_ms": NOW_MS - 95_000,
            "key_age_s": 95.0,
            "last_rx_ms": NOW_MS - 3_000, "rx_packets": 1, "rx_bytes": 2, "rx_from": "xdp",
            "tx_packets": 99_999, "tx_bytes": 5 << 30}


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Root, bcc 'present', one attached interface with FakeMaps; the daemon
    answers what ``env.daemon`` holds (None: no daemon)."""
    monkeypatch.setenv("JVPN_PIN_ROOT", str(tmp_path / "pins"))
    monkeypatch.setenv("JVPN_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(loader, "_bcc", lambda: object())
    state = SimpleNamespace(daemon=None, asked=[])

    def ask(self, op, socket_path=None, **args):
        state.asked.append((op, socket_path))
        if state.daemon is None:
            raise NoDaemon("no gateway daemon answers (test)")
        return state.daemon[op]

    monkeypatch.setattr(app_mod.App, "ask_daemon", ask)
    monkeypatch.setattr(app_mod.App, "attachments",
                        lambda self, iface: [SimpleNamespace(ifname="jvtest0")])
    monkeypatch.setattr(app_mod.App, "open_maps", lambda self, att: FakeMaps())
    return state


def _daemon(interface: str | None = "jvtest0", gate: str = "xdp") -> dict:
    return {"sessions": {"node_id": "gw-a", "now_ms": NOW_MS, "gate": gate,
                         "interface": interface,
                         "sessions": [_daemon_row(SID_A, "alice-laptop-with-a-long-name",
                                                  "10.99.0.2")]}}


def _run(args, columns: int = 80):
    r = CliRunner().invoke(cli, args, env={"COLUMNS": str(columns)})
    assert r.exit_code == 0, r.output
    return r


def test_sessions_merge_kernel_counters_with_identities_in_json(env):
    env.daemon = _daemon()
    r = _run(["sessions", "--json"])
    out = json.loads(r.stdout)
    b, a = out["jvtest0"]  # sorted by id
    assert a["session_id"] == f"{SID_A:016x}" and a["peer"] == "alice-laptop-with-a-long-name"
    assert a["public_key"] == PUB and a["inner"] == "10.99.0.2"
    assert (a["rx_packets"], a["rx_bytes"]) == (123_456, 987_654_321)  # the kernel's
    assert a["tx_bytes"] == 5 << 30 and a["bound"] == "203.0.113.200:51234"
    assert a["last_rx_age_s"] == 3.0 and a["highest_counter"] == 123_456
    assert b["peer"] is None and b["state"] == "VOLATILE"  # the daemon does not serve it
    assert r.stderr == ""


def test_sessions_list_remote_entries_as_remote_with_their_owner(env, monkeypatch, tmp_path):
    """A session another gateway owns is a remote entry (no element): listed
    as REMOTE, its owner from the daemon's owners file; an id that has an
    element of ours too is listed once, as the element (the gate's order)."""
    from jvpn.gate import records

    remote = 0x0A0A0A0A0A0A0A0A
    monkeypatch.setattr(FakeMaps, "remote", {remote, SID_A})
    monkeypatch.setattr(records.Owners, "load", classmethod(
        lambda cls, *a, **k: records.Owners(node="gw-a", lease=1,
                                            remote={f"{remote:016x}": "gw-b"})), raising=False)
    r = _run(["sessions", "--json"])
    rows = {row["session_id"]: row for row in json.loads(r.stdout)["jvtest0"]}
    assert len(rows) == 3
    assert rows[f"{remote:016x}"]["state"] == "REMOTE" and rows[f"{SID_A:016x}"]["state"] == \
        "ATTACHED"
    assert rows[f"{remote:016x}"]["bound"] == "-" and rows[f"{remote:016x}"]["owner"] == "gw-b"
    assert "0a0a0a0a" in _run(["sessions"]).stdout


def test_sessions_read_the_maps_in_two_batches_whatever_their_size(env):
    """Issue 15: the sessions map and the runtime map, one batched read
    each; FakeMaps has no per-session lookup at all (a stale slot's
    generation is not the session's traffic)."""
    env.daemon = _daemon()
    FakeMaps.batch_reads = 0
    out = json.loads(_run(["sessions", "--json"]).stdout)
    assert FakeMaps.batch_reads == 2
    b, a = out["jvtest0"]
    assert a["rx_packets"] == 123_456 and b["rx_packets"] is None


def test_the_daemon_is_asked_in_pages_of_one_listing(env, monkeypatch):
    """Issue 15: the daemon's identities come in pages (a cursor from the
    first answer), never a request per session, and all of them merge."""
    asked = []

    def ask(self, op, socket_path=None, **args):
        asked.append(args)
        page = {**_daemon()["sessions"], "sessions": []}
        if "cursor" not in args:  # a page of rows and a cursor: more follow (an empty
            # page with a cursor is no progress, refused: test_sessions_daemon_paging.py)
            return {**page, "sessions": [_daemon_row(SID_B, "bob", "10.99.0.3")], "next": "c1"}
        return {**page, "sessions": [_daemon_row(SID_A, "alice", "10.99.0.2")], "next": None}
    monkeypatch.setattr(app_mod.App, "ask_daemon", ask)
    out = json.loads(_run(["sessions", "--json"]).stdout)
    assert [a.get("cursor") for a in asked] == [None, "c1"]
    assert all(a["limit"] == views.SESSIONS_PAGE and a["kernel_rx"] is False for a in asked)
    assert [r["peer"] for r in out["jvtest0"]] == ["bob", "alice"]


def test_sessions_json_is_written_a_few_sessions_at_a_time(monkeypatch):
    monkeypatch.setattr(sessions_mod, "WRITE_ROWS", 1)
    rows = {"jvtest0": [{"session_id": f"{i:016x}", "peer": None, "n": [i, 2]} for i in range(3)],
            "jvtest1": []}
    writes = []

    class Out:
        def write(self, text):
            writes.append(text)

        def flush(self):
            pass
    sessions_mod.stream_json(rows, Out())
    assert "".join(writes) == json.dumps(rows, indent=2) + "\n"  # the same JSON as before
    assert len(writes) > 3 and max(map(len, writes)) < 200  # never one string of them all


def test_a_listing_too_long_for_a_table_says_how_many_and_shows_the_first(env, monkeypatch):
    env.daemon = _daemon()
    monkeypatch.setattr(sessions_mod, "TABLE_MAX_ROWS", 1)
    out = _run(["sessions"]).stdout
    assert "jvtest0: 2 sessions (1 ATTACHED, 1 VOLATILE); the table shows the first 1" in out
    assert "0fedcba9…" in out and "12345678…" not in out  # the first by id only


def test_sessions_fit_80_columns(env):
    env.daemon = _daemon()
    r = _run(["sessions"])
    lines = r.stdout.splitlines()
    assert max(map(len, lines)) <= 80, r.stdout
    [row_a] = [ln for ln in lines if ln.startswith("12345678…")]
    for text in ("alice", "10.99.0.2", "ATTACHED", "203.0.113.200:51234", "941.9M", "5.0G",
                 "1m   3s"):  # the key's age (a rekey 95 s ago), then idle
        assert text in row_a, row_a
    assert "key idle" in lines[1], lines[1]
    [row_b] = [ln for ln in lines if ln.startswith("0fedcba9…")]
    assert "198.51.100.17:40000" in row_b and "VOLATILE" in row_b


def test_sessions_wide_has_whole_ids_and_keys(env):
    env.daemon = _daemon()
    r = _run(["sessions", "--wide"], columns=400)
    assert f"{SID_A:016x}" in r.stdout and PUB in r.stdout and "192.168.77.0/24" in r.stdout
    head = next(ln for ln in r.stdout.splitlines() if "key epoch" in ln)
    [row_a] = [ln for ln in r.stdout.splitlines() if ln.startswith(f"{SID_A:016x}")]
    at = head.index("key epoch") + len("key epoch")  # the column is right-justified
    assert row_a[:at].endswith(" 59") and "1m" in row_a[at:]


def test_sessions_show_an_unconfirmed_epoch_and_the_overlap(env):
    """Review R3 F5: the daemon's key_confirmed / key_overlap pass through
    --json; --wide marks the epoch (59*: unconfirmed, 59+: the overlap)."""
    env.daemon = _daemon()
    row = env.daemon["sessions"]["sessions"][0]
    for confirmed, overlap, cell in ((False, True, " 59*"), (True, True, " 59+"),
                                     (True, False, " 59")):
        row.update(key_confirmed=confirmed, key_overlap=overlap)
        _b, a = json.loads(_run(["sessions", "--json"]).stdout)["jvtest0"]
        assert (a["key_confirmed"], a["key_overlap"]) == (confirmed, overlap)
        out = _run(["sessions", "--wide"], columns=400).stdout
        head = next(ln for ln in out.splitlines() if "key epoch" in ln)
        [row_a] = [ln for ln in out.splitlines() if ln.startswith(f"{SID_A:016x}")]
        assert row_a[:head.index("key epoch") + len("key epoch")].endswith(cell), row_a
        assert max(map(len, _run(["sessions"]).stdout.splitlines())) <= 80


def test_sessions_json_has_the_key_epoch_and_age(env):
    env.daemon = _daemon()
    _b, a = json.loads(_run(["sessions", "--json"]).stdout)["jvtest0"]
    assert (a["key_epoch"], a["keys_ms"], a["key_age_s"]) == (59, NOW_MS - 95_000, 95.0)
    env.daemon = None  # the kernel alone knows no epoch: none is made up
    _b, a = json.loads(_run(["sessions", "--json"]).stdout)["jvtest0"]
    assert (a["key_epoch"], a["keys_ms"], a["key_age_s"]) == (None, None, None)


def test_sessions_without_a_daemon_read_the_kernel_alone(env):
    r = _run(["sessions"])
    assert r.stderr.strip() == views.NO_DAEMON
    assert max(map(len, r.stdout.splitlines())) <= 80
    assert "203.0.113.200:51234" in r.stdout and "123k" in r.stdout
    j = _run(["sessions", "--json"])
    rows = json.loads(j.stdout)["jvtest0"]
    assert [r["peer"] for r in rows] == [None, None] and rows[1]["rx_packets"] == 123_456


def test_sessions_of_a_userspace_gateway_come_from_the_daemon(env, monkeypatch):
    env.daemon = _daemon(interface=None, gate="userspace")
    monkeypatch.setattr(loader, "_bcc", lambda: (_ for _ in ()).throw(AssertionError("bcc")))
    out = json.loads(_run(["sessions", "--json"]).stdout)
    [row] = out["userspace"]
    assert row["peer"].startswith("alice") and row["tx_packets"] == 99_999


def test_sessions_ask_the_socket_given(env):
    _run(["sessions", "--socket", "/tmp/elsewhere.sock"])
    assert env.asked == [("sessions", "/tmp/elsewhere.sock")]


@pytest.mark.parametrize(("n", "text"), [(0, "0B"), (1023, "1023B"), (1536, "1.5K"),
                                         (3 << 20, "3.0M"), (None, "-")])
def test_sizes(n, text):
    assert views.size(n) == text


@pytest.mark.parametrize(("s", "text"), [(0, "0s"), (59.9, "59s"), (150, "2m"), (7200, "2h"),
                                         (200_000, "2d"), (None, "-")])
def test_ages(s, text):
    assert views.age(s) == text


def _health(ok: bool = True) -> dict:
    return {"ok": ok, "node_id": "gw-a",
            "threads": {"udp": True, "tun": True, "timer": True, "operator": ok},
            "store": {"reachable": True, "latency_ms": 0.2, "error": None},
            "cluster": None, "draining": False, "gate": "xdp", "gate_problem": None,
            "fatal": None, "sessions": 1,
            "process": {"pid": 42, "cpu_percent": 1.5, "cpu_seconds": 3.0, "rss_bytes": 50 << 20,
                        "open_fds": 23, "threads": 9, "start_time_s": 1.0}}


def _figures() -> dict:
    counters = {"pass_data": {"packets": 5000, "bytes": 6_000_000},
                "drop_bad_tag": {"packets": 7, "bytes": 700},
                "drop_replay": {"packets": 0, "bytes": 0}}
    return {"counters": counters, "handshakes": {"HANDSHAKE_OK": 2}, "cookie_replies": 1,
            "reattaches": {"REATTACH_ACCEPT": 2}, "reattach_latency": {"count": 2, "sum_s": 0.09},
            "rekeys": [["denied", "RATE_LIMITED", 1], ["rotated", "KEY_ROTATED", 50]],
            "key_compromises_suspected": 0}


def test_health_prints_and_exits_by_its_verdict(env):
    env.daemon = {"health": _health()}
    r = _run(["health"])
    assert r.stdout.splitlines()[0] == "gateway gw-a: healthy"
    assert "RSS 50.0M, 23 fds" in r.stdout and "single gateway" in r.stdout
    env.daemon = {"health": _health(ok=False)}
    r = CliRunner().invoke(cli, ["health", "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["threads"]["operator"] is False
    r = CliRunner().invoke(cli, ["health"])
    assert r.exit_code == 1 and "NOT healthy: thread 'operator' is not running" in r.stdout


def test_health_without_a_daemon_is_one_error_line(env):
    r = CliRunner().invoke(cli, ["health"])
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.strip() == "error: no gateway daemon answers (test)"


def test_top_once_prints_one_frame_in_80_columns(env):
    env.daemon = {**_daemon(), "health": _health(), "figures": _figures()}
    r = _run(["top", "--once"])
    lines = r.stdout.splitlines()
    assert max(map(len, lines)) <= 80, r.stdout
    assert lines[0].startswith("jvpn top · gw-a · healthy · CPU 1.5%")
    assert "handshakes: HANDSHAKE_OK 2 · cookie replies 1" in r.stdout
    assert "REATTACH_ACCEPT 2 (mean 45 ms)" in r.stdout
    assert "alice-l…" in r.stdout and "drop_bad_tag" in r.stdout
    assert "drop_replay" not in r.stdout  # zero: not shown
    assert "rekeys: denied RATE_LIMITED 1, rotated 50" in r.stdout
    assert "COMPROMISE" not in r.stdout


def test_top_names_a_suspected_key_compromise_and_an_older_daemon(env):
    env.daemon = {**_daemon(), "health": _health(),
                  "figures": {**_figures(), "key_compromises_suspected": 2}}
    assert "KEY COMPROMISE SUSPECTED 2" in _run(["top", "--once"]).stdout
    old = {k: v for k, v in _figures().items() if k not in ("rekeys", "key_compromises_suspected")}
    env.daemon = {**_daemon(), "health": _health(), "figures": old}
    assert "rekeys: none" in _run(["top", "--once"]).stdout


def test_top_once_without_a_daemon_shows_the_kernel(env, monkeypatch):
    monkeypatch.setattr(FakeMaps, "read_counters",
                        lambda self: {"pass_data": {"packets": 3, "bytes": 300}}, raising=False)
    r = _run(["top", "--once"])
    assert views.NO_DAEMON in r.stdout and "pass_data" in r.stdout
    assert "203.0.113.200:51234" in r.stdout


def test_top_runs_live_until_q(env, monkeypatch):
    env.daemon = {**_daemon(), "health": _health(), "figures": _figures()}
    pressed = iter([None, None, "q"])

    @contextlib.contextmanager
    def keys():
        yield lambda _timeout: next(pressed)

    monkeypatch.setattr(top_mod, "_keys", keys)
    r = _run(["top"])
    assert [op for op, _ in env.asked].count("sessions") == 3  # the first frame, then two more
    assert "gw-a" in r.stdout and "drop_bad_tag" in r.stdout


def test_top_ends_quietly_on_ctrl_c(env, monkeypatch):
    env.daemon = {**_daemon(), "health": _health(), "figures": _figures()}

    @contextlib.contextmanager
    def keys():
        def key(_timeout):
            raise KeyboardInterrupt

        yield key

    monkeypatch.setattr(top_mod, "_keys", keys)
    r = _run(["top"])
    assert "interrupted" not in r.output


@pytest.mark.parametrize("row", [
    {}, {"a": 1}, {"a": []}, {"a": [1, "x", None, True, 1.5]},
    {"é": "ü\u2028\n\"\\", "f": float("nan")}, {"n": {"x": 1}}, {1: 2}, {"t": (1, 2)},
    {"b": False, "big": 2**70, "neg": -3, "f": 1e100, "g": 0.1, "inf": [float("inf")]},
    {"l": [[1]]}, {"l": [{"a": 1}]}, {"%s": "%d", "a%": "%%"}, {"x": True, "y": 1.0},
    {"state": abi.STATE_NAMES[abi.STATE_REMOTE], "version": None, "allowed_ips": ["10.0.0.2/32",
                                                                                 "fd00::2/128"]},
])
def test_a_row_is_written_as_json_dumps_with_an_indent_writes_it(row):
    """Issue 15: the fast writer of one row gives json.dumps(row, indent=2)'s text."""
    assert sessions_mod.indented(row) == json.dumps(row, indent=2)
    assert sessions_mod.indented(dict(row)) == json.dumps(row, indent=2)  # its template again


def test_a_listing_gives_the_collector_back_as_it_found_it(env):
    """Issue 15: `sessions` pauses the cyclic collector while it lists
    (two rows a session, none in a cycle), and only while it does."""
    import gc  # noqa: PLC0415

    env.daemon = _daemon()
    assert gc.isenabled()
    _run(["sessions", "--json"])
    assert gc.isenabled()


def test_pages_of_columns_join_the_kernel_rows_as_they_come(env, monkeypatch):
    """Issue 15: the daemon's rows as lists with their names once; the
    join by id keeps each kernel row once, its identity from whichever
    page holds it, and skips the daemon's sessions without an element."""
    asked = []
    lone = f"{SID_B - 1:016x}"  # before SID_B, no element: not listed

    def ask(self, op, socket_path=None, **args):
        asked.append(args)
        head = {k: v for k, v in _daemon()["sessions"].items() if k != "sessions"}
        cols = list(_daemon_row(SID_A, "a", "10.99.0.2"))
        rows = {None: [{**_daemon_row(SID_A, "a", "10.99.0.9"), "session_id": lone}],
                "c1": [_daemon_row(SID_B, "bob", "10.99.0.3")],
                "c2": [_daemon_row(SID_A, "alice", "10.99.0.2")]}[args.get("cursor")]
        nxt = {None: "c1", "c1": "c2", "c2": None}[args.get("cursor")]
        return {**head, "columns": cols, "rows": [list(r.values()) for r in rows], "next": nxt}
    monkeypatch.setattr(app_mod.App, "ask_daemon", ask)
    out = json.loads(_run(["sessions", "--json"]).stdout)["jvtest0"]
    assert [a.get("cursor") for a in asked] == [None, "c1", "c2"]
    assert all(a["columns"] is True for a in asked)
    assert [(r["session_id"], r["peer"]) for r in out] == [
        (f"{SID_B:016x}", "bob"), (f"{SID_A:016x}", "alice")]
    assert out[1]["last_rx_age_s"] == 3.0


def test_a_daemon_listing_out_of_order_is_one_line(env, monkeypatch):
    """The join needs the daemon's ids ascending (they are: one sorted snapshot)."""
    def ask(self, op, socket_path=None, **args):
        rows = [_daemon_row(SID_B, "b", "10.99.0.3"), _daemon_row(SID_B - 1, "a", "10.99.0.2")]
        return {**_daemon()["sessions"], "sessions": rows, "next": None}
    monkeypatch.setattr(app_mod.App, "ask_daemon", ask)
    r = CliRunner().invoke(cli, ["sessions", "--json"])
    assert r.exit_code == 1 and "not in order of id" in r.output


def test_sessions_json_of_rows_that_come_one_at_a_time():
    rows = [{"session_id": "a", "n": 1}, {"session_id": "b", "n": None}]
    writes = []

    class Out:
        write = writes.append

        def flush(self):
            pass
    sessions_mod.stream_json({"x": iter(rows), "y": iter(())}, Out())
    assert "".join(writes) == json.dumps({"x": rows, "y": []}, indent=2) + "\n"


def _one_page(monkeypatch, columns: list, rows: list) -> None:
    """The daemon answers one page of ``columns`` and ``rows``."""
    def ask(self, op, socket_path=None, **args):
        return {**_daemon()["sessions"], "columns": columns, "rows": rows, "next": None}
    monkeypatch.setattr(app_mod.App, "ask_daemon", ask)


def test_a_malformed_page_of_columns_is_one_line(env, monkeypatch):
    _one_page(monkeypatch, ["session_id", "peer"], [["x"]])
    r = CliRunner().invoke(cli, ["sessions", "--json"])
    assert r.exit_code == 1 and "malformed" in r.output and "Traceback" not in r.output


def test_a_page_whose_session_id_is_not_a_string_is_one_line(env, monkeypatch):
    """The join compares ids as strings: a number from the daemon is refused, not a traceback."""
    row = {**_daemon_row(SID_A, "a", "10.99.0.2"), "session_id": SID_A}
    _one_page(monkeypatch, list(row), [list(row.values())])
    r = CliRunner().invoke(cli, ["sessions", "--json"])
    assert r.exit_code == 1 and "malformed" in r.output and "Traceback" not in r.output


def test_a_column_the_daemon_does_not_send_is_null(env, monkeypatch):
    """As a dict row's missing field was (daemon.get): a daemon with fewer columns."""
    row = {k: v for k, v in _daemon_row(SID_A, "a", "10.99.0.2").items() if k != "peer"}
    _one_page(monkeypatch, list(row), [list(row.values())])
    out = json.loads(_run(["sessions", "--json"]).stdout)["jvtest0"]
    assert out[1]["peer"] is None and out[1]["inner"] == "10.99.0.2"
