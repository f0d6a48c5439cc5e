"""``nas-lab train-predictor``: retrain the accuracy MLP from the accuracy data set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nas_lab.cli.base import add_artifact_flags, command, fail, warn


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", type=Path, default=None, help="CSV (default: the shipped accuracy data set)")
    add_artifact_flags(p, "weights file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--test-fraction", type=float, default=0.2)


@command("train-predictor", "retrain the accuracy MLP from the data set CSV and write the shipped weights",
         configure=_configure)
def train_predictor(args: argparse.Namespace) -> int:
    import torch

    from nas_lab import accuracy, artifacts

    try:
        dataset = args.dataset or artifacts.verified_path(accuracy.DATASET_NAME)
        data = accuracy.load_dataset(dataset)
    except (artifacts.ArtifactError, FileNotFoundError, ValueError) as err:
        return fail(str(err), 1)
    mismatch = accuracy.cost_mismatch(data)
    tolerance = {"macs": 1e-3, "params": 0.5, "peak_memory_kb": 1e-3}  # the CSV rounds to 4 decimals
    if any(v > tolerance[k] for k, v in mismatch.items()):
        warn(f"the data set's cost columns differ from the analytic formulas (max |diff| {mismatch})")
    torch.set_num_threads(1)  # deterministic and polite; the MLP trains in seconds anyway
    model, report = accuracy.train_and_evaluate(data, args.seed, args.test_fraction, args.epochs)
    out = args.out or artifacts.data_dir() / accuracy.PREDICTOR_NAME
    model.info["dataset"] = Path(dataset).name
    model.save(out)
    recorded = False
    if not args.no_record and Path(out).resolve().parent == artifacts.data_dir().resolve():
        artifacts.record(Path(out).name, artifacts.PREDICTOR_REBUILD,
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
