"""Search engine benchmark: OFA-default budget timing, evolution vs random at equal predictor queries, and the
``ofa`` package's ``EvolutionFinder`` side by side (when ``pip install ofa`` is available).

    .venv/bin/python benchmarks/bench_search.py [--seeds 5] [--threads 1] [--no-ofa] [--evaluate]

Uses the shipped accuracy predictor when it exists; otherwise an MLP trained on the synthetic data set
(``nas_lab.accuracy.synthetic_dataset``), whose noiseless ground truth is then also reported for the
archs found. Prints figures only; nothing is written.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np
import torch

from nas_lab import accuracy as acc
from nas_lab import efficiency as eff
from nas_lab import search as S
from nas_lab.space import Arch, SearchSpace

SPACE = SearchSpace()
CONSTRAINTS = {
    "loose  (macs<=2)": {"macs": 2.0},
    "medium (macs<=1, peak<=12KB)": {"macs": 1.0, "peak_memory_kb": 12.0},
    "tight  (macs<=0.5, peak<=8KB, params<=30k)": {"macs": 0.5, "peak_memory_kb": 8.0, "params": 30_000},
}

OFA_SHAPE = {"population": 125, "parent_ratio": 0.2, "mutation_ratio": 0.4}  # EvolutionFinder's generation shape


def load_predictor() -> tuple[acc.MLPPredictor, bool]:
    try:
        return acc.MLPPredictor.shipped(), False
    except Exception as err:  # noqa: BLE001 - any reason: fall back to the synthetic stand-in
        print(f"(no shipped predictor: {str(err).splitlines()[0]})")
        data = acc.synthetic_dataset(2000, seed=0)
        t = time.perf_counter()
        model, report = acc.train_and_evaluate(data, seed=0)
        print(f"synthetic predictor: 2000 rows, trained in {time.perf_counter() - t:.1f} s; held-out "
              + ", ".join(f"{k} RMSE {v['rmse']:.3f}" for k, v in report.items()))
        return model, True


def feasible_share(constraints: dict[str, float], n: int = 100_000) -> float:
    genes = S.sample_genes(SPACE, n, np.random.default_rng(0))
    return float(S.CostModel().feasible(genes, constraints).mean())


def truth(arch: Arch, synthetic: bool) -> str:
    return f" (ground truth {float(acc.synthetic_accuracy([arch])[0]):.3f})" if synthetic else ""


def bench_default_budget(predictor: acc.MLPPredictor, seeds: int) -> None:
    print("\n== OFA default budget: population 100 x 500 generations (parents 25%, mutants 50%) ==")
    for name, c in CONSTRAINTS.items():
        times, queries = [], []
        for seed in range(seeds):
            t = time.perf_counter()
            r = S.evolution_search(predictor, c, seed=seed)
            times.append(time.perf_counter() - t)
            queries.append(r.queries)
        print(f"{name:45s} median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}); "
              f"{statistics.mean(queries):,.0f} distinct queries")


def bench_evolution_vs_random(predictor: acc.MLPPredictor, seeds: int, synthetic: bool) -> None:
    print("\n== Evolution vs random search at equal predictor queries (default budget; mean +- sd over seeds) ==")
    for name, c in CONSTRAINTS.items():
        rows = {"evolution": [], "random": []}
        gt = {"evolution": [], "random": []}
        for seed in range(seeds):
            evo = S.evolution_search(predictor, c, seed=seed)
            rnd = S.random_search(predictor, evo.queries, c, seed=seed)
            for key, r in (("evolution", evo), ("random", rnd)):
                rows[key].append(r.predicted_accuracy)
                if synthetic:
                    gt[key].append(float(acc.synthetic_accuracy([r.arch])[0]))
        print(f"{name}  (feasible share of the space: {feasible_share(c):.2%})")
        for key in rows:
            line = f"   {key:9s} predicted {np.mean(rows[key]):.3f} +- {np.std(rows[key]):.3f}"
            if synthetic:
                line += f"; ground truth {np.mean(gt[key]):.3f} +- {np.std(gt[key]):.3f}"
            print(line)


class _OFAArchEncoder:
    """The arch manager interface ``ofa``'s EvolutionFinder expects, over our space (dict samples)."""

    def random_sample_arch(self) -> dict:
        return SPACE.sample(random).to_dict()

    def mutate_resolution(self, sample: dict, prob: float) -> None:
        if random.random() < prob:
            sample["resolution"] = random.choice(SPACE.resolutions)
        if random.random() < prob:
            sample["width"] = random.choice(SPACE.widths)

    def mutate_arch(self, sample: dict, prob: float) -> None:
        for key, choices in (("depths", SPACE.depths), ("kernels", SPACE.kernels), ("expands", SPACE.expands)):
            for i in range(len(sample[key])):
                if random.random() < prob:
                    sample[key][i] = random.choice(choices)


class _OFAAccuracy:
    def __init__(self, predictor: acc.MLPPredictor) -> None:
        self.predictor, self.arch_encoder = predictor, _OFAArchEncoder()

    def predict_acc(self, samples: list[dict]) -> np.ndarray:
        return self.predictor([Arch.from_dict(s) for s in samples])


class _OFAEfficiency:
    """One scalar for EvolutionFinder's single constraint: max over our metrics of value / limit (<= 1)."""

    def __init__(self, constraints: dict[str, float]) -> None:
        self.constraints = constraints

    def get_efficiency(self, sample: dict) -> float:
        c = eff.costs_many([Arch.from_dict(sample)])
        return max(float(c[k][0]) / v for k, v in self.constraints.items())


def bench_ofa(predictor: acc.MLPPredictor, seeds: int, synthetic: bool) -> None:
    print("\n== Side by side: ofa.nas.search_algorithm.EvolutionFinder (same predictor, space, constraints) ==")
    try:
        from ofa.nas.search_algorithm import EvolutionFinder
    except ImportError as err:
        print(f"NOT RUN: the ofa package is not installed ({err}); `pip install ofa` to run this part")
        return
    print("note: EvolutionFinder breeds 50 mutants + 50 crossovers per generation and keeps the 25 parents "
          "(population 125), with no cache; nas-lab keeps the population at 100 (25 + 50 + 25) and queries each "
          "distinct arch once")
    for name, c in CONSTRAINTS.items():
        for seed in range(seeds):
            random.seed(seed)
            np.random.seed(seed)
            finder = EvolutionFinder(_OFAEfficiency(c), _OFAAccuracy(predictor))
            t = time.perf_counter()
            _, best = finder.run_evolution_search(1.0, verbose=False)
            t_ofa = time.perf_counter() - t
            ofa_arch = Arch.from_dict(best[1])
            line = f"{name} seed {seed}: ofa {t_ofa:6.2f} s, best {best[0]:.3f}{truth(ofa_arch, synthetic)}"
            # nas-lab with OFA's defaults, then with OFA's effective shape (25 parents + 50 mutants + 50 crossovers)
            for label, kw in (("defaults", {}), ("125/20%/40%", OFA_SHAPE)):
                t = time.perf_counter()
                ours = S.evolution_search(predictor, c, seed=seed, **kw)
                line += (f" | nas-lab {label} {time.perf_counter() - t:5.2f} s, best {ours.predicted_accuracy:.3f}"
                         f"{truth(ours.arch, synthetic)}, {ours.queries:,} queries")
            print(line)


def bench_real_accuracy(predictor: acc.MLPPredictor) -> None:
    """The arch evolution finds under each constraint set (seed 0), extracted from the shipped supernet:
    predicted (minival-trained) vs measured minival and test accuracy."""
    from nas_lab.evaluate import evaluate_arch, load_supernet

    net = load_supernet()
    print("\n== Found subnets: predicted vs real accuracy (evolution, seed 0; BN recalibrated on 2,000 images) ==")
    for name, c in CONSTRAINTS.items():
        r = S.evolution_search(predictor, c, seed=0)
        minival = evaluate_arch(r.arch, "minival", net=net)
        test = evaluate_arch(r.arch, "test", net=net)
        print(f"{name:45s} predicted {r.predicted_accuracy:.2f}  minival {minival:.2f}  test {test:.2f}  {r.arch}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--ofa-seeds", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-ofa", action="store_true")
    p.add_argument("--evaluate", action="store_true", help="also measure the found subnets' real accuracy")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    predictor, synthetic = load_predictor()
    S.evolution_search(predictor, population=10, generations=2)  # warm-up
    bench_default_budget(predictor, args.seeds)
    bench_evolution_vs_random(predictor, args.seeds, synthetic)
    if args.evaluate and not synthetic:
        bench_real_accuracy(predictor)
    if not args.no_ofa:
        bench_ofa(predictor, args.ofa_seeds, synthetic)


if __name__ == "__main__":
    main()
