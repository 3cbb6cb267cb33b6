"""DataDelivery keeps its points in the order their heartbeats were sent,
not the order their echoes came (review r14b A): an on-path attacker that
drops 90 % of the data and holds every odd echo until just after the next
one made each pair look like a count that fell, and the comparison started
again forever. A new count is told by the gateway's incarnation in the
echo (docs/protocol.md "Measuring the active path: data delivered")."""

from __future__ import annotations

from jvpn.client_path_delivery import DataDelivery

GW = 0x1234ABCD  # a gateway's incarnation


def _swapped_pairs(d: DataDelivery, incarnation: int | None, beats: int = 40) -> int:
    """A heartbeat every 50 ms, 20 DATA sent before each, 2 delivered; the
    odd echo is released right after the even one. Returns the last time."""
    delivered = t = 0
    for hb in range(1, beats + 1):
        d.data_sent(20)
        delivered += 2
        t = hb * 50
        d.heartbeat(hb, t)
        if hb % 2 == 0:
            d.echoed(hb, delivered, t + 10, incarnation)
            d.echoed(hb - 1, delivered - 2, t + 10, incarnation)
    return t + 10


def test_swapped_echoes_do_not_hide_data_loss():
    d = DataDelivery(window_ms=2_000, lag_ms=50)
    t = _swapped_pairs(d, GW)
    loss = d.loss(t)
    assert loss is not None and loss > 0.8


def test_swapped_echoes_of_an_older_gateway_do_not_hide_it_either():
    """A 16-byte echo (no incarnation): a count that fell for a *newer*
    heartbeat is still a new count, but an older heartbeat's echo coming
    late is put in its place, not taken for one."""
    d = DataDelivery(window_ms=2_000, lag_ms=50)
    t = _swapped_pairs(d, None)
    loss = d.loss(t)
    assert loss is not None and loss > 0.8


def _steady(d: DataDelivery, first_hb: int, beats: int, counts, incarnations) -> int:
    """Every heartbeat echoed in order; 10 sent, all delivered."""
    t = 0
    for hb in range(first_hb, first_hb + beats):
        d.data_sent(10)
        t = hb * 50
        d.heartbeat(hb, t)
        d.echoed(hb, counts(hb), t + 10, incarnations(hb))
    return t + 10


def test_a_new_incarnation_starts_again_even_with_a_higher_count():
    """A restart whose new count happens to be above the old one is no
    'everything delivered' either: the comparison starts again there."""
    d = DataDelivery(window_ms=2_000, lag_ms=50)
    t = _steady(d, 1, 20, lambda hb: 10 * hb, lambda hb: GW)
    assert d.loss(t) == 0.0
    # the new gateway's count: far above, then delivering nothing
    t = _steady(d, 21, 5, lambda hb: 10_000, lambda hb: GW + 1)
    assert d.incarnation == GW + 1
    assert [p.sample_id for p in d.points] == [21, 22, 23, 24, 25]
    assert d.loss(t) == 1.0


def test_a_count_that_falls_under_a_new_incarnation_is_no_alarm():
    d = DataDelivery(window_ms=2_000, lag_ms=50)
    _steady(d, 1, 20, lambda hb: 10 * hb, lambda hb: GW)
    t = _steady(d, 21, 20, lambda hb: 10 * (hb - 20), lambda hb: GW + 1)
    assert d.loss(t) == 0.0


def test_an_echo_of_the_previous_incarnation_coming_late_is_dropped():
    d = DataDelivery(window_ms=2_000, lag_ms=50)
    for hb in (1, 2, 3):
        d.data_sent(10)
        d.heartbeat(hb, hb * 50)
    d.echoed(1, 100, 60, GW)
    d.echoed(3, 5, 160, GW + 1)  # the new gateway's: starts again
    d.echoed(2, 110, 170, GW)  # the old one's, late: no place
    assert [p.sample_id for p in d.points] == [3]
    assert d.incarnation == GW + 1


def test_a_count_that_does_not_fit_its_place_is_dropped_not_a_restart():
    """Heartbeats reordered on the way to the gateway: the newer one's echo
    counts less than the older one's. Either is true; one is kept."""
    d = DataDelivery(window_ms=2_000, lag_ms=50)
    for hb in (1, 2, 3):
        d.data_sent(10)
        d.heartbeat(hb, hb * 50)
    d.echoed(1, 100, 60, GW)
    d.echoed(2, 120, 110, GW)
    d.echoed(3, 115, 160, GW)  # newer heartbeat, a lower count, same incarnation
    assert [(p.sample_id, p.delivered) for p in d.points] == [(1, 100), (2, 120)]
