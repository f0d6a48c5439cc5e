"""Engine speed figures that the tests used to assert: costing a population, giving up on a too-tight
constraint, and the OFA default evolution budget with an (untrained) MLP predictor.

    .venv/bin/python benchmarks/bench_engine.py [--repeats 20] [--threads 1]

The tests check that these paths are right (tests/test_efficiency.py, tests/test_search.py); this prints how
fast they are on this machine (the old test limits are shown for reference). Prints figures only.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from nas_lab import efficiency as eff
from nas_lab import search as S
from nas_lab.accuracy import MLPPredictor
from nas_lab.space import SearchSpace

SPACE = SearchSpace()


def timings(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn``."""
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def bench_population_costs(repeats: int) -> None:
    rng = random.Random(4)
    genes = eff.to_genes([SPACE.sample(rng) for _ in range(98)])
    eff.costs_genes(genes)  # tables built
    best = min(timings(lambda: eff.costs_genes(genes), repeats))
    print(f"analytic costs of a population of {len(genes)}: {best / len(genes) * 1e6:.1f} us per arch "
          f"(best of {repeats}; old test limit 100 us)")


def bench_bounded_sampling(repeats: int) -> None:
    model, tight = S.CostModel(), {"macs": eff.minimum("macs") * 1.01}  # reachable, by a tiny share of the space
    rng = np.random.default_rng(0)

    def give_up() -> None:
        try:
            S.sample_feasible(10, model, tight, rng, max_tries=5000)
        except S.ConstraintError:
            return
        raise AssertionError("expected the sampler to give up")
    t = timings(give_up, repeats)
    print(f"sample_feasible giving up after 5,000 tries: median {statistics.median(t) * 1e3:.1f} ms "
          f"(max {max(t) * 1e3:.1f} ms; old test limit 2,000 ms)")


def bench_default_budget(repeats: int) -> None:
    mlp = MLPPredictor()  # untrained: the same compute as the trained one
    S.evolution_search(mlp, population=10, generations=2)  # warm-up (tables, torch)
    t = timings(lambda: S.evolution_search(mlp, {"macs": 3.0, "peak_memory_kb": 30.0}, seed=0), repeats)
    print(f"evolution, OFA default budget (100 x 500), MLP predictor: median {statistics.median(t):.2f} s "
          f"(max {max(t):.2f} s; old test limit 3.0 s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20, help="repeats of the fast figures (the budget runs 3)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    bench_population_costs(args.repeats)
    bench_bounded_sampling(max(1, args.repeats // 4))
    bench_default_budget(3)


if __name__ == "__main__":
    main()
