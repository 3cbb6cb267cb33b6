"""BPF_PROG_TEST_RUN through libbpf's bpf_prog_test_run_opts (ctypes; bcc 0.26
has no wrapper). Runs an XDP program on a crafted frame inside the kernel,
without any interface: the verdict tests and `jvpn-xdp bench xdp` use it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass

from jvpn.errors import JvpnError

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
ACTION_NAMES = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}


class _TestRunOpts(ctypes.Structure):
    # struct bpf_test_run_opts, libbpf >= 0.7 (sz makes it forward compatible)
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


_libbpf = None


def _lib():
    global _libbpf
    if _libbpf is None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            raise JvpnError(f"libbpf.so.1 not found ({e}): run sudo make setup") from e
        fn = lib.bpf_prog_test_run_opts
        fn.argtypes = [ctypes.c_int, ctypes.POINTER(_TestRunOpts)]
        fn.restype = ctypes.c_int
        _libbpf = lib
    return _libbpf


@dataclass
class RunResult:
    action: int
    duration_ns: int  # kernel-measured average per repetition
    data_out: bytes

    @property
    def action_name(self) -> str:
        return ACTION_NAMES.get(self.action, str(self.action))


def run(prog_fd: int, frame: bytes, repeat: int = 1) -> RunResult:
    data_in = ctypes.create_string_buffer(frame, len(frame))
    out_len = len(frame) + 256
    data_out = ctypes.create_string_buffer(out_len)
    opts = _TestRunOpts(
        sz=ctypes.sizeof(_TestRunOpts),
        data_in=ctypes.cast(data_in, ctypes.c_void_p),
        data_out=ctypes.cast(data_out, ctypes.c_void_p),
        data_size_in=len(frame),
        data_size_out=out_len,
        repeat=max(1, repeat),
    )
    rc = _lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
    if rc != 0:
        err = ctypes.get_errno() or -rc
        raise JvpnError(f"BPF_PROG_TEST_RUN failed: {os.strerror(err)}")
    return RunResult(opts.retval, opts.duration, data_out.raw[: opts.data_size_out])
