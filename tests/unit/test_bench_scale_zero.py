"""Review k20r5 (fixed) of ab60cec (jvpn/bench/scale_xdp.py ``paired``), F5: a pair
with a 0 ns figure now gives no ratio, but the size's own figure
(``xdp_valid_ns``, the median of the subject's sets) and the reference's
(``xdp_valid_ref_ns``) still count the 0 figures: 5 of 9 sets that measured
nothing report this size's cost as 0 ns beside a ratio of 1.5 taken from
the other 4 (and a ratio from 1 pair of 9 is reported as the median)."""

from __future__ import annotations

from test_bench_scale_edges import _Subject

from jvpn.bench import scale_xdp


def test_a_majority_of_zero_figures_is_no_figure():
    ref = _Subject([(100, 20)] * 9)
    big = _Subject([(0, 20)] * 5 + [(150, 20)] * 4)
    out = scale_xdp.paired(ref, big, pairs=9)
    assert out["xdp_valid_ns"] != 0, out  # "0 ns at this size", measured by nothing
