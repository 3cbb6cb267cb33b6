"""bcc's stderr and bytes reprs never reach the operator (jvpn/gate/quiet.py),
and `attach` shows its stages on a terminal only (cli/progress.py)."""

from __future__ import annotations

import io
import os

from rich.console import Console

from jvpn.gate import attach as gate_attach
from jvpn.gate import loader
from jvpn.gate.quiet import captured_stderr, clean, one_line
from jvpn_cli.progress import progress

BCC_ERROR = Exception("Failed to attach BPF to device b'lo': Operation not supported")


def test_bytes_reprs_are_unwrapped():
    assert clean("device b'lo'  and b\"eth0\"\n") == 'device lo and eth0'


def test_the_c_side_line_repeating_the_errno_is_left_out():
    captured = ["bpf: Attaching prog to lo: Operation not supported"]
    assert one_line(BCC_ERROR, captured) == \
        "Failed to attach BPF to device lo: Operation not supported"


def test_a_c_side_line_that_adds_something_is_kept():
    captured = ["libbpf: Kernel error message: native XDP not supported"]
    assert one_line(BCC_ERROR, captured) == ("Failed to attach BPF to device lo: Operation not "
                                             "supported; libbpf: Kernel error message: native "
                                             "XDP not supported")


def test_fd_2_is_captured_and_given_back(capfd):
    with captured_stderr() as lines:
        os.write(2, b"bpf: Attaching prog to lo: Operation not supported\n")
    os.write(2, b"after\n")
    assert lines == ["bpf: Attaching prog to lo: Operation not supported"]
    assert capfd.readouterr().err == "after\n"


class _FakeBPF:
    """bcc as it behaves on lo: native refused (C text on fd 2), generic taken."""

    @staticmethod
    def attach_xdp(dev, fn, flags):
        if flags == gate_attach.MODES["native"]:
            os.write(2, f"bpf: Attaching prog to {dev}: Operation not supported\n".encode())
            raise Exception(f"Failed to attach BPF to device {dev.encode()!r}: "  # noqa: TRY002
                            "Operation not supported")


class _FakeBcc:
    BPF = _FakeBPF


class _Prog:
    fn = object()


def test_native_refused_is_one_clean_note(monkeypatch, capfd):
    monkeypatch.setattr(loader, "_bcc", lambda: _FakeBcc)
    stages = []
    mode, note = gate_attach._attach_with_fallback("lo", _Prog(), "native", stages.append)
    assert mode == "generic"
    assert note == ("native mode refused by the driver (Failed to attach BPF to device lo: "
                    "Operation not supported); running in generic mode")
    assert capfd.readouterr().err == ""
    assert stages == ["attaching (native)", "attaching (generic)"]


def test_progress_on_a_terminal_only():
    tty = Console(file=io.StringIO(), force_terminal=True)
    with progress(tty, "attaching the jvpn gate to eth0") as step:
        step("compiling")
    assert "compiling" in tty.file.getvalue()
    pipe = Console(file=io.StringIO(), force_terminal=False)
    with progress(pipe, "attaching the jvpn gate to eth0") as step:
        step("compiling")
    assert pipe.file.getvalue() == ""
