"""How much of the scratch bench's order inside a resolution x width cell is the training seed?

    .venv/bin/python benchmarks/bench_seed_noise.py --shard 0/2 &
    .venv/bin/python benchmarks/bench_seed_noise.py --shard 1/2
    .venv/bin/python benchmarks/bench_seed_noise.py --report

Retrains the bench subnets of some cells (default: the four width-0.5 cells, the cheapest to train) with the bench
recipe and another seed (initialisation and data order), then compares the two seeds: Kendall tau inside each cell
and over all the retrained subnets, and the spread of the difference. The inside-a-cell tau between two seeds of
the *same* recipe is the most any estimate can reach against the one-seed bench there. Training is the bench
builder's own (``scratch_bench.build``): resumable per subnet (rows in ``runs/scratch_bench/seed<S>.csv`` and its
shard files) and per epoch (checkpoints under ``runs/scratch_bench/seed<S>/``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from nas_lab import ranking
from nas_lab.scratch_bench import RECIPES, build, load_scratch_bench, read_bench

RUNS = Path("runs/scratch_bench")


def cells_of(text: str) -> list[tuple[int, float]]:
    return [(int(r), float(w)) for r, w in (c.split(":") for c in text.split(","))]


def report(bench, archs, seed: int) -> None:  # noqa: ANN001
    out = RUNS / f"seed{seed}.csv"
    build(out, RECIPES["bench"], archs, seed, runs=RUNS / f"seed{seed}", progress=False, merge_only=True)
    retrained = read_bench(out) if len(out.read_text().splitlines()) > 1 else None   # header only: none yet
    rows = dict(zip(map(str, retrained.archs), retrained.test_accuracy)) if retrained else {}
    index = {str(a): i for i, a in enumerate(bench.archs)}
    got = [a for a in archs if str(a) in rows]
    if len(got) < 2:
        print(f"only {len(got)} of {len(archs)} subnets retrained so far")
        return
    first = np.array([bench.test_accuracy[index[str(a)]] for a in got])
    second = np.array([rows[str(a)] for a in got])
    cells = [(a.resolution, a.width) for a in got]
    diff = second - first
    print(f"{len(got)} of {len(archs)} subnets retrained with seed {seed} (bench recipe {bench.recipe})")
    print(f"test accuracy, seed {seed} - seed {bench.seed}: mean {diff.mean():+.2f}, sd {diff.std(ddof=1):.2f}, "
          f"max |diff| {np.abs(diff).max():.2f} points")
    print(f"Kendall tau between the seeds over all {len(got)}: {ranking.kendall_tau(first, second):.3f}")
    for cell in sorted(set(cells)):
        m = np.array([c == cell for c in cells])
        if m.sum() >= 3:
            print(f"  r{cell[0]} w{cell[1]}: n {m.sum()}, tau {ranking.kendall_tau(first[m], second[m]):+.3f}, "
                  f"sd of seed {bench.seed} {first[m].std():.2f}, sd of the seed difference {diff[m].std(ddof=1):.2f}")
    print(f"mean tau inside cells between the two seeds: {ranking.within_group_tau(first, second, cells):.3f}")
    noise_ceiling(bench, float(diff.std(ddof=1) / np.sqrt(2)))


def noise_ceiling(bench, sigma: float, draws: int = 2000) -> None:  # noqa: ANN001
    """What a perfect estimate (each subnet's accuracy averaged over training seeds) can expect to score against
    the one-seed bench, if one run's seed moves a subnet by ``sigma`` (normal): simulated over the whole bench.

    The bench's own values hold that noise too, so the simulated true means are the bench's values with the
    deviations from each cell's mean shrunk by sqrt(1 - sigma^2 / V), V the variance inside cells pooled over
    the cells (the cell means kept); the bench's values unshrunk as the truth give an upper bound beside it."""
    x = bench.test_accuracy
    cells = [(a.resolution, a.width) for a in bench.archs]
    masks = [np.array([c == cell for c in cells]) for cell in sorted(set(cells))]
    pooled = sum(((x[m] - x[m].mean()) ** 2).sum() for m in masks) / (len(x) - len(masks))
    k = np.sqrt(max(0.0, 1 - sigma ** 2 / pooled))
    shrunk = x.copy()
    for m in masks:
        shrunk[m] = x[m].mean() + k * (x[m] - x[m].mean())
    print(f"\nvariance inside cells pooled over the {len(masks)} cells: {pooled:.3f} (sd {np.sqrt(pooled):.2f}), "
          f"of which one run's seed noise is {sigma ** 2:.3f}: deviations shrunk by {k:.2f}")
    rng = np.random.default_rng(0)
    print(f"\nnoise ceiling over the whole bench ({len(x)} subnets), one run's seed sd {sigma:.2f} points, "
          f"{draws} draws: Kendall tau (inside cells) a perfect estimate can expect against one seed")
    for name, truth in (("true means = bench shrunk inside cells", shrunk),
                        ("true means = bench as is (upper bound)", x)):
        taus, inside = [], []
        for _ in range(draws):
            one_seed = truth + rng.normal(0.0, sigma, len(truth))
            taus.append(ranking.kendall_tau(truth, one_seed))
            inside.append(ranking.within_group_tau(truth, one_seed, cells))
        print(f"  {name:40s} tau {np.mean(taus):.3f} (5-95 %: {np.percentile(taus, 5):.3f}-"
              f"{np.percentile(taus, 95):.3f}), inside cells {np.mean(inside):.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", default="16:0.5,20:0.5,24:0.5,28:0.5", help="resolution:width,... to retrain")
    p.add_argument("--seed", type=int, default=1, help="the second training seed")
    p.add_argument("--shard", default="0/1", help="I/K: retrain every K-th subnet from I")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report", action="store_true", help="train nothing, compare what is done")
    args = p.parse_args()
    bench = load_scratch_bench()
    wanted = set(cells_of(args.cells))
    archs = [a for a in bench.archs if (a.resolution, a.width) in wanted]
    if args.report:
        report(bench, archs, args.seed)
        return
    index, count = (int(x) for x in args.shard.split("/"))
    build(RUNS / f"seed{args.seed}.csv", RECIPES["bench"], archs, args.seed, runs=RUNS / f"seed{args.seed}",
          shard=(index, count), threads=args.threads)


if __name__ == "__main__":
    main()
