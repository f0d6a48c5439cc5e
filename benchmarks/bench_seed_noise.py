"""How much of the scratch bench's order inside a resolution x width cell is the training seed?

    .venv/bin/python benchmarks/bench_seed_noise.py --shard 0/2 & .venv/bin/python benchmarks/bench_seed_noise.py --shard 1/2
    .venv/bin/python benchmarks/bench_seed_noise.py --report

Retrains the bench subnets of some cells (default: the four width-0.5 cells, the cheapest to train) with the bench
recipe and another seed (initialisation and data order), then compares the two seeds: Kendall tau inside each cell
and over all the retrained subnets, and the spread of the difference. The inside-a-cell tau between two seeds of
the *same* recipe is the most any estimate can reach against the one-seed bench there. Resumable: every finished
subnet is a line in ``runs/scratch_bench/seed<S>_rows.shard<I>of<K>.jsonl``; an unfinished one resumes from its
per-epoch checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nas_lab import ranking
from nas_lab.scratch_bench import RECIPES, load_scratch_bench, train_one

RUNS = Path("runs/scratch_bench")


def cells_of(text: str) -> list[tuple[int, float]]:
    return [(int(r), float(w)) for r, w in (c.split(":") for c in text.split(","))]


def rows_path(seed: int, index: int, count: int) -> Path:
    return RUNS / f"seed{seed}_rows.shard{index}of{count}.jsonl"


def done_rows(seed: int) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for path in sorted(RUNS.glob(f"seed{seed}_rows.shard*of*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["arch"]] = row
    return rows


def report(bench, archs, seed: int) -> None:
    rows = done_rows(seed)
    index = {str(a): i for i, a in enumerate(bench.archs)}
    got = [a for a in archs if str(a) in rows]
    if len(got) < 2:
        print(f"only {len(got)} of {len(archs)} subnets retrained so far")
        return
    first = np.array([bench.test_accuracy[index[str(a)]] for a in got])
    second = np.array([float(rows[str(a)]["test_accuracy"]) for a in got])
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
    recipe = RECIPES["bench"]
    out = rows_path(args.seed, index, count)
    out.parent.mkdir(parents=True, exist_ok=True)
    for arch in archs[index::count]:
        if str(arch) in done_rows(args.seed):
            continue
        row = train_one(arch, recipe, args.seed, RUNS / f"bench_seed{args.seed}" / str(arch), threads=args.threads)
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{arch}: test {row['test_accuracy']} %", flush=True)


if __name__ == "__main__":
    main()
