"""``nas-lab search``, ``nas-lab train-predictor`` and ``nas-lab measure-latency`` (thin over the library)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nas_lab.cli import command

_LIMITS = (("--max-macs", "macs", "millions of MACs"), ("--max-peak-kb", "peak_memory_kb", "peak activation KB"),
           ("--max-latency-ms", "latency_ms", "predicted latency, ms"), ("--max-params", "params", "parameters"))


def _error(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr)


# ---- search ---------------------------------------------------------------------------------------------
def _search_configure(p: argparse.ArgumentParser) -> None:
    p.allow_abbrev = False  # '--max-mac' must not pass for '--max-macs' (nor anything else half-typed)
    p.add_argument("--strategy", choices=("random", "evolution"), default="evolution")
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
    p.add_argument("--predictor", type=Path, default=None, help="predictor file (default: the shipped one)")
    p.add_argument("--latency-table", type=Path, default=None, help="latency table (default: the shipped one)")
    p.add_argument("--json", action="store_true", help="print one JSON object (no progress bar)")
    p.add_argument("--evaluate", action="store_true",
                   help="also measure the real test accuracy of the best arch (supernet, BN recalibration)")


def _search(args: argparse.Namespace) -> int:
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
            print(f"warning: no latency predictions ({err})", file=sys.stderr)
        common = dict(constraints=constraints, space=predictor.space, latency_table=table, seed=args.seed)
        if args.strategy == "evolution":
            with _progress(args.generations, not args.json, "evolution") as bar:
                result = evolution_search(predictor, population=args.population, generations=args.generations,
                                          parent_ratio=args.parent_ratio, mutation_ratio=args.mutation_ratio,
                                          mutate_prob=args.mutate_prob, resolution_prob=args.resolution_prob,
                                          progress=bar.update, **common)
        else:
            n = args.samples or args.population * args.generations
            with _progress(n, not args.json, "random search") as bar:
                result = random_search(predictor, n, progress=bar.update, **common)
    except ConstraintError as err:
        return _error(str(err))
    except (ArtifactError, FileNotFoundError, ValueError) as err:
        return _error(str(err), 1)
    out: dict[str, Any] = result.to_json()
    out.setdefault("latency_ms", None)
    if args.evaluate:
        try:
            from nas_lab.evaluate import evaluate_arch
        except ModuleNotFoundError as err:
            return _error(f"--evaluate needs nas_lab.evaluate.evaluate_arch, which is not available ({err})", 1)
        try:
            out["accuracy"] = float(evaluate_arch(result.arch, "test"))
        except ArtifactError as err:
            return _error(str(err), 1)
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


command("search", "constrained random or evolutionary search with the accuracy predictor",
        configure=_search_configure)(_search)


# ---- train-predictor ------------------------------------------------------------------------------------
def _train_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", type=Path, default=None, help="CSV (default: the shipped accuracy data set)")
    p.add_argument("--out", type=Path, default=None, help="weights file (default: the shipped predictor path)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--no-record", action="store_true", help="do not update data/manifest.json")
    p.add_argument("--json", action="store_true")


def _train(args: argparse.Namespace) -> int:
    import torch

    from nas_lab import accuracy, artifacts

    try:
        dataset = args.dataset or artifacts.verified_path(accuracy.DATASET_NAME, "nas-lab build-accuracy-dataset")
        data = accuracy.load_dataset(dataset)
    except (artifacts.ArtifactError, FileNotFoundError, ValueError) as err:
        return _error(str(err), 1)
    mismatch = accuracy.cost_mismatch(data)
    tolerance = {"macs": 1e-3, "params": 0.5, "peak_memory_kb": 1e-3}  # the CSV rounds to 4 decimals
    if any(v > tolerance[k] for k, v in mismatch.items()):
        print(f"warning: the data set's cost columns differ from the analytic formulas (max |diff| {mismatch})",
              file=sys.stderr)
    torch.set_num_threads(1)  # deterministic and polite; the MLP trains in seconds anyway
    model, report = accuracy.train_and_evaluate(data, args.seed, args.test_fraction, args.epochs)
    out = args.out or artifacts.data_dir() / accuracy.PREDICTOR_NAME
    model.info["dataset"] = Path(dataset).name
    model.save(out)
    recorded = False
    if not args.no_record and Path(out).resolve().parent == artifacts.data_dir().resolve():
        artifacts.record(Path(out).name, accuracy.REBUILD,
                         f"accuracy MLP (3x400) trained on {len(data)} rows, seed {args.seed}; held-out RMSE "
                         f"{report['mlp']['rmse']:.3f} points")
        recorded = True
    if args.json:
        print(json.dumps({"out": str(out), "recorded": recorded, "rows": len(data), "metrics": report}))
        return 0
    print(f"trained on {len(data)} rows (seed {args.seed}, {args.test_fraction:.0%} held out) -> {out}")
    for name, m in report.items():
        extra = f"  Kendall tau {m['kendall_tau']:.3f}  Spearman {m['spearman']:.3f}" if "spearman" in m else ""
        print(f"  {name:9s} RMSE {m['rmse']:.3f}  MAE {m['mae']:.3f} points{extra}")
    return 0


command("train-predictor", "retrain the accuracy MLP from the data set CSV and write the shipped weights",
        configure=_train_configure)(_train)


# ---- measure-latency ------------------------------------------------------------------------------------
def _latency_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: the shipped table path)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-run-time", type=float, default=0.05, help="seconds of timing per layer")
    p.add_argument("--passes", type=int, default=1,
                   help="time everything this many times and keep the fastest (steadier on a shared machine)")
    p.add_argument("--calibrate", type=int, default=20, metavar="N",
                   help="fit scale and per-layer overhead on N random subnets (seed 1; 0: keep the raw sums)")
    p.add_argument("--validate", type=int, default=30, metavar="N",
                   help="compare with the measured latency of N random subnets (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-record", action="store_true", help="do not update data/manifest.json")
    p.add_argument("--json", action="store_true")


def _measure(args: argparse.Namespace) -> int:
    from nas_lab import artifacts, latency

    if args.passes < 1:
        return _error(f"--passes must be at least 1, got {args.passes}")
    table = latency.measure_table(threads=args.threads, min_run_time=args.min_run_time, progress=not args.json,
                                  passes=args.passes)
    if args.calibrate:
        table = latency.calibrate(table, args.calibrate, progress=not args.json)
    if args.validate:
        v = latency.validate(table, args.validate, args.seed, progress=not args.json)
        table.meta["validation"] = {k: v[k] for k in ("n", "within_10pct", "mape_pct", "pearson_r", "seed", "passes",
                                                       "rows")}
    out = args.out or artifacts.data_dir() / latency.TABLE_NAME
    table.save(out)
    if not args.no_record and Path(out).resolve().parent == artifacts.data_dir().resolve():
        artifacts.record(Path(out).name, latency.REBUILD,
                         f"per-layer latency table ({len(table.entries)} layers, {args.threads} thread(s)) "
                         f"measured on {table.meta['machine']}")
    summary = {"out": str(out), "layers": len(table.entries), **{k: table.meta[k] for k in ("machine", "threads")},
               "validation": table.meta.get("validation")}
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{summary['layers']} layers measured ({args.threads} thread(s)) -> {out}")
    if summary["validation"]:
        v = summary["validation"]
        print(f"validation on {v['n']} subnets: {v['within_10pct']:.0%} within +-10%, MAPE {v['mape_pct']:.1f} %, "
              f"Pearson r {v['pearson_r']:.3f}")
    return 0


command("measure-latency", "measure the per-layer latency table of this machine (about a minute)",
        configure=_latency_configure)(_measure)
