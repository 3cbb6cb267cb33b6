"""File names for interface names: the pin directory under bpffs and the run
records are named after the interface, and not every interface name is a
name bpffs takes.

bpffs refuses any name with a '.' (EPERM: names with dots are reserved for
the kernel's own files), and VLANs are commonly named ``eth0.100``; a '.' in
a run-dir name would also make ``x.owners.json`` both the owners document of
``x`` and the record of an interface named ``x.owners``. So a '.' is written
``_2e``. For that to be reversible and collision-free, a '_' that is followed
by two hex digits in the name is written ``_5f``; every other character
(and every other '_') stays as it is, so the names jvpn has always used
(``eth0``, ``gw_0``) keep their pin directories and records.

Why that is injective: in an encoded name, every '_' followed by two hex
digits is an escape. A '_' kept as it is was not followed by two hex digits
in the name, and what follows it in the encoded name is an escape (which
starts with '_', not a hex digit) or the name's own characters (a non-hex
one, or one hex digit and then a non-hex one or an escape).
"""

from __future__ import annotations

import re

_HEX = "0123456789abcdefABCDEF"
_ESCAPED = {".": "_2e"}  # the characters bpffs refuses (kernel: bpf_lookup)
_ESCAPE = re.compile(r"_([0-9a-fA-F]{2})")


def _needs_escape(name: str, i: int) -> bool:
    """Whether the '_' at ``i`` would read as an escape: two hex digits follow."""
    return len(name) >= i + 3 and name[i + 1] in _HEX and name[i + 2] in _HEX


def encode(ifname: str) -> str:
    """The file name for interface ``ifname`` (no '.' in it; see above)."""
    out = []
    for i, c in enumerate(ifname):
        if c in _ESCAPED:
            out.append(_ESCAPED[c])
        elif c == "_" and _needs_escape(ifname, i):
            out.append("_5f")
        else:
            out.append(c)
    return "".join(out)


def decode(stem: str) -> str:
    """The interface name of a file name made by :func:`encode`."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), stem)
