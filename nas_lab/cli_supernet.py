"""``nas-lab`` subcommands around the supernet: train-supernet, export-supernet, evaluate, build-accuracy-dataset."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nas_lab.cli import command

# Two runs: 12 sandwich epochs, then a warm restart from those weights with more random subnets per step.
SUPERNET_REBUILD = ("nas-lab train-supernet --epochs 12 --warmup-epochs 1 --threads 2 --out runs/supernet && "
                    "nas-lab export-supernet runs/supernet/checkpoint.pt && "
                    "nas-lab train-supernet --init-from data/supernet.safetensors --epochs 6 --warmup-epochs 0 "
                    "--lr 0.04 --num-random 4 --seed 1 --threads 2 --out runs/supernet_phase2 && "
                    "nas-lab export-supernet runs/supernet_phase2/checkpoint.pt")
DATASET_REBUILD = "nas-lab build-accuracy-dataset --n 2000 --seed 0"


def _train_configure(p: argparse.ArgumentParser) -> None:
    from nas_lab.train import add_arguments
    add_arguments(p)


def _train(args: argparse.Namespace) -> int:
    from nas_lab.train import run_from_args
    run_from_args(args)
    return 0


command("train-supernet", "train the once-for-all supernet (sandwich rule, resumable; torchrun for data-parallel)",
        configure=_train_configure)(_train)


def _export_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="a training checkpoint (runs/supernet/checkpoint.pt)")
    p.add_argument("--no-evaluate", action="store_true",
                   help="skip measuring the largest and smallest subnets' reference accuracies (about a minute)")


def reference_accuracy(net) -> dict[str, dict[str, float]]:
    """Test and minival accuracy of the largest and smallest subnets (BN recalibrated), as `evaluate` reports."""
    from nas_lab.evaluate import accuracy, extract

    out = {}
    for name in ("largest", "smallest"):
        arch = net.space.parse(name)
        sub = extract(net, arch)
        out[name] = {"arch": str(arch), **{split: round(accuracy(sub, split, arch.resolution), 2)
                                           for split in ("test", "minival")}}
    return out


def _export(args: argparse.Namespace) -> int:
    from nas_lab.artifacts import data_dir, record
    from nas_lab.evaluate import load_checkpoint
    from nas_lab.train import export_supernet

    extra = {}
    if not args.no_evaluate:  # the figures `nas-lab evaluate --arch largest|smallest` must reproduce
        extra["reference_accuracy"] = reference_accuracy(load_checkpoint(args.checkpoint))
        print(json.dumps(extra["reference_accuracy"]))
    weights, config = export_supernet(args.checkpoint, data_dir(), extra)
    record(weights.name, SUPERNET_REBUILD, "pretrained once-for-all supernet weights (safetensors)")
    record(config.name, SUPERNET_REBUILD, "supernet search space, training config and training log")
    print(f"wrote {weights} and {config}; manifest updated")
    return 0


command("export-supernet", "write data/supernet.safetensors + supernet.json from a checkpoint",
        configure=_export_configure)(_export)


def _evaluate_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", required=True, help="an arch string (r28_w1.0_k7e6-..._...), 'largest' or 'smallest'")
    p.add_argument("--split", choices=("test", "minival"), default="test")
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N images only")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="a training checkpoint instead of the shipped supernet (e.g. a from-scratch baseline)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _evaluate(args: argparse.Namespace) -> int:
    from nas_lab.artifacts import ArtifactError
    from nas_lab.dataset_builder import measure_costs
    from nas_lab.evaluate import accuracy, extract, load_checkpoint, load_supernet
    from nas_lab.space import ArchError, SearchSpace

    try:
        arch = SearchSpace().parse(args.arch)  # validate before loading anything
        net = load_checkpoint(args.checkpoint) if args.checkpoint else load_supernet()
        arch = net.space.parse(args.arch)
    except (ArchError, ArtifactError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sub = extract(net, arch)
    acc = accuracy(sub, args.split, arch.resolution, args.limit)
    result = {"arch": str(arch), "split": args.split, "accuracy": round(acc, 2),
              **measure_costs(sub, arch.resolution, net.space.in_channels)}
    result["macs"] = round(result["macs"], 4)
    result["peak_memory_kb"] = round(result["peak_memory_kb"], 4)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['arch']}\n  {args.split} accuracy {acc:.2f}%  MACs {result['macs']:.2f}M  "
              f"params {result['params']:,}  peak memory {result['peak_memory_kb']:.1f} KB")
    return 0


command("evaluate", "extract a subnet, recalibrate BN on minival, evaluate it",
        configure=_evaluate_configure)(_evaluate)


def _dataset_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=2000, help="number of subnets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="CSV path (default data/accuracy_dataset.csv)")
    p.add_argument("--shard", default=None, metavar="I/K",
                   help="measure every K-th planned subnet from I into a shard file (one process per core); "
                        "a later run without --shard merges the shards")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")


def _dataset(args: argparse.Namespace) -> int:
    from nas_lab.artifacts import data_dir, record
    from nas_lab.dataset_builder import build

    out = args.out or data_dir() / "accuracy_dataset.csv"
    shard = None
    if args.shard:
        try:
            index, count = (int(x) for x in args.shard.split("/"))
        except ValueError:
            print(f"error: --shard {args.shard!r}: expected I/K, e.g. 0/2", file=sys.stderr)
            return 2
        shard = (index, count)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        build(out, args.n, args.seed, shard=shard)
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.out is None and shard is None:
        record(out.name, DATASET_REBUILD, f"{args.n} random subnets: minival accuracy after BN recalibration, "
               "MACs, params, peak memory")
    return 0


command("build-accuracy-dataset", "measure random subnets of the shipped supernet into a CSV (resumable)",
        configure=_dataset_configure)(_dataset)
