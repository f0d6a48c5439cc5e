"""``nas-lab train-supernet``, ``export-supernet`` and ``evaluate``: the supernet's life cycle."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

from nas_lab.cli.base import add_json_flag, command, fail


# ---- train-supernet -------------------------------------------------------------------------------------
def _train_configure(p: argparse.ArgumentParser) -> None:
    """One option per ``TrainConfig`` field, plus --out and --no-resume."""
    from nas_lab.train import TrainConfig

    for f, v in asdict(TrainConfig()).items():
        p.add_argument(f"--{f.replace('_', '-')}", type=type(v), default=v)
    p.add_argument("--out", type=Path, default=Path("runs/supernet"), help="checkpoint and log folder")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")


@command("train-supernet", "train the once-for-all supernet (sandwich rule, resumable; "
         "torchrun -m nas_lab.cli train-supernet for data-parallel)", configure=_train_configure)
def train_supernet(args: argparse.Namespace) -> int:
    """Train from parsed arguments; joins a torchrun process group when WORLD_SIZE > 1."""
    import torch
    import torch.distributed as dist

    from nas_lab.train import TrainConfig, train

    cfg = TrainConfig(**{f: getattr(args, f) for f in asdict(TrainConfig())})
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        train(cfg, args.out, resume=not args.no_resume)
        if dist.is_initialized():
            dist.barrier()  # every rank is done before any tears the group down (gloo can abort otherwise)
    except (FileNotFoundError, ValueError) as err:
        return fail(str(err), 1)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


# ---- export-supernet ------------------------------------------------------------------------------------
def _export_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="a training checkpoint (runs/supernet/checkpoint.pt)")
    p.add_argument("--no-evaluate", action="store_true",
                   help="skip measuring the largest and smallest subnets' reference accuracies (about a minute)")


def reference_accuracy(net) -> dict[str, dict[str, float]]:
    """Test and minival accuracy of the largest and smallest subnets (BN recalibrated), as `evaluate` reports."""
    from nas_lab.evaluate import extract, top1_accuracy

    out = {}
    for name in ("largest", "smallest"):
        arch = net.space.parse(name)
        sub = extract(net, arch)
        out[name] = {"arch": str(arch), **{split: round(top1_accuracy(sub, split, arch.resolution), 2)
                                           for split in ("test", "minival")}}
    return out


@command("export-supernet", "write data/supernet.safetensors + supernet.json from a checkpoint",
         configure=_export_configure)
def export(args: argparse.Namespace) -> int:
    from nas_lab.artifacts import data_dir, record
    from nas_lab.evaluate import load_checkpoint
    from nas_lab.train import export_supernet

    if not args.checkpoint.exists():
        return fail(f"{args.checkpoint} does not exist", 1)
    extra = {}
    if not args.no_evaluate:  # the figures `nas-lab evaluate --arch largest|smallest` must reproduce
        extra["reference_accuracy"] = reference_accuracy(load_checkpoint(args.checkpoint))
        print(json.dumps(extra["reference_accuracy"]))
    weights, config = export_supernet(args.checkpoint, data_dir(), extra)
    record(weights.name)  # rebuild command and description: the registry (nas_lab.artifacts)
    record(config.name)
    print(f"wrote {weights} and {config}; manifest updated")
    return 0


# ---- evaluate -------------------------------------------------------------------------------------------
def _evaluate_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", required=True, help="an arch string (r28_w1.0_k7e6-..._...), 'largest' or 'smallest'")
    p.add_argument("--split", choices=("test", "minival"), default="test")
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N images only")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="a training checkpoint instead of the shipped supernet (e.g. a from-scratch baseline)")
    add_json_flag(p)


@command("evaluate", "extract a subnet, recalibrate BN on minival, evaluate it", configure=_evaluate_configure)
def evaluate(args: argparse.Namespace) -> int:
    from nas_lab.artifacts import ArtifactError
    from nas_lab.dataset_builder import measure_costs
    from nas_lab.evaluate import extract, load_checkpoint, load_supernet, top1_accuracy
    from nas_lab.space import ArchError, SearchSpace

    try:
        arch = SearchSpace().parse(args.arch)  # validate before loading anything
        net = load_checkpoint(args.checkpoint) if args.checkpoint else load_supernet()
        arch = net.space.parse(args.arch)
    except (ArchError, ArtifactError, FileNotFoundError) as err:
        return fail(str(err))
    sub = extract(net, arch)
    acc = top1_accuracy(sub, args.split, arch.resolution, args.limit)
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
