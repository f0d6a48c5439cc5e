"""Does the supernet rank architectures the way training them alone does? Scored on the scratch benchmark.

    .venv/bin/python benchmarks/bench_ranking.py [--checkpoint runs/x/checkpoint.pt] [--figure docs/figures/f.png]

For every subnet of the from-scratch mini benchmark (``data/scratch_bench.csv``, or the rows its shard files
hold so far): inherited test accuracy (the shipped supernet, or ``--checkpoint``, BN recalibrated on minival
at the subnet's resolution, as the labs do), the accuracy predictor's prediction, and two free baselines
(parameter count, MACs). Prints Kendall tau, Spearman rho and top-10 overlap of each against the scratch test
accuracy, the gap (scratch - inherited) per resolution x width cell, and draws the scatter. Inherited
accuracies are cached in ``runs/ranking_cache_<weights digest>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from nas_lab import ranking
from nas_lab.artifacts import data_dir
from nas_lab.scratch_bench import ScratchBench


def inherited(bench: ScratchBench, checkpoint: Path | None) -> np.ndarray:
    """Inherited test accuracy of every bench arch (cached per weights file)."""
    from nas_lab import evaluate

    weights = checkpoint or data_dir() / evaluate.WEIGHTS
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    cache_path = Path("runs") / f"ranking_cache_{digest}.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    t0, todo = time.time(), [a for a in bench.archs if str(a) not in cache]
    if todo:
        net = load_weights_file(checkpoint) if checkpoint else evaluate.load_supernet()
    for arch in todo:
        cache[str(arch)] = evaluate.evaluate_arch(arch, "test", net=net)
        cache_path.parent.mkdir(exist_ok=True)
        cache_path.write_text(json.dumps(cache, indent=1))
    if todo:
        print(f"(evaluated {len(todo)} subnets in {time.time() - t0:.0f} s)")
    return np.array([cache[str(a)] for a in bench.archs])


def load_weights_file(path: Path):  # noqa: ANN201
    """A supernet from a training checkpoint (.pt) or exported weights (.safetensors, e.g. an earlier release
    of data/supernet.safetensors: ``git show REV:data/supernet.safetensors > old.safetensors``)."""
    from nas_lab import evaluate

    return evaluate.read_supernet(path) if path.suffix == ".safetensors" else evaluate.load_checkpoint(path)


def predicted(bench: ScratchBench) -> np.ndarray:
    from nas_lab.accuracy import MLPPredictor

    return np.asarray(MLPPredictor.shipped()(bench.archs), float)


def cell_means(values: np.ndarray, cells: list[tuple[int, float]], of: list[tuple[int, float]]) -> np.ndarray:
    """The mean of ``values`` over each cell of ``of`` (``cells`` gives every arch's resolution x width cell)."""
    cells_array = np.array(cells)
    return np.array([values[(cells_array == c).all(axis=1)].mean() for c in of])


def table(estimates: dict[str, np.ndarray], truth: np.ndarray, bench: ScratchBench) -> None:
    """Kendall tau, Spearman, top-10 overlap; then how the tau splits: the order of the 12 cells' means
    (Kendall tau over the cells) and the order inside the cells (mean tau inside a cell)."""
    cells = [(a.resolution, a.width) for a in bench.archs]
    first = sorted(set(cells))
    truth_cells = cell_means(truth, cells, first)
    print(f"\n{'estimate':32s} {'Kendall tau':>11s} {'Spearman':>9s} {'top-10':>7s} {'tau of cell means':>18s} "
          f"{'tau inside cells':>17s}")
    for name, est in estimates.items():
        r = ranking.rank_report(est, truth, k=10)
        est_cells = cell_means(est, cells, first)
        inside = ranking.within_group_tau(est, truth, cells)
        print(f"{name:32s} {r['kendall_tau']:11.3f} {r['spearman']:9.3f} {r['top10_overlap']:7.1f} "
              f"{ranking.kendall_tau(est_cells, truth_cells):18.3f} {inside:17.3f}")
    print(f"(ceiling of a cell-only estimate: the scratch cell means themselves give Kendall tau "
          f"{ranking.kendall_tau(cell_means(truth, cells, cells), truth):.3f})")


def cell_gaps(bench: ScratchBench, est: np.ndarray, truth: np.ndarray, label: str) -> None:
    cells = [f"r{a.resolution} w{a.width}" for a in bench.archs]
    print(f"\ngap per cell, scratch - {label} (points): mean / max (n)")
    for cell, g in ranking.group_gaps(est, truth, cells).items():
        print(f"  {cell:12s} {g['mean_gap']:6.2f} / {g['max_gap']:6.2f}  ({g['n']})")


def full_recipe_gaps(bench: ScratchBench, inherited_by_name: dict[str, np.ndarray]) -> None:
    """The fidelity subset trained with the full 12-epoch recipe: does the 5-epoch bench rank it the same way
    (Kendall tau), and the gap full-recipe scratch - inherited per subnet (median and max) for each supernet."""
    from nas_lab.scratch_bench import ground_truth

    try:
        full, source = ground_truth("full")
    except FileNotFoundError as err:
        print(f"\nfull recipe: {err}")
        return
    index = {str(a): i for i, a in enumerate(bench.archs)}
    rows = [index[str(a)] for a in full.archs]
    short = bench.test_accuracy[rows]
    print(f"\nfull recipe ({source}; {full.recipe}): bench recipe vs full recipe over {len(rows)} subnets: "
          f"Kendall tau {ranking.kendall_tau(short, full.test_accuracy):.3f}")
    names = list(inherited_by_name)
    print(f"{'subnet':72s} {'full':>6s} {'bench':>6s} " + " ".join(f"{'gap ' + str(k):>8s}" for k in range(len(names))))
    gaps = {n: full.test_accuracy - inherited_by_name[n][rows] for n in names}
    for j, a in enumerate(full.archs):
        print(f"{str(a):72s} {full.test_accuracy[j]:6.2f} {short[j]:6.2f} "
              + " ".join(f"{gaps[n][j]:+8.2f}" for n in names))
    for k, n in enumerate(names):
        print(f"gap {k} = full-recipe scratch - {n}: median {np.median(gaps[n]):+.2f}, max {gaps[n].max():+.2f}")


def scatter(path: Path, truth: np.ndarray, est: np.ndarray, bench: ScratchBench, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    res = np.array([a.resolution for a in bench.archs])
    for r in sorted(set(res)):
        ax.scatter(truth[res == r], est[res == r], s=18, label=f"r{r}")
    lo, hi = min(truth.min(), est.min()) - 0.5, max(truth.max(), est.max()) + 0.5
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("trained alone: test accuracy (%)")
    ax.set_ylabel("inherited from the supernet: test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nwrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, action="append", default=[],
                   help="also score these weights (a training checkpoint .pt or exported .safetensors; repeatable), "
                        "side by side with the shipped net")
    p.add_argument("--figure", type=Path, default=None, help="write the inherited-vs-scratch scatter here")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from nas_lab.scratch_bench import ground_truth

    bench, source = ground_truth()  # the final CSV, or the finished rows of its shards
    truth = bench.test_accuracy
    print(f"bench: {source}; recipe {bench.recipe}; scratch test accuracy {truth.min():.2f}-{truth.max():.2f} %")
    inh = inherited(bench, None)
    estimates = {"inherited (shipped supernet)": inh}
    for weights in args.checkpoint:
        estimates[f"inherited ({weights.name})"] = inherited(bench, weights)
    estimates.update({"accuracy predictor": predicted(bench), "parameter count": bench.params.astype(float),
                      "MACs": bench.macs})
    table(estimates, truth, bench)
    for name, est in estimates.items():
        if name.startswith("inherited"):
            cell_gaps(bench, est, truth, name)
    full_recipe_gaps(bench, {n: e for n, e in estimates.items() if n.startswith("inherited")})
    if args.figure:
        r = ranking.rank_report(inh, truth)
        scatter(args.figure, truth, inh, bench, f"{len(truth)} subnets: Kendall tau {r['kendall_tau']:.3f}, "
                f"Spearman {r['spearman']:.3f}")


if __name__ == "__main__":
    main()
