"""How well an estimate ranks architectures against a ground truth: the numbers NAS papers report.

An estimate (inherited accuracy, a predictor, a zero-cost proxy, the parameter count) is only as useful as
the order it puts architectures in. :func:`rank_report` gives Kendall's tau-b and Spearman's rho (signed:
a proxy that ranks backwards shows a negative value), the overlap of the top-k sets, and, when the
estimate is itself an accuracy, the gap truth - estimate per group of architectures (e.g. per resolution x
width cell), which tells *where* in the space an estimate is wrong.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np

from nas_lab.accuracy import kendall_tau, spearman


def top_k_overlap(estimate: Sequence[float], truth: Sequence[float], k: int = 10) -> float:
    """Fraction of the true top-k (highest truth) that is also in the estimate's top-k; ties broken by index."""
    estimate, truth = np.asarray(estimate, float), np.asarray(truth, float)
    if len(estimate) != len(truth):
        raise ValueError(f"estimate has {len(estimate)} values, truth {len(truth)}")
    k = min(k, len(truth))
    top_est = set(np.argsort(-estimate, kind="stable")[:k].tolist())
    top_true = set(np.argsort(-truth, kind="stable")[:k].tolist())
    return len(top_est & top_true) / k


def group_gaps(estimate: Sequence[float], truth: Sequence[float],
               groups: Sequence[Hashable]) -> dict[Hashable, dict[str, float]]:
    """Per group: mean and max of ``truth - estimate`` (points) and the group's size."""
    rows: dict[Hashable, list[float]] = defaultdict(list)
    for e, t, g in zip(estimate, truth, groups):
        rows[g].append(float(t) - float(e))
    return {g: {"mean_gap": float(np.mean(v)), "max_gap": float(np.max(v)), "n": len(v)}
            for g, v in sorted(rows.items(), key=lambda kv: str(kv[0]))}


def within_group_tau(estimate: Sequence[float], truth: Sequence[float], groups: Sequence[Hashable],
                     min_size: int = 3) -> float:
    """Mean Kendall tau-b *inside* the groups (e.g. one per resolution), each group weighted equally.

    A group counts when it has at least ``min_size`` members and its tau is defined (neither the estimate nor
    the truth is constant on it); nan when no group counts. An estimate that only sorts the groups (a proxy
    that follows the resolution) scores high overall but near zero here.
    """
    estimate, truth = np.asarray(estimate, float), np.asarray(truth, float)
    if not len(estimate) == len(truth) == len(groups):
        raise ValueError(f"estimate, truth and groups have {len(estimate)}, {len(truth)} and {len(groups)} values")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    taus = [kendall_tau(estimate[idx], truth[idx]) for idx in members.values() if len(idx) >= min_size]
    taus = [t for t in taus if not np.isnan(t)]
    return float(np.mean(taus)) if taus else float("nan")


def rank_report(estimate: Sequence[float], truth: Sequence[float], k: int = 10) -> dict[str, float]:
    """Kendall tau-b, Spearman rho, top-k overlap and the number of architectures."""
    estimate, truth = np.asarray(estimate, float), np.asarray(truth, float)
    return {"kendall_tau": kendall_tau(estimate, truth), "spearman": spearman(estimate, truth),
            f"top{k}_overlap": top_k_overlap(estimate, truth, k), "n": len(truth)}
