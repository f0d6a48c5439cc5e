"""``nas-lab search``: constrained random, evolutionary or REINFORCE search with the accuracy predictor."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nas_lab.cli.base import command, fail, warn

_LIMITS = (("--max-macs", "macs", "millions of MACs"), ("--max-peak-kb", "peak_memory_kb", "peak activation KB"),
           ("--max-latency-ms", "latency_ms", "predicted latency, ms"), ("--max-params", "params", "parameters"))


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr)


# ---- search ---------------------------------------------------------------------------------------------
def _configure(p: argparse.ArgumentParser) -> None:
    p.allow_abbrev = False  # '--max-mac' must not pass for '--max-macs' (nor anything else half-typed)
    p.add_argument("--strategy", choices=("random", "evolution", "rl"), default="evolution")
    for flag, _, what in _LIMITS:
        p.add_argument(flag, type=float, default=None, help=f"upper limit on {what}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--population", type=int, default=100)
    p.add_argument("--generations", type=int, default=500)
    p.add_argument("--parent-ratio", type=float, default=0.25)
    p.add_argument("--mutation-ratio", type=float, default=0.5)
    p.add_argument("--mutate-prob", type=float, default=0.1)
    p.add_argument("--resolution-prob", type=float, default=0.5)
    p.add_argument("--samples", type=int, default=None,
                   help="random search: archs to score (default: population x generations)")
    p.add_argument("--queries", type=int, default=2000,
                   help="rl: distinct archs to score (the same count as random search and evolution report)")
    p.add_argument("--rl-batch-size", type=int, default=16, help="rl: feasible archs drawn per policy step")
    p.add_argument("--rl-lr", type=float, default=0.2, help="rl: Adam learning rate of the policy logits")
    p.add_argument("--entropy-weight", type=float, default=0.05, help="rl: weight of the entropy bonus")
    p.add_argument("--predictor", type=Path, default=None, help="predictor file (default: the shipped one)")
    p.add_argument("--latency-table", type=Path, default=None, help="latency table (default: the shipped one)")
    p.add_argument("--json", action="store_true", help="print one JSON object (no progress bar)")
    p.add_argument("--evaluate", action="store_true",
                   help="also measure the real test accuracy of the best arch (supernet, BN recalibration)")


@command("search", "constrained random, evolutionary or REINFORCE search with the accuracy predictor",
         configure=_configure)
def search(args: argparse.Namespace) -> int:
    from nas_lab.accuracy import MLPPredictor
    from nas_lab.artifacts import ArtifactError
    from nas_lab.latency import LatencyTable
    from nas_lab.search import ConstraintError, CostModel, check_constraints, evolution_search, random_search

    try:
        constraints = check_constraints({key: getattr(args, flag[2:].replace("-", "_")) for flag, key, _ in _LIMITS})
        CostModel().check_reachable({k: v for k, v in constraints.items() if k != "latency_ms"})
        predictor = MLPPredictor.load(args.predictor) if args.predictor else MLPPredictor.shipped()
        table = None
        try:
            table = LatencyTable.load(args.latency_table) if args.latency_table else LatencyTable.shipped()
        except (ArtifactError, FileNotFoundError) as err:
            if "latency_ms" in constraints:
                raise
            warn(f"no latency predictions ({err})")
        common = dict(constraints=constraints, space=predictor.space, latency_table=table, seed=args.seed)
        if args.strategy == "evolution":
            with _progress(args.generations, not args.json, "evolution") as bar:
                result = evolution_search(predictor, population=args.population, generations=args.generations,
                                          parent_ratio=args.parent_ratio, mutation_ratio=args.mutation_ratio,
                                          mutate_prob=args.mutate_prob, resolution_prob=args.resolution_prob,
                                          progress=bar.update, **common)
        elif args.strategy == "rl":
            from nas_lab.controller import rl_search

            if args.queries < 1 or args.rl_batch_size < 1:
                return fail(f"--queries and --rl-batch-size must be >= 1, got {args.queries}, {args.rl_batch_size}")

            with _progress(args.queries, not args.json, "rl") as bar:
                result = rl_search(predictor, queries=args.queries, batch_size=args.rl_batch_size, lr=args.rl_lr,
                                   entropy_weight=args.entropy_weight, progress=bar.update, **common)
        else:
            n = args.samples or args.population * args.generations
            with _progress(n, not args.json, "random search") as bar:
                result = random_search(predictor, n, progress=bar.update, **common)
    except ConstraintError as err:
        return fail(str(err))
    except (ArtifactError, FileNotFoundError, ValueError) as err:
        return fail(str(err), 1)
    out: dict[str, Any] = result.to_json()
    out.setdefault("latency_ms", None)
    if args.evaluate:
        try:
            from nas_lab.evaluate import evaluate_arch
        except ModuleNotFoundError as err:
            return fail(f"--evaluate needs nas_lab.evaluate.evaluate_arch, which is not available ({err})", 1)
        try:
            out["accuracy"] = float(evaluate_arch(result.arch, "test"))
        except ArtifactError as err:
            return fail(str(err), 1)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"best arch:           {out['arch']}")
    print(f"predicted accuracy:  {out['predicted_accuracy']:.2f} %")
    if "accuracy" in out:
        print(f"test accuracy:       {out['accuracy']:.2f} %")
    print(f"MACs:                {out['macs']:.3f} M")
    print(f"peak memory:         {out['peak_memory_kb']:.2f} KB")
    print(f"params:              {out['params']:,}")
    lat = out["latency_ms"]
    print(f"latency (predicted): {'n/a' if lat is None else f'{lat:.3f} ms'}")
    print(f"{out['queries']:,} predictor queries in {out['seconds']:.2f} s ({args.strategy}, seed {args.seed})")
    return 0
