"""Review k21r5: the gateway's contained-error reports (``Incidents``) and
its event tally measure intervals on the gateway's timer clock, never set
back. A DataPath or RekeyControl built without ``incidents`` made its own
Incidents, and an EventTally built without a clock took a default one:
the daemon always passes its own, so no test saw what those defaults
were (one going back to the wall clock passed every test). They have no
default now: whoever builds one names the clock (the daemon's wiring is
tests/unit/test_elapsed_clock*.py's)."""

from __future__ import annotations

import inspect

import pytest

from jvpn.gateway.datapath import DataPath
from jvpn.gateway.rekey_control import RekeyControl
from jvpn.gateway.supervise import Incidents
from jvpn.gateway.tally import EventTally


@pytest.mark.parametrize(("made", "argument"), [
    (DataPath, "incidents"), (RekeyControl, "incidents"), (EventTally, "timer_ms"),
    (Incidents, "timer_ms")])
def test_the_clock_or_what_holds_it_has_no_default(made, argument):
    param = inspect.signature(made).parameters[argument]
    assert param.default is inspect.Parameter.empty, f"{made.__name__}: {argument} has a default"


def test_an_event_tally_without_a_clock_is_refused():
    with pytest.raises(TypeError):
        EventTally()  # type: ignore[call-arg]
