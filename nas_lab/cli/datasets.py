"""``nas-lab build-accuracy-dataset`` and ``build-scratch-bench``: the measured data sets (resumable, shardable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nas_lab.cli.base import add_shard_flag, command, fail, parse_shard


def _threads(n: int) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


# ---- build-accuracy-dataset -----------------------------------------------------------------------------
def _dataset_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=2000, help="number of subnets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="CSV path (default data/accuracy_dataset.csv)")
    add_shard_flag(p, "measure")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")


@command("build-accuracy-dataset", "measure random subnets of the shipped supernet into a CSV (resumable)",
         configure=_dataset_configure)
def build_accuracy_dataset(args: argparse.Namespace) -> int:
    from nas_lab.artifacts import data_dir, record
    from nas_lab.dataset_builder import build

    out = args.out or data_dir() / "accuracy_dataset.csv"
    try:
        shard = parse_shard(args.shard)
        _threads(args.threads)
        build(out, args.n, args.seed, shard=shard)
    except (ValueError, RuntimeError) as err:
        return fail(str(err))
    if args.out is None and shard is None:
        record(out.name, description=f"{args.n} random subnets: minival accuracy after BN recalibration, "
               "MACs, params, peak memory")
    return 0


# ---- build-scratch-bench --------------------------------------------------------------------------------
def _scratch_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", choices=("bench", "full"), default="bench",
                   help="bench: every planned subnet, 5 epochs; full: the six fidelity subnets, 12 epochs")
    p.add_argument("--seed", type=int, default=0, help="plan and training seed")
    p.add_argument("--per-cell", type=int, default=5, help="random subnets per (resolution, width) cell")
    p.add_argument("--out", type=Path, default=None, help="CSV path (default data/scratch_bench[_full].csv)")
    p.add_argument("--runs", type=Path, default=Path("runs/scratch_bench"), help="per-subnet checkpoints")
    add_shard_flag(p, "train")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--merge-only", action="store_true",
                   help="train nothing: write the finished rows (shards included) to the CSV and record it")


@command("build-scratch-bench", "train subnets alone from scratch into the mini benchmark CSV (resumable, shardable)",
         configure=_scratch_configure)
def build_scratch_bench(args: argparse.Namespace) -> int:
    from nas_lab.artifacts import SCRATCH_BENCH_FULL_REBUILD, SCRATCH_BENCH_REBUILD, data_dir, record
    from nas_lab.scratch_bench import BENCH_NAME, FULL_NAME, RECIPES, build, fidelity_archs, planned_archs
    from nas_lab.space import SearchSpace

    space = SearchSpace()
    bench = args.recipe == "bench"
    out = args.out or data_dir() / (BENCH_NAME if bench else FULL_NAME)
    archs = planned_archs(space, args.per_cell, args.seed) if bench else fidelity_archs(space, args.seed)
    try:
        shard = parse_shard(args.shard)
        build(out, RECIPES[args.recipe], archs, args.seed, args.runs, shard, args.threads,
              merge_only=args.merge_only)
    except (ValueError, RuntimeError) as err:
        return fail(str(err))
    if args.out is None and shard is None:
        recipe = RECIPES[args.recipe].describe()
        rows = sum(1 for line in out.read_text().splitlines()[1:] if line.strip())
        resume = SCRATCH_BENCH_REBUILD if bench else SCRATCH_BENCH_FULL_REBUILD
        done = (f"{rows} subnets" if rows == len(archs) else
                f"{rows} of the {len(archs)} planned subnets so far (resume: {resume})")
        record(out.name, description=f"{done} trained alone from scratch ({recipe}): test and "
               "minival accuracy, MACs, params, peak memory, train seconds")
    return 0
