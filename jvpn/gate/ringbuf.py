"""The XDP program's security events from the pinned ring buffer."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from jvpn.errors import JvpnError, NotAttached
from jvpn.gate import abi, loader


class EventReader:
    """The XDP program's security events from the pinned ring buffer, read by
    any process (the daemon, `jvpn-xdp events --xdp`)."""

    def __init__(self, pins: Path):
        bcc = loader._bcc()
        path = Path(pins) / "events"
        self.fd = loader._lib().bpf_obj_get(str(path).encode())
        if self.fd < 0:
            raise NotAttached(f"cannot open {path}: is jvpn attached?")
        self._got: list = []

        def _cb(_ctx, data, size):
            self._got.append(abi.Event.from_buffer_copy(ctypes.string_at(data, size)))
            return 0

        self._cb = bcc.libbcc._RINGBUF_CB_TYPE(_cb)  # keep a reference: C holds the pointer
        self._rb = loader._lib().bpf_new_ringbuf(self.fd, self._cb, None)
        if not self._rb:
            os.close(self.fd)
            raise JvpnError(f"cannot open the ring buffer {path}")

    def poll(self, timeout_ms: int = 200) -> list:
        loader._lib().bpf_poll_ringbuf(self._rb, timeout_ms)
        got, self._got = self._got, []
        return got

    def close(self) -> None:
        if self._rb:
            loader._lib().bpf_free_ringbuf(self._rb)
            self._rb = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
