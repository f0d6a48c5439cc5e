"""Which continuation of the supernet's training ranks the scratch bench best? A side-by-side sweep.

    python benchmarks/retrain_sweep.py --out runs/sweep --budget-seconds 400 [--variants repeat,random6]

Every variant continues the shipped weights (``data/supernet.safetensors``) for the same number of epochs
with its own ``TrainConfig`` (one process per variant: on a GPU they share it, on a CPU give each its
cores), then scores itself on the from-scratch bench: Kendall tau of inherited vs scratch test accuracy
overall, of the 12 cell means and inside the cells, largest and smallest test accuracy, and the gaps to the
full-recipe subset. ``--budget-seconds`` first times 20 steps of every variant running together and picks
the epoch count that fits (``--epochs`` fixes it instead). Writes ``summary.json`` (every variant's scores
and its inherited accuracies) and ``<variant>/checkpoint.pt``; ``--keep DIR --keep-best K`` also copies the
best K checkpoints there. The shipped net is scored alongside (variant ``shipped``, no training).

Scores measured here pick a recipe; the figures quoted in docs come from ``bench_ranking.py`` on the CPU.
Measured once (session 7, docs/BENCHMARKS.md): eight processes on one H200 time-slice it and ran at 4.9 s per
step together (0.6 s each: the net is small, launch-bound), about 1.5 times one CPU core per variant.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

COMMON = dict(init_from="data/supernet.safetensors", warmup_epochs=0, lr=0.03, seed=3, checkpoint_minutes=2.0)
VARIANTS: dict[str, dict] = {
    "repeat": dict(num_random=4, num_focus=2, focus_resolutions="24,28"),      # the last phase's recipe again
    "random6": dict(num_random=6),                                              # more random subnets per step
    "width05": dict(num_random=4, num_focus=2, focus_widths="0.5"),            # where the order inside cells fails
    "deep": dict(num_random=4, num_focus=2, focus_depths="2,3"),               # deeper subnets trained more often
    "width05_deep": dict(num_random=4, num_focus=2, focus_widths="0.5", focus_depths="2,3"),
    "no_smallest": dict(num_random=4, num_focus=2, focus_resolutions="24,28", smallest_weight=0.0),
    "low_lr": dict(num_random=4, num_focus=2, focus_resolutions="24,28", lr=0.01),
    "random6_width05_deep": dict(num_random=6, num_focus=3, focus_widths="0.5", focus_depths="2,3"),
}


def score(net, archs: list, device) -> list[float]:  # noqa: ANN001
    """Inherited test accuracy of each arch on ``device``: BN recalibrated on the first minival images, as
    ``evaluate.evaluate_arch`` does on the CPU."""
    import torch

    from nas_lab import data
    from nas_lab.evaluate import CALIB_IMAGES as calib_images
    from nas_lab.supernet import recalibrate_bn

    calib = data.load_split("minival")[0][:calib_images]
    test_x, test_y = data.load_split("test")
    out = []
    with torch.no_grad():
        for arch in archs:
            net.set_active_subnet(arch)
            sub = recalibrate_bn(net.get_active_subnet().to(device), data.normalise(calib, arch.resolution).to(device))
            correct = 0
            for i in range(0, len(test_y), 2000):
                x = data.normalise(test_x[i:i + 2000], arch.resolution).to(device)
                correct += (sub(x).argmax(1).cpu() == test_y[i:i + 2000]).sum().item()
            out.append(100.0 * correct / len(test_y))
    return out


def metrics(inherited: list[float]) -> dict:
    """Tau overall, of cell means, inside cells; largest/smallest; full-recipe gaps (median, max)."""
    import numpy as np
    from bench_ranking import cell_means

    from nas_lab import ranking
    from nas_lab.scratch_bench import ground_truth
    from nas_lab.space import SearchSpace

    bench, _ = ground_truth()
    est, truth = np.array(inherited), bench.test_accuracy
    cells = [(a.resolution, a.width) for a in bench.archs]
    first = sorted(set(cells))
    index = {str(a): i for i, a in enumerate(bench.archs)}
    full, _ = ground_truth("full")
    gaps = full.test_accuracy - est[[index[str(a)] for a in full.archs]]
    largest, smallest = index[str(SearchSpace().largest())], index[str(SearchSpace().smallest())]
    return {"kendall_tau": ranking.kendall_tau(est, truth), "spearman": ranking.spearman(est, truth),
            "tau_cell_means": ranking.kendall_tau(cell_means(est, cells, first), cell_means(truth, cells, first)),
            "tau_inside_cells": ranking.within_group_tau(est, truth, cells),
            "largest": float(est[largest]), "smallest": float(est[smallest]),
            "smallest_scratch": float(truth[smallest]),
            "full_gap_median": float(np.median(gaps)), "full_gap_max": float(gaps.max()),
            "full_gaps": [round(float(g), 2) for g in gaps]}


def child(name: str, out: Path, epochs: int, limit_steps: int, threads: int, train_limit: int,
          bench_limit: int) -> None:
    """One variant: train (or, for ``shipped``, load), then score; writes out/name/score.json."""
    import torch

    from nas_lab import evaluate
    from nas_lab.scratch_bench import ground_truth
    from nas_lab.train import TrainConfig, _device, train

    torch.set_num_threads(threads)
    run_dir = out / name
    config = {**COMMON, **VARIANTS.get(name, {}), "epochs": epochs, "threads": threads, "train_limit": train_limit}
    if limit_steps:  # a timing probe: a few steps (start-up, first-step costs), then time limit_steps more
        train(TrainConfig(**{**config, "limit_steps": 5}), run_dir, progress=False)
        t0 = time.time()
        train(TrainConfig(**{**config, "limit_steps": 5 + limit_steps}), run_dir, progress=False)
        (run_dir / "probe.json").write_text(json.dumps({"seconds": time.time() - t0, "steps": limit_steps}))
        return
    t0 = time.time()
    if name == "shipped":
        net = evaluate.load_supernet()
    else:
        net = train(TrainConfig(**config), run_dir, progress=False)
    train_seconds = time.time() - t0
    bench, _ = ground_truth()
    archs = bench.archs[:bench_limit] if bench_limit else bench.archs
    t1 = time.time()
    net = net.to(_device()).eval()
    inherited = score(net, archs, _device())
    result = {"variant": name, "config": {**COMMON, **VARIANTS.get(name, {}), "epochs": epochs},
              "train_seconds": round(train_seconds, 1), "score_seconds": round(time.time() - t1, 1),
              "device": str(_device()), "inherited": dict(zip(map(str, archs), inherited))}
    if not bench_limit:
        result.update(metrics(inherited))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "score.json").write_text(json.dumps(result, indent=1))
    print(f"[{name}] done: " + json.dumps({k: v for k, v in result.items() if k not in ("inherited", "config")}),
          flush=True)


def launch(names: list[str], args: argparse.Namespace, epochs: int, limit_steps: int = 0) -> list:
    cmd = [sys.executable, __file__, "--out", str(args.out), "--threads", str(args.threads),
           "--train-limit", str(args.train_limit), "--bench-limit", str(args.bench_limit),
           "--epochs", str(epochs), "--limit-steps", str(limit_steps), "--child"]
    return [subprocess.Popen([*cmd, n], cwd=ROOT) for n in names]


def wait(procs: list, deadline: float) -> None:
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            print(f"killed {p.args[-1]} at the deadline", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/sweep"))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--epochs", type=int, default=0, help="epochs per variant (0: fit --budget-seconds)")
    p.add_argument("--budget-seconds", type=float, default=400.0, help="wall time for training all variants")
    p.add_argument("--max-epochs", type=int, default=8)
    p.add_argument("--deadline-seconds", type=float, default=0.0, help="kill what still runs after this (0: none)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-limit", type=int, default=0, help="smoke tests: first N training images only")
    p.add_argument("--bench-limit", type=int, default=0, help="smoke tests: score the first N bench archs only")
    p.add_argument("--limit-steps", type=int, default=0)
    p.add_argument("--keep", type=Path, default=None, help="copy the best checkpoints and the summary here")
    p.add_argument("--keep-best", type=int, default=3)
    p.add_argument("--child", default="")
    args = p.parse_args()
    if args.child:
        return child(args.child, args.out, args.epochs, args.limit_steps, args.threads, args.train_limit,
                     args.bench_limit)
    start = time.time()
    deadline = start + args.deadline_seconds if args.deadline_seconds else math.inf
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    epochs = args.epochs
    if not epochs:
        probe = args.out / "probe"
        wait(launch(names, argparse.Namespace(**{**vars(args), "out": probe}), 1, 20), deadline)
        timed = [json.loads((probe / n / "probe.json").read_text()) for n in names]
        per_step = max(t["seconds"] / t["steps"] for t in timed)  # includes one resume: an upper bound
        from nas_lab import data
        from nas_lab.train import TrainConfig

        steps_per_epoch = len(data.load_split("train")[1]) // TrainConfig().batch_size  # as train() counts them
        per_epoch = per_step * steps_per_epoch + 10.0
        left = args.budget_seconds - (time.time() - start)
        epochs = max(1, min(args.max_epochs, int(left / per_epoch)))
        print(f"probe: {per_step:.3f} s per step with {len(names)} variants together (slowest variant); "
              f"{per_epoch:.0f} s per epoch -> {epochs} epochs", flush=True)
    procs = launch(names + ["shipped"], args, epochs)
    wait(procs, deadline)
    summary = {}
    for n in names + ["shipped"]:
        f = args.out / n / "score.json"
        if f.exists():
            summary[n] = json.loads(f.read_text())
    ranked = sorted((n for n in summary if n != "shipped" and "kendall_tau" in summary[n]),
                    key=lambda n: -summary[n]["kendall_tau"])
    print(f"\n{'variant':22s} {'tau':>6s} {'cells':>6s} {'inside':>7s} {'largest':>8s} {'smallest':>8s} "
          f"{'gap med':>8s} {'gap max':>8s}")
    for n in ["shipped"] * ("kendall_tau" in summary.get("shipped", {})) + ranked:
        s = summary[n]
        print(f"{n:22s} {s['kendall_tau']:6.3f} {s['tau_cell_means']:6.3f} {s['tau_inside_cells']:7.3f} "
              f"{s['largest']:8.2f} {s['smallest']:8.2f} {s['full_gap_median']:8.2f} {s['full_gap_max']:8.2f}")
    (args.out / "summary.json").write_text(json.dumps({"epochs": epochs, "variants": summary}, indent=1))
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(args.out / "summary.json", args.keep / "summary.json")
        for n in ranked[:args.keep_best]:
            shutil.copy(args.out / n / "checkpoint.pt", args.keep / f"{n}.pt")
    print(f"total {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
