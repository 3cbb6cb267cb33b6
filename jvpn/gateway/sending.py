"""The gateway's one way out: every datagram it sends goes through
:class:`Sender`, and no send ever waits for room in the socket's send buffer.

Why (review k16r6 #2): a datagram to a neighbour that never answers ARP/ND
waits in the kernel's neighbour queue (about 3 s) charged to the socket that
sent it. An off-path spoofer that makes the gateway answer on-link sources
nobody holds (cookie replies to spoofed initiations, at the gate's admitted
rate) keeps the buffer full; then every send waited one kernel tick (the
socket's SO_SNDTIMEO, jvpn/gateway/listener.py) and was dropped anyway:
data and control replies to live clients included, and a timer batch of
128 TERMINATEs held the control lock ~0.5 s.

So: every send is MSG_DONTWAIT. A datagram that finds the buffer full is
dropped at once and counted (``buffer_full``), as a full queue further on
would drop it; the protocol already retries what matters (a client sends its
REATTACH_REQ, initiation or rekey again; a lost TERMINATE leaves the client
to learn it from its next request). And replies to a source nobody has
authenticated -- cookie replies, which anyone can make the gateway send --
may hold at most :data:`UNVERIFIED_SHARE` of the buffer (``send_unverified``;
past it: dropped, ``unverified_budget``), so the rest stays for the
sessions' traffic. docs/protocol.md "Sends never wait" argues it.
"""

from __future__ import annotations

import array
import fcntl
import select
import socket
import termios
import threading
from collections import Counter
from collections.abc import Callable

from jvpn.codes import Reason
from jvpn.session import Transport

# Cookie replies may fill at most this share of the send buffer. A reply to
# a source that answers ARP leaves at once (its memory is freed as the NIC
# sends it), so honest cookie replies never come near it; only replies that
# wait for a neighbour that never answers accumulate.
UNVERIFIED_SHARE = 0.25
# The data path (the TUN loop's DATA) sends only while the buffer is less
# than half full -- the kernel's own writability mark for a datagram socket
# (POLLOUT) -- and waits at most DATA_WAIT_MS for it, then drops the packet
# unsealed. So a session that outruns the uplink is paced by it, as a
# blocking send paced it, and the other half stays for the replies the
# control path, the keepalive echoes and the timers send (review k17b #1:
# with every send MSG_DONTWAIT a bulk download kept the buffer full and
# 84-99 % of keepalive replies were dropped).
DATA_WAIT_MS = 4
DROP_REASONS = ("buffer_full", "unverified_budget", "data_share")  # jvpn_send_drops_total{reason}
_WHY = {"buffer_full": ("send", "the send buffer is full: datagram dropped, not waited for"),
        "data_share": ("tun", "the uplink is behind (send buffer half full for a tick): "
                       "inner packet dropped"),
        "unverified_budget": ("cookie-reply", "cookie replies past their share of the send "
                              "buffer: dropped")}


def kernel_buffer_use(sock: socket.socket) -> tuple[int, int]:
    """(bytes the kernel holds for the socket's sends, the buffer's size).
    SIOCOUTQ on a UDP socket is every byte charged to it not yet freed:
    datagrams in the qdisc, the driver and neighbour queues alike."""
    out = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, out, True)  # SIOCOUTQ
    return out[0], sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


class Sender:
    """The socket's sends, socket-shaped (``sendto``, ``sendmsg``: what
    jvpn/tunnel.py ``send_messages`` calls), each MSG_DONTWAIT. Called from
    the UDP, TUN and timer threads at once. ``sock`` may say how full its
    buffer is itself (``send_buffer_use``: the tests' fakes); the kernel's
    socket is asked with SIOCOUTQ."""

    def __init__(self, sock, incidents, stopping: Callable[[], bool] = lambda: False):
        self.sock, self.incidents, self.stopping = sock, incidents, stopping
        self._use: Callable[[], tuple[int, int]] = (
            getattr(sock, "send_buffer_use", None) or (lambda: kernel_buffer_use(sock)))
        self._lock = threading.Lock()
        self._tls = threading.local()
        self.drops: Counter[str] = Counter(dict.fromkeys(DROP_REASONS, 0))

    def room_for_data(self) -> bool:
        """The data path's turn: True once the buffer is less than half
        full, waiting at most DATA_WAIT_MS (never under the control lock:
        the TUN loop's only)."""
        use = getattr(self.sock, "send_buffer_use", None)
        if use is not None:  # the tests' fakes say how full they are
            queued, size = use()
            ok = queued < size // 2
        else:
            ok = bool(self._writable().poll(DATA_WAIT_MS))
        if not ok:
            self._dropped("data_share")
        return ok

    def _writable(self) -> select.poll:
        poller = getattr(self._tls, "poller", None)
        if poller is None:  # one per thread: a poll object is not shared
            poller = self._tls.poller = select.poll()
            poller.register(self.sock.fileno(), select.POLLOUT)
        return poller

    def send(self, msg: bytes, to: Transport) -> None:
        """Best effort (the control path's and the table's sends): any
        other error (a closing socket, an unreachable client) is reported,
        not raised."""
        self._contained(self.sendto, msg, to)

    def send_cookie_reply(self, msg: bytes, to: Transport) -> bool:
        """``send_unverified``, best effort: False if it did not leave."""
        return self._contained(self.send_unverified, msg, to)

    def _contained(self, how: Callable[[bytes, tuple[str, int]], int | bool], msg: bytes,
                   to: Transport) -> bool:
        try:
            return bool(how(msg, (to.addr, to.port)))
        except OSError as e:
            if not self.stopping():  # a stop closes the socket under the sends
                self.incidents.report("send", e)
            return False

    def sendto(self, msg: bytes, dst: tuple[str, int]) -> int:
        """Bytes sent; 0: dropped (the buffer is full). Any other error is raised."""
        try:
            return self.sock.sendto(msg, socket.MSG_DONTWAIT, dst)
        except BlockingIOError:
            self._dropped("buffer_full")
            return 0

    def sendmsg(self, buffers, ancdata, flags: int, dst: tuple[str, int]) -> int:
        """As ``sendto``: one UDP GSO send, dropped whole if it finds no room."""
        try:
            return self.sock.sendmsg(buffers, ancdata, flags | socket.MSG_DONTWAIT, dst)
        except BlockingIOError:
            self._dropped("buffer_full")
            return 0

    def send_unverified(self, msg: bytes, dst: tuple[str, int]) -> bool:
        """A reply to a source nobody authenticated (a cookie reply): sent
        only while such replies hold less than their share of the buffer.
        The check and the send are not atomic: other threads' sends may
        overshoot it by a few datagrams, never by a buffer."""
        queued, size = self._use()
        if queued >= size * UNVERIFIED_SHARE:
            self._dropped("unverified_budget")
            return False
        return self.sendto(msg, dst) > 0

    def _dropped(self, reason: str) -> None:
        with self._lock:
            self.drops[reason] += 1
        # one DaemonError per interval with the count (jvpn/gateway/supervise.py)
        where, why = _WHY[reason]
        self.incidents.note(where, Reason.DATA_DROPPED, why)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.drops)
