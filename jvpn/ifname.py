"""The one check of a Linux interface name, for the config files and for
every interface name that enters the gate code (attach, detach, status,
sessions, stats): those names become paths (PIN_ROOT/IFACE, RUN_DIR/
IFACE.json), so "", "." or ".." would name the pin root itself or its parent
and a detach would delete every gate's pins, or bpffs's (review R2)."""

from __future__ import annotations

from jvpn.errors import JvpnError

IFNAMSIZ = 16  # the kernel's limit, with the terminating NUL


class BadInterfaceName(JvpnError):
    """Not a name the kernel would give an interface."""


def problem(name: str) -> str | None:
    """None for a valid name, else why not (as the kernel's dev_valid_name()
    decides: 1..15 characters, not "." or "..", no '/', ':', NUL or space)."""
    if not name:
        return "an interface name cannot be empty"
    if len(name) >= IFNAMSIZ:
        return f"an interface name is at most {IFNAMSIZ - 1} characters, {name!r} has {len(name)}"
    if name in (".", "..") or any(c in name for c in "/:\0") or any(c.isspace() for c in name):
        return f"{name!r} is not a valid interface name"
    return None


def check(name: str) -> str:
    """``name`` if valid, else BadInterfaceName with one line."""
    why = problem(name)
    if why is not None:
        raise BadInterfaceName(why)
    return name
