"""The errors of `gateway up` after the config loaded (a port taken, a
StateDir that is a file, a busy TUN, an events file we may not write) as one
line naming the setting and its file: ``FILE:LINE: Key: message``, or
``FILE: Key (default VALUE): message`` for a key the file does not set, or
the command-line option (``--tun NAME``). The raw errno says none of that.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jvpn.config import GatewayConfig
from jvpn.errors import JvpnError
from jvpn.files import UnsafeFile
from jvpn.gateway.listener import PortInUse
from jvpn.setting_lines import where
from jvpn.tunnel import TunBusy


class StartError(JvpnError):
    """A start-up failure, named by its setting."""


def _path_key(cfg: GatewayConfig, path: str) -> str | None:
    """The setting a failed path belongs to (the path itself, or one under it)."""
    p = os.path.abspath(path)
    for key, value in (("EventsFile", cfg.events_file), ("StateDir", cfg.state_dir)):
        v = os.path.abspath(value)
        if p == v or p.startswith(v + os.sep):
            return key
    return None


def _os_error(e: OSError, cfg: GatewayConfig, config_path: str | Path) -> JvpnError | None:
    key = _path_key(cfg, e.filename) if e.filename else None
    if key is None:
        return None
    value = cfg.events_file if key == "EventsFile" else cfg.state_dir
    why = e.strerror or str(e)
    if isinstance(e, FileExistsError | NotADirectoryError):
        why = f"{why} (a file where a directory must be)"
    return StartError(f"{where(config_path, key, value)}: {e.filename}: {why}")


@contextmanager
def naming_settings(config_path: str | Path, cfg: GatewayConfig, tun_name: str) -> Iterator[None]:
    """Re-raise what the block raises, named by its setting where one applies."""
    try:
        yield
    except PortInUse as e:
        raise StartError(f"{where(config_path, 'ListenPort', cfg.listen_port)}: {e}") from None
    except TunBusy as e:
        raise StartError(f"--tun {tun_name}: {e}") from None
    except UnsafeFile as e:  # its message begins with the path it refused
        key = _path_key(cfg, str(e).split(" ", 1)[0])
        if key is None:
            raise
        value = cfg.events_file if key == "EventsFile" else cfg.state_dir
        raise StartError(f"{where(config_path, key, value)}: {e}") from None
    except OSError as e:
        named = _os_error(e, cfg, config_path)
        if named is None:
            raise
        raise named from None
