"""Growing networks (Lab 7): inherited weights vs training from scratch, and Petridish vs random growth.

    nice .venv/bin/python benchmarks/bench_grow.py [--seeds 4] [--threads 1] [--extra-steps 300]

(a) Continue a grown net from its inherited weights vs the same architecture trained from scratch for the
    same extra steps (minival accuracy along the way), for a Net2Net-grown net (wider + deeper) and for
    the final net of a Petridish growth run; plus the scratch net trained for the whole budget.
(b) Petridish vs random growth vs no growth over several seeds at an equal training budget: mean +- sd
    of the final and best minival accuracy and of the final MACs, seconds per run; the joint Pareto front.
Prints figures only; nothing is written, nothing asserted.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from nas_lab import evaluate, minitrain, search
from nas_lab import net2net as N
from nas_lab import petridish as P
from nas_lab.counting import count_model

RES, IMAGES, BATCH, LR = 14, 4000, 64, 0.05


def curve(model: torch.nn.Module, steps: int, seed: int, every: int) -> list[float]:
    """Minival accuracy after every ``every`` steps of one ``fit`` of ``steps`` steps (cosine schedule)."""
    points: list[float] = []

    def on_step(step: int, _loss: float) -> None:
        if (step + 1) % every == 0:
            points.append(evaluate.top1_accuracy(model, "minival", RES))
            model.train()  # fit switched to train mode once; evaluating switched it off

    minitrain.fit(model, steps, LR, BATCH, RES, IMAGES, seed=seed, on_step=on_step)
    return points


def macs(model: torch.nn.Module) -> int:
    return count_model(model, torch.zeros(1, 1, RES, RES)).macs


def show(label: str, model: torch.nn.Module, points: list[float], seconds: float) -> None:
    print(f"  {label:<44} {macs(model):>9,} MACs  " + "  ".join(f"{a:5.2f}" for a in points)
          + f"   ({seconds:.0f} s)")


def part_a(extra: int, seed: int = 0) -> None:
    every = extra // 4
    print(f"\n(a) inherited weights vs from scratch: minival accuracy % after every {every} of {extra} extra steps")
    t = time.perf_counter()
    parent = N.ConvNet((8, 16, 16), (1, 2, 1), seed=seed)
    minitrain.fit(parent, 300, LR, BATCH, RES, IMAGES, seed=seed)
    calib = next(minitrain.train_batches(256, RES, IMAGES, seed=99))[0]
    grown = N.net2deeper(N.net2wider(parent, 1, 32, seed=seed, noise=0.01), 1, calib=calib, seed=seed, noise=0.01)
    print(f"  Net2Net: {parent.spec} trained 300 steps ({evaluate.top1_accuracy(parent, 'minival', RES):.2f} %) "
          f"-> {grown.spec} ({evaluate.top1_accuracy(grown, 'minival', RES):.2f} % before training; "
          f"{time.perf_counter() - t:.0f} s)")
    runs = [("net2net, inherited", grown, extra),
            ("net2net arch, scratch", N.ConvNet([c for c, _ in grown.spec], [s for _, s in grown.spec],
                                                seed=seed + 100), extra),
            ("net2net arch, scratch, 300+extra", N.ConvNet([c for c, _ in grown.spec],
                                                           [s for _, s in grown.spec], seed=seed + 100),
             300 + extra)]
    t = time.perf_counter()
    hist = P.grow(seed=seed)
    budget = hist.train_steps
    print(f"  Petridish: seed net {hist.points[0].accuracy:.2f} % -> {hist.points[-1].accuracy:.2f} % after "
          f"{budget} steps; {hist.model.describe()} ({time.perf_counter() - t:.0f} s)")
    runs += [("petridish, inherited", hist.model, extra),
             ("petridish arch, scratch (gates 1)", P.fresh_copy(hist.model, seed + 100), extra),
             ("petridish arch, scratch, budget+extra", P.fresh_copy(hist.model, seed + 100), budget + extra)]
    for label, model, steps in runs:
        t = time.perf_counter()
        points = curve(model, steps, seed + 7, max(every, steps // 4))
        show(f"{label} ({steps})", model, points, time.perf_counter() - t)


def part_b(seeds: list[int]) -> None:
    print(f"\n(b) Petridish vs random growth vs none, seeds {seeds}, equal training budget (grow() defaults)")
    runs = P.compare_growth(seeds, P.STRATEGIES)
    for strategy, hists in runs.items():
        for h in hists:
            pts = " ".join(f"{p.macs // 1000}k/{p.accuracy:.1f}" for p in h.points)
            print(f"  {strategy:<9} seed {h.seed}: {pts}  front {h.front()}  ({h.seconds:.0f} s, "
                  f"{h.score_images} scoring images)")
    print()
    print(P.summary_table(runs))
    # one gallery: every model of every run; which strategy put models on the joint (MACs, accuracy) front?
    pts = [(s, h.seed, p) for s, hs in runs.items() for h in hs for p in h.points if s == "none" or p.round > 0]
    front = search.pareto_front(np.array([[p.macs, p.accuracy] for *_, p in pts], float), [False, True])
    print("joint front (all runs, seed nets counted once under 'none'): "
          + ", ".join(f"{pts[i][0]}/s{pts[i][1]}/r{pts[i][2].round} {pts[i][2].macs // 1000}k {pts[i][2].accuracy:.1f}%"
                      for i in front))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--extra-steps", type=int, default=300)
    parser.add_argument("--skip-a", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
    start = time.perf_counter()
    if not args.skip_a:
        part_a(args.extra_steps)
    part_b(list(range(args.seeds)))
    print(f"\ntotal {time.perf_counter() - start:.0f} s, {args.threads} thread(s)")


if __name__ == "__main__":
    main()
