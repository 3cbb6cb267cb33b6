"""The errors of `gateway up` that no single start step names: a port taken
(ListenPort), a busy TUN (the --tun option), and an OS error under the
StateDir or the EventsFile outside the steps build.py names (the instance
lock makes the StateDir first: one that is a file fails there). One line
headed by the setting, ``FILE:LINE: Key: ...`` or ``FILE: Key (default):
...`` (jvpn/config_sources.py); the raw errno says none of that. An error
named already (it begins with the config file) passes unchanged."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from jvpn.config import GatewayConfig
from jvpn.config_sources import StartError, describe
from jvpn.errors import JvpnError
from jvpn.files import UnsafeFile
from jvpn.gateway.listener import PortInUse
from jvpn.tunnel import TunBusy


def _path_key(cfg: GatewayConfig, path: str) -> str | None:
    """The setting a failed path belongs to (the path itself, or one under it)."""
    p = os.path.abspath(path)
    for key, value in (("EventsFile", cfg.events_file), ("StateDir", cfg.state_dir)):
        v = os.path.abspath(value)
        if p == v or p.startswith(v + os.sep):
            return key
    return None


def _value(cfg: GatewayConfig, key: str) -> object:
    return cfg.events_file if key == "EventsFile" else cfg.state_dir


def _named(cfg: GatewayConfig, e: Exception) -> JvpnError | None:
    """``e`` headed by the path setting it concerns, or None (not one of them)."""
    if isinstance(e, OSError):
        key = _path_key(cfg, str(e.filename)) if e.filename else None
        if key is not None:
            value = _value(cfg, key)
            return StartError(f"{cfg.sources.where(key)}: {value}: {describe(e, value)}")
    elif isinstance(e, UnsafeFile):  # its message begins with the path it refused
        key = _path_key(cfg, str(e).split(" ", 1)[0])
        if key is not None:
            return StartError(f"{cfg.sources.where(key)}: {e}")
    return None


@contextmanager
def naming_settings(cfg: GatewayConfig, tun_name: str) -> Iterator[None]:
    """Re-raise what the block raises, named by its setting where one applies."""
    try:
        yield
    except PortInUse as e:
        raise StartError(f"{cfg.sources.where('ListenPort')}: {e}") from None
    except TunBusy as e:
        raise StartError(f"--tun {tun_name}: {e}") from None
    except (OSError, UnsafeFile) as e:
        named = _named(cfg, e)
        if named is None:
            raise
        raise named from None
