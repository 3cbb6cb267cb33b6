"""The order ``client up`` sets things up in and ``down`` undoes them:

    up:    PreUp -> handshake + TUN -> (routes) -> DNS -> PostUp
    down:  PreDown -> DNS restore -> (routes undo) -> TUN close -> PostDown

Each :class:`Step` pairs a setup with its undo; :class:`Lifecycle` runs the
setups in order and the undos of the ones that completed in reverse, so the
hooks are steps too: (PreUp, PostDown) brackets everything, (PostUp,
PreDown) sits innermost. A step that fails during up stops it: what was set
up is undone and the first error is raised. A failing undo is reported and
the others still run (a broken PreDown must not leave DNS pointing into a
dead tunnel). Another module adds a step (routes) with one list entry in
:func:`client_steps`.

SIGTERM / SIGINT / SIGHUP only set a flag and ask the agent to stop
(:class:`Signals`; SIGHUP is what a client started in a terminal gets when
that terminal or SSH session goes away: left at its default it would kill
the client with nothing undone, DNS pointing into a dead tunnel):
nothing is torn down inside a signal handler, and no step is cut in half
(a DNS file half switched, a hook killed between two commands). During up
the flag is looked at between steps: the next step does not start,
:class:`Stopped` is raised and what was set up is undone. A signal during a
step takes effect when it ends (the handshake gives up after its attempts,
about 10 s; a hook when it returns). After up, the main thread wakes from
``agent.wait()`` and runs the undos.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

from jvpn.client_dns import Backend
from jvpn.client_hooks import run_hooks
from jvpn.config import ClientConfig
from jvpn.errors import JvpnError


class Stopped(JvpnError):
    """SIGTERM, SIGINT or SIGHUP arrived while the client was coming up."""


@dataclass(frozen=True)
class Step:
    name: str
    setup: Callable[[], None]
    undo: Callable[[], None] | None = None


class Lifecycle:
    def __init__(self, steps: list[Step], report: Callable[[str, Exception], None],
                 stopping: Callable[[], bool] = lambda: False):
        self.steps, self.report, self.stopping = steps, report, stopping
        self._done: list[Step] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        try:
            for step in self.steps:
                self._check_stop()
                step.setup()
                self._done.append(step)
            self._check_stop()
        except BaseException:
            self.down()
            raise

    def _check_stop(self) -> None:
        if self.stopping():
            raise Stopped("stopped by a signal while coming up; what was set up is undone")

    def down(self) -> None:
        """Undo every completed step, last first; runs once."""
        with self._lock:
            done, self._done = self._done, []
        for step in reversed(done):
            if step.undo is None:
                continue
            try:
                step.undo()
            except Exception as e:  # noqa: BLE001 - reported; the other undos still run
                # a report that fails (stderr on a terminal gone with the SIGHUP
                # that stopped us: EIO) must not skip the undos after it either
                with contextlib.suppress(Exception):
                    self.report(step.name, e)


def client_steps(cfg: ClientConfig, agent, dns: Backend | None,
                 hooks_run=run_hooks) -> list[Step]:
    """The client's steps in order (the module docstring). ``agent``: a
    :class:`jvpn.client.Client`; ``dns``: None when the config has no DNS."""
    h, tun = cfg.hooks, cfg.tun_name
    steps = [
        Step("PreUp/PostDown", lambda: hooks_run("PreUp", h.pre_up, tun),
             lambda: hooks_run("PostDown", h.post_down, tun)),
        # the tunnel step installs the routes (AllowedIPs, jvpn.client_routes) after
        # the TUN exists, before DNS; its undo removes them before the TUN goes
        Step("tunnel", lambda: open_tunnel(agent), lambda: close_tunnel(agent)),
    ]
    if dns is not None:
        steps.append(Step(f"DNS ({dns.name})", dns.apply, dns.restore))
    steps.append(Step("PostUp/PreDown", lambda: hooks_run("PostUp", h.post_up, tun),
                      lambda: hooks_run("PreDown", h.pre_down, tun)))
    return steps


def open_tunnel(agent) -> None:
    """``agent.up()``; if it fails half way (a route refused after the TUN
    was made), what it made is undone before the error goes on."""
    try:
        agent.up()
    except BaseException:
        with contextlib.suppress(JvpnError):  # the first error is the one the operator acts on
            close_tunnel(agent)
        raise


def close_tunnel(agent) -> None:
    """The agent's routes removed, its socket and TUN closed, and the TUN
    device gone before PostDown runs: the thread blocked reading the TUN
    holds the device open past ``close()``; deleting the link wakes it (and
    removes the device). A route or rule that could not be removed is raised
    after the rest is done (the lifecycle reports it)."""
    tun = getattr(agent, "tun", None)
    left = agent.down() or []
    if tun is not None:
        _delete_link(tun.name)
    if left:
        raise JvpnError("could not remove " + "; ".join(left))


def _delete_link(name: str) -> None:
    from pyroute2 import IPRoute  # noqa: PLC0415 - netlink only when a TUN was made
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415

    with IPRoute() as ipr:
        for idx in ipr.link_lookup(ifname=name):
            try:
                ipr.link("del", index=idx)
            except NetlinkError:
                pass  # gone meanwhile


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Signals:
    """SIGTERM/SIGINT/SIGHUP: remembered, and ``on_stop()`` (the agent's loops end)."""

    def __init__(self, on_stop: Callable[[], None]):
        self.on_stop = on_stop
        self.stopped = threading.Event()
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, _signum, _frame) -> None:
        self.stopped.set()
        self.on_stop()
