"""Ranking metrics against hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from nas_lab.ranking import group_gaps, rank_report, top_k_overlap


def test_top_k_overlap_by_hand() -> None:
    truth = [90, 80, 70, 60, 50]
    assert top_k_overlap([5, 4, 3, 2, 1], truth, k=2) == 1.0
    assert top_k_overlap([1, 2, 3, 4, 5], truth, k=2) == 0.0
    assert top_k_overlap([5, 1, 4, 2, 3], truth, k=2) == 0.5          # top-2 by estimate: {0, 2}; truth {0, 1}
    assert top_k_overlap([1, 2], [2, 1], k=10) == 1.0                 # k larger than n: everything overlaps
    with pytest.raises(ValueError, match="3 values"):
        top_k_overlap([1, 2, 3], [1, 2])


def test_rank_report_signs_and_perfect_order() -> None:
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    same = rank_report(truth * 10, truth, k=2)
    assert same["kendall_tau"] == pytest.approx(1.0) and same["spearman"] == pytest.approx(1.0)
    assert same["top2_overlap"] == 1.0 and same["n"] == 4
    backwards = rank_report(-truth, truth, k=2)
    assert backwards["kendall_tau"] == pytest.approx(-1.0) and backwards["top2_overlap"] == 0.0
    # one swapped pair of 4: 5 concordant, 1 discordant -> tau = 4/6
    assert rank_report([1, 2, 4, 3], truth)["kendall_tau"] == pytest.approx(4 / 6)


def test_group_gaps_by_hand() -> None:
    gaps = group_gaps([88, 90, 85], [89, 90.5, 88], ["a", "a", "b"])
    assert gaps["a"] == {"mean_gap": pytest.approx(0.75), "max_gap": pytest.approx(1.0), "n": 2}
    assert gaps["b"]["mean_gap"] == pytest.approx(3.0) and gaps["b"]["n"] == 1


def test_within_group_tau_by_hand() -> None:
    from nas_lab.ranking import within_group_tau

    truth = [1, 2, 3, 10, 11, 12]
    groups = ["a", "a", "a", "b", "b", "b"]
    # an estimate that only sorts the groups: perfect overall order between groups, reversed inside them
    est = [3, 2, 1, 6, 5, 4]
    assert rank_report(est, truth)["kendall_tau"] == pytest.approx(3 / 15)   # 9 concordant pairs, 6 discordant
    assert within_group_tau(est, truth, groups) == pytest.approx(-1.0)
    assert within_group_tau([1, 2, 3, 4, 6, 5], truth, groups) == pytest.approx((1 + 1 / 3) / 2)
    # groups below min_size, or constant inside, do not count; none counting -> nan
    assert within_group_tau([1, 2, 3, 4, 4, 4], truth, groups) == pytest.approx(1.0)
    assert np.isnan(within_group_tau([1, 2], [1, 2], ["a", "b"]))
    with pytest.raises(ValueError, match="3, 3 and 2"):
        within_group_tau([1, 2, 3], [1, 2, 3], ["a", "b"])
