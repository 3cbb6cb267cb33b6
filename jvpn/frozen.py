"""Frozen, slotted dataclasses made from their fields at C speed (issue 15:
a restart decodes a million session records, transports and key epochs).

A frozen dataclass's ``__init__`` sets each field through
``object.__setattr__`` (its own ``__setattr__`` refuses): about 0.1 µs a
field, 3 µs a session record of 28 fields. :func:`positional_maker` gives a
function that takes the fields in ``__init__``'s order and returns the same
instance, written through a twin class of the same slots (plain attribute
stores) whose ``__class__`` then becomes the dataclass: an object of exactly
that class, equal, hashing and reading as one ``__init__`` made (tests in
tests/unit/test_frozen.py compare them field for field).

What it does not do: defaults (every field is given) and ``__post_init__``
(a caller whose class has one does its work itself, or uses the class).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

# the generated function's own names (review k19r4: a field named ``o`` was
# overwritten by the object itself)
_GENERATED = frozenset({"o", "_new", "_twin", "_cls"})


def positional_maker(cls: type) -> Callable[..., Any]:
    """``cls(*values)`` for a frozen dataclass with ``slots=True``, without
    ``__post_init__``. Raises TypeError at once for a class whose layout is
    not its fields' slots (nothing else may be made this way)."""
    names = tuple(f.name for f in fields(cls))
    if getattr(cls, "__slots__", None) != names or cls.__bases__ != (object,):
        raise TypeError(f"{cls.__name__}: not a slotted dataclass of its fields alone")
    if _GENERATED.intersection(names):  # a field would hide the function's own name
        raise TypeError(f"{cls.__name__}: a field named {sorted(_GENERATED & set(names))}")
    twin = type(f"_{cls.__name__}Fields", (object,), {"__slots__": names})
    # a fixed name list (the class's own field names, identifiers): the
    # generated function is one attribute store per field, then the class
    args = ", ".join(names)
    body = "".join(f"    o.{n} = {n}\n" for n in names)
    source = (f"def make({args}):\n    o = _new(_twin)\n{body}"
              f"    o.__class__ = _cls\n    return o\n")
    scope: dict[str, Any] = {"_new": object.__new__, "_twin": twin, "_cls": cls}
    exec(source, scope)  # noqa: S102 - source built above from the dataclass's field names
    make = scope["make"]
    make.__qualname__ = make.__name__ = f"make_{cls.__name__}"
    return make
