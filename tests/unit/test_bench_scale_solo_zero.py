"""Review k20r6 of 6d76752 (jvpn/bench/scale_xdp.py), F4: ``paired`` now
gives a size's figures from the pairs that measured and none unless half
of them did (review k20r5 F5), but ``solo``, the reference size's own row
in the same table (jvpn/bench/scale.py: the smallest N when it is the only
one, or measured alone), still takes the median over every set, 0 ns
ones included: 5 sets of 9 that measured nothing report the size's cost as
"0 ns", and 4 of 9 pull the median to the least figure measured."""

from __future__ import annotations

from test_bench_scale_edges import _Subject

from jvpn.bench import scale_xdp


def test_solo_a_majority_of_zero_figures_is_no_figure():
    out = scale_xdp.solo(_Subject([(0, 20)] * 5 + [(150, 20)] * 4), sets=9)
    assert out["xdp_valid_ns"] != 0, out  # "0 ns at this size", measured by nothing


def test_solo_zero_figures_do_not_pull_the_median():
    figures = [(0, 20)] * 4 + [(100, 20), (150, 20), (160, 20), (170, 20), (180, 20)]
    out = scale_xdp.solo(_Subject(figures), sets=9)
    assert out["xdp_valid_ns"] == 160, out  # the median of the 5 that measured
