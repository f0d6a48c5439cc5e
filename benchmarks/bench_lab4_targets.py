"""How Lab 4's graded targets were set: what a plain, tuned search reaches under each constraint set.

    .venv/bin/python benchmarks/bench_lab4_targets.py [--seeds 5]

Q7: best predicted accuracy of the weak and of a few tuned evolution settings (seeds 0..S-1) under
MACs <= 2 M and peak <= 20 KB, with the predictor queries each used. Q8: for each constraint set, the
notebook's procedure (evolution with default knobs, then the 3 best distinct archs of the final
population measured on the first 2,000 minival images, BN recalibrated on 500) and the chosen arch's
test accuracy; beside it the smallest subnet (always feasible) and random feasible subnets. A target is
set a little below the worst seed, and above the smallest subnet.
"""

import argparse
import random

import torch

from nas_lab import accuracy as acc
from nas_lab import efficiency, search
from nas_lab.evaluate import evaluate_arch, load_supernet
from nas_lab.space import SearchSpace

WEAK = dict(population=10, generations=40, parent_ratio=0.1, mutation_ratio=0.8, mutate_prob=0.8)
TUNED = {"p100 g50": dict(population=100, generations=50, parent_ratio=0.25, mutation_ratio=0.5, mutate_prob=0.1),
         "p60 g80": dict(population=60, generations=80, parent_ratio=0.25, mutation_ratio=0.5, mutate_prob=0.1)}
Q7_CONSTRAINTS = {"macs": 2.0, "peak_memory_kb": 20}
Q8_CONSTRAINTS = {"Q8a": {"macs": 1.0, "peak_memory_kb": 12}, "Q8b": {"macs": 2.0, "peak_memory_kb": 20}}


def verify_top(net, result, top=3, limit=2000):
    seen, rows = set(), []
    for arch, pred in result.population:
        if str(arch) not in seen and len(rows) < top:
            seen.add(str(arch))
            rows.append((arch, pred, evaluate_arch(arch, "minival", net=net, limit=limit, calib_images=500)))
    return max(rows, key=lambda r: r[2])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    space, net, predictor = SearchSpace(), load_supernet(), acc.MLPPredictor.shipped()
    print("== Q7: best predicted accuracy (queries) under", Q7_CONSTRAINTS)
    for name, knobs in {"weak": WEAK, **TUNED}.items():
        rs = [search.evolution_search(predictor, Q7_CONSTRAINTS, seed=s, **knobs) for s in range(args.seeds)]
        print(f"  {name:9}", ", ".join(f"{r.predicted_accuracy:.2f} ({r.queries})" for r in rs))
    smallest = evaluate_arch(space.smallest(), "test", net=net, calib_images=500)
    for label, c in Q8_CONSTRAINTS.items():
        print(f"== {label}: {c}; the smallest subnet scores {smallest:.2f} % test")
        for s in range(args.seeds):
            arch, pred, minival = verify_top(net, search.evolution_search(predictor, c, seed=s))
            test = evaluate_arch(arch, "test", net=net, calib_images=500)
            print(f"  seed {s}: predicted {pred:.2f}  minival(2k) {minival:.2f}  test {test:.2f}  {arch}", flush=True)
        rng, feasible = random.Random(0), []
        while len(feasible) < 5:
            a = space.sample(rng)
            cost = efficiency.costs(a)
            if all(getattr(cost, k) <= v for k, v in c.items()):
                feasible.append(a)
        print("  random feasible subnets, test:",
              ", ".join(f"{evaluate_arch(a, 'test', net=net, calib_images=500):.2f}" for a in feasible))


if __name__ == "__main__":
    main()
