"""Lab 5's search strategies side by side: REINFORCE vs evolution vs random search at equal predictor queries,
ProxylessNAS-style gradient search over a range of latency weights, and tiny DARTS's drift.

    .venv/bin/python benchmarks/bench_strategies.py [--seeds 5] [--threads 1] [--lambdas 0,0.03,0.1,0.3]
                                                    [--darts-steps 300,1000] [--skip rl,gradient,darts]

Uses the shipped predictor, supernet and latency table. Prints figures only (no asserts, nothing written).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch

from nas_lab import controller, darts, proxyless
from nas_lab import search as S
from nas_lab.accuracy import MLPPredictor


def _bench_search_constraints() -> dict[str, dict[str, float]]:
    """The constraint sets of ``benchmarks/bench_search.py`` (loaded from that file, so they stay the same)."""
    path = Path(__file__).with_name("bench_search.py")
    spec = importlib.util.spec_from_file_location("bench_search", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CONSTRAINTS


def best_at(history: list[dict[str, float]], queries: float) -> float:
    """Best-so-far predicted accuracy after ``queries`` queries (nan before the first history entry)."""
    values = [h["best"] for h in history if h["queries"] <= queries]
    return max(values) if values else float("nan")


def _pm(values: list[float]) -> str:
    return f"{np.mean(values):.3f} +- {np.std(values):.3f}"


# ---- REINFORCE vs evolution vs random --------------------------------------------------------------------------
BUDGETS = {"small (evolution 50 x 20)": {"population": 50, "generations": 20},
           "OFA default (evolution 100 x 500)": {"population": 100, "generations": 500}}


def bench_rl(predictor: MLPPredictor, seeds: int) -> None:
    constraints = _bench_search_constraints()
    for budget, shape in BUDGETS.items():
        print(f"\n== Equal predictor queries, budget {budget}: best predicted accuracy (%), mean +- sd over {seeds} "
              f"seeds; best-so-far after 1/4 and 1/2 of the queries, and after as many queries as REINFORCE "
              f"used (a converged policy may stop proposing new archs before its budget: max_steps) ==")
        for name, c in constraints.items():
            rows: dict[str, dict[str, list[float]]] = {}
            queries, times = [], {"evolution": [], "random": [], "rl": []}
            for seed in range(seeds):
                t = time.perf_counter()
                evo = S.evolution_search(predictor, c, seed=seed, **shape)
                times["evolution"].append(time.perf_counter() - t)
                q = evo.queries
                queries.append(q)
                t = time.perf_counter()
                rnd = S.random_search(predictor, q, c, seed=seed, batch_size=max(10, q // 50))
                times["random"].append(time.perf_counter() - t)
                t = time.perf_counter()
                rl = controller.rl_search(predictor, c, queries=q, seed=seed)
                times["rl"].append(time.perf_counter() - t)
                for key, r in (("evolution", evo), ("random", rnd), ("rl", rl)):
                    row = rows.setdefault(key, {"best": [], "q/4": [], "q/2": [], "q_rl": [], "queries": []})
                    row["best"].append(r.predicted_accuracy)
                    row["q/4"].append(best_at(r.history, q / 4))
                    row["q/2"].append(best_at(r.history, q / 2))
                    row["q_rl"].append(best_at(r.history, rl.queries))
                    row["queries"].append(r.queries)
            print(f"{name}  ({np.mean(queries):,.0f} queries on average)")
            for key, row in rows.items():
                print(f"   {key:9s} best {_pm(row['best'])} | at q/4 {_pm(row['q/4'])} | at q/2 {_pm(row['q/2'])} | "
                      f"at RL's queries {_pm(row['q_rl'])} | queries {np.mean(row['queries']):,.0f} | "
                      f"{np.mean(times[key]):.2f} s")


# ---- gradient search -------------------------------------------------------------------------------------------
def bench_gradient(predictor: MLPPredictor, lambdas: list[float], resolution: int, width: float, steps: int) -> None:
    from nas_lab.latency import LatencyTable

    table = LatencyTable.shipped()
    print(f"\n== ProxylessNAS-style gradient search on the frozen supernet (r{resolution}, w{width}, {steps} steps of "
          f"64 images, two-path binarised gates; seed 0; wall and CPU seconds of the search) ==")
    print("measured = test accuracy on the first 2,000 test images, BN recalibrated on 500 minival images; "
          "latency = the shipped table's prediction; 'evolution @ lat' = evolution (100 x 100, whole space) "
          "under latency <= that of the derived arch, predicted accuracy")
    print(f"{'lambda':>7s} {'pred':>6s} {'meas':>6s} {'lat ms':>7s} {'E[lat]':>7s} {'MACs M':>7s} {'wall s':>6s} "
          f"{'CPU s':>5s} {'evolution @ lat':>15s}  arch")
    for row in proxyless.sweep(lambdas, resolution, width, steps, table=table, predictor=predictor):
        evo = S.evolution_search(predictor, {"latency_ms": row.latency_ms}, latency_table=table, generations=100)
        print(f"{row.lam:7.3f} {row.predicted_accuracy:6.2f} {row.measured_accuracy:6.2f} {row.latency_ms:7.3f} "
              f"{row.expected_latency_ms:7.3f} {row.macs:7.2f} {row.seconds:6.1f} {row.cpu_seconds:5.1f} "
              f"{evo.predicted_accuracy:15.2f}  "
              f"{row.arch}")


# ---- DARTS -----------------------------------------------------------------------------------------------------
def bench_darts(steps_list: list[int]) -> None:
    for steps in steps_list:
        r = darts.darts_search(steps=steps, seed=0)
        print(f"\n== Tiny DARTS, {steps} steps (seed 0): wall {r.seconds:.1f} s, CPU {r.cpu_seconds:.1f} s "
              f"({r.cpu_seconds / steps:.3f} CPU s/step) ==")
        print("mean softmax weight per op (columns), share on parameter-free ops, minival loss of the step")
        print(f"{'step':>5s} " + " ".join(f"{o:>12s}" for o in r.ops) + f" {'param-free':>10s} {'val loss':>8s}")
        for s in np.linspace(0, steps, 6).astype(int):
            w = r.alpha_history[s]
            val = r.history[s - 1]["val_loss"] if s else float("nan")
            print(f"{s:5d} " + " ".join(f"{v:12.3f}" for v in w.mean(0)) +
                  f" {darts.parameter_free_share(w):10.3f} {val:8.3f}")
        print(f"derived cell: {r.genotype}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lambdas", default="0,0.03,0.1,0.3")
    p.add_argument("--resolution", type=int, default=28)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--gradient-steps", type=int, default=100)
    p.add_argument("--darts-steps", default="300,1000")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: rl, gradient, darts")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    predictor = MLPPredictor.shipped()
    if "rl" not in skip:
        bench_rl(predictor, args.seeds)
    if "gradient" not in skip:
        bench_gradient(predictor, [float(x) for x in args.lambdas.split(",")], args.resolution, args.width,
                       args.gradient_steps)
    if "darts" not in skip:
        bench_darts([int(x) for x in args.darts_steps.split(",")])


if __name__ == "__main__":
    main()
