"""jvpn/logs.py and `--log-level`: one line per record on stderr, with the
journal's priority prefix only when stderr is the journal's stream."""

import logging
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from jvpn import logs
from jvpn_cli.main import cli

log = logging.getLogger("jvpn.test")
JVPN_XDP = os.path.join(os.path.dirname(sys.executable), "jvpn-xdp")


def test_plain_lines_carry_the_level_and_respect_the_threshold(capsys):
    logs.setup("warning", env={})
    log.info("not shown")
    log.warning("shown %d", 1)
    log.error("bad")
    assert capsys.readouterr().err.splitlines() == ["warning: shown 1", "error: bad"]


def test_a_message_with_newlines_stays_one_line(capsys):
    logs.setup("debug", env={})
    log.debug("a peer said: %s", "x\n<3>forged")
    assert capsys.readouterr().err == "debug: a peer said: x\\n<3>forged\n"


def test_nul_and_other_controls_cannot_end_a_journal_record():
    """journald's stream reader ends a record at NUL as at \\n; ESC drives a
    terminal. Each is an escape; tab and text beyond ASCII stay."""
    fmt = logs.LineFormatter(journal=True)
    rec = logging.LogRecord("jvpn.x", logging.INFO, __file__, 1, "peer said %s",
                            ("hi\x00<0>FORGED\x1b[2J\x7f\x9b\x01\tété",), None)
    out = fmt.format(rec)
    assert out == "<6>peer said hi\\x00<0>FORGED\\x1b[2J\\x7f\\x9b\\x01\tété"
    assert all(c == "\t" or 0x20 <= ord(c) < 0x7f or ord(c) >= 0xa0 for c in out)


def test_one_line_escapes_every_control_but_tab():
    for c in (*range(0x20), *range(0x7f, 0xa0)):
        shown = logs.one_line(chr(c))
        assert shown == "\t" if c == 9 else shown.startswith("\\"), (c, shown)
    assert logs.one_line("a\\x00") == "a\\\\x00"  # a literal backslash: no ambiguity


def _stderr_to_file(tmp_path, monkeypatch):
    f = open(tmp_path / "stderr", "w")  # noqa: SIM115 - closed by the test
    monkeypatch.setattr("sys.stderr", f)
    st = os.fstat(f.fileno())
    return f, f"{st.st_dev}:{st.st_ino}"


def test_the_journal_gets_syslog_priorities(tmp_path, monkeypatch):
    f, stream = _stderr_to_file(tmp_path, monkeypatch)
    logs.setup("debug", env={"JOURNAL_STREAM": stream})
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
        log.log(level, "m")
    f.flush()
    assert (tmp_path / "stderr").read_text().splitlines() == ["<7>m", "<6>m", "<4>m", "<3>m"]


@pytest.mark.parametrize("journal", ["1:2", "garbage", ""])
def test_another_stream_is_not_the_journal(tmp_path, monkeypatch, journal):
    """$JOURNAL_STREAM inherited from a parent whose stderr was the journal,
    while ours was redirected: plain lines."""
    f, _ = _stderr_to_file(tmp_path, monkeypatch)
    logs.setup("info", env={"JOURNAL_STREAM": journal})
    log.info("m")
    f.flush()
    assert (tmp_path / "stderr").read_text() == "info: m\n"


def test_setting_up_twice_does_not_double_the_lines(capsys):
    logs.setup("info", env={})
    logs.setup("info", env={})
    log.info("once")
    assert capsys.readouterr().err == "info: once\n"


def test_log_level_option_and_environment_variable(tmp_path):
    missing = str(tmp_path / "none")
    r = CliRunner().invoke(cli, ["--log-level", "ERROR", "events", "--file", missing])
    assert r.exit_code == 1 and logging.getLogger("jvpn").level == logging.ERROR
    r = CliRunner(env={"JVPN_LOG_LEVEL": "debug"}).invoke(cli, ["events", "--file", missing])
    assert r.exit_code == 1 and logging.getLogger("jvpn").level == logging.DEBUG
    r = CliRunner().invoke(cli, ["events", "--file", missing])
    assert logging.getLogger("jvpn").level == logging.INFO  # the default
    r = CliRunner().invoke(cli, ["--log-level", "verbose", "events"])
    assert r.exit_code == 2 and "'verbose' is not one of" in r.output


def test_a_commands_last_error_line_is_an_error_in_the_journal(tmp_path, monkeypatch):
    """`jvpn-xdp` exits with one `error: ...` line: in the journal, priority 3."""
    err = tmp_path / "stderr"
    missing = str(tmp_path / "none")
    with open(err, "w") as f:
        st = os.fstat(f.fileno())
        journal = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        r = subprocess.run([JVPN_XDP, "events", "--file", missing], stderr=f, env=journal)
    assert r.returncode == 1
    assert err.read_text().startswith("<3>error: no events file at ")
    plain = subprocess.run([JVPN_XDP, "events", "--file", missing], capture_output=True,
                           text=True, env=journal)  # stderr is a pipe, not the journal
    assert plain.stderr.startswith("error: no events file at ")
