"""Zero-cost proxies against two ground truths, beside the published NAS-Bench-201 figures.

    nice .venv/bin/python benchmarks/bench_proxies.py [--sample 200] [--seeds 3] [--threads 1] [--json out.json]

For every proxy of :data:`nas_lab.proxies.PROXIES`: signed Kendall tau and Spearman rho (mean +- std over the
initialisations) against (a) the from-scratch bench (test accuracy of subnets trained alone; the shards'
finished rows until ``data/scratch_bench.csv`` exists), (b) a seeded sample of the accuracy data set (the
supernet's inherited minival accuracy), and the seconds one score costs. The data set part runs first, the
bench is read when its part starts (so it holds every row finished by then). Prints figures only.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

import numpy as np
import torch

from nas_lab import artifacts, proxies, scratch_bench

# Spearman rho on NAS-Bench-201 CIFAR-10, all 15,625 nets (docs: ../shared/design/ANCHORS.md)
PUBLISHED = {"synflow": "0.74", "snip": "0.60", "grad_norm": "0.59", "naswot": "(jacob_cov 0.73)"}
PUBLISHED_NOTE = ("NB201 rho: the zero-cost-proxies paper (CIFAR-10, 15,625 nets); jacob_cov is NASWOT's earlier "
                  "form; also grasp 0.51, fisher 0.36, a vote of three 0.82. Third-party reruns report lower values.")


def run_part(name: str, archs: list, truth: np.ndarray, args: argparse.Namespace, label: str) -> dict:
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done % 20 == 0 or done == total:
            print(f"  {label} {name}: {done}/{total} archs, {time.perf_counter() - t0:.0f} s", file=sys.stderr,
                  flush=True)

    scores = proxies.score_archs(name, archs, seeds=range(args.seeds), batch_size=args.batch_size, init=args.init,
                                 progress=progress)
    return {**scores.correlations(truth), "seconds_per_arch": scores.seconds_per_arch,
            "mean_std_over_inits": float(np.mean(scores.std)), "scores": scores.scores.tolist()}


def fmt(c: dict | None) -> str:
    if c is None:
        return f"{'-':>11s} {'-':>11s} "
    tau, rho = f"{c['kendall_tau']:+.2f}±{c['kendall_tau_std']:.2f}", f"{c['spearman']:+.2f}±{c['spearman_std']:.2f}"
    return f"{tau:>11s} {rho:>11s} "


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", type=int, default=200, help="archs sampled from the accuracy data set")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=3, help="initialisations per arch")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--init", choices=proxies.INITS, default="own")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--proxies", default=",".join(proxies.PROXIES), help="comma-separated names")
    p.add_argument("--skip-dataset", action="store_true")
    p.add_argument("--skip-bench", action="store_true")
    p.add_argument("--json", default=None, help="also write every number (and the raw scores) here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = [proxies.get_proxy(n).name for n in args.proxies.split(",")]
    results: dict[str, dict] = {n: {} for n in names}
    t_start = time.perf_counter()

    if not args.skip_dataset:
        data = artifacts.load("accuracy_dataset.csv")
        idx = sorted(random.Random(args.sample_seed).sample(range(len(data)), min(args.sample, len(data))))
        archs, truth = [data.archs[i] for i in idx], data.accuracy[idx]
        ds_label = f"accuracy data set: {len(idx)} of {len(data)} archs (sample seed {args.sample_seed})"
        print(ds_label, file=sys.stderr)
        for n in names:
            results[n]["dataset"] = run_part(n, archs, truth, args, "dataset")
    if not args.skip_bench:
        bench, bench_source = scratch_bench.ground_truth()
        print(f"scratch bench: {bench_source}", file=sys.stderr)
        for n in names:
            results[n]["bench"] = run_part(n, bench.archs, bench.test_accuracy, args, "bench")

    print(f"\nZero-cost proxies, init '{args.init}', batch {args.batch_size}, {args.seeds} initialisations, "
          f"{args.threads} thread(s); signed values, mean±std over initialisations")
    if not args.skip_bench:
        print(f"(a) scratch bench: {bench_source}; truth = test accuracy, trained alone")
    if not args.skip_dataset:
        print(f"(b) {ds_label}; truth = inherited supernet accuracy")
    head = (f"{'proxy':10s} | {'(a) tau':>11s} {'(a) rho':>11s} | {'(b) tau':>11s} {'(b) rho':>11s} | "
            f"{'s/arch':>6s} | NB201 rho")
    print(head)
    print("-" * len(head))
    for n in names:
        r = results[n]
        secs = [r[k]["seconds_per_arch"] for k in ("bench", "dataset") if k in r]
        print(f"{n:10s} | {fmt(r.get('bench'))}| {fmt(r.get('dataset'))}| {np.mean(secs):6.3f} | "
              f"{PUBLISHED.get(n, '-')}")
    print(PUBLISHED_NOTE)
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f)


if __name__ == "__main__":
    main()
