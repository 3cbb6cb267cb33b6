"""The client's PreUp / PostUp / PreDown / PostDown hooks, as wg-quick runs
them: each command through ``/bin/sh -c``, in file order, with ``%i``
replaced by the TUN name.

They run as root (``client up`` is root): whoever can write the config file
can run anything. That is why the config loader refuses a client config that
group or others may write (jvpn.files), as it does for the gateway's files.

The name put in for ``%i`` is shell-quoted: the config's interface-name check
(no ``/``, ``:`` or white space) still lets ``;`` or ``$`` through, and a
name should never become shell syntax.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Sequence

from jvpn.errors import JvpnError

SHELL = "/bin/sh"
HOOK_TIMEOUT_S = 120  # a hook that hangs must not hold a teardown (and the DNS restore) forever


class HookFailed(JvpnError):
    """A hook exited non-zero, timed out or could not be started. ``key``:
    PreUp, PostUp, PreDown or PostDown (the message begins with it);
    ``index``: which of them (1-based), to name its line."""

    def __init__(self, message: str, key: str | None = None, index: int | None = None):
        super().__init__(message)
        self.key, self.index = key, index


Runner = Callable[..., subprocess.CompletedProcess]


def expand(command: str, iface: str) -> str:
    """``%i`` becomes the TUN name (quoted for the shell when it needs it)."""
    return command.replace("%i", shlex.quote(iface))


def run_hooks(kind: str, commands: Sequence[str], iface: str, *,
              run: Runner = subprocess.run) -> None:
    """Run ``commands`` in order; the first failure stops the rest and
    raises :class:`HookFailed` (one line naming the hook)."""
    for n, command in enumerate(commands, start=1):
        where = f"{kind} hook {n} of {len(commands)} ({command!r})"
        try:
            done = run([SHELL, "-c", expand(command, iface)], timeout=HOOK_TIMEOUT_S,
                       check=False)
        except subprocess.TimeoutExpired:
            raise HookFailed(f"{where} did not finish within {HOOK_TIMEOUT_S} s",
                             kind, n) from None
        except OSError as e:
            raise HookFailed(f"{where} could not start: {e.strerror or e}", kind, n) from None
        if done.returncode != 0:
            raise HookFailed(f"{where} failed with exit status {done.returncode}", kind, n)
