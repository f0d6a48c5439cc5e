"""How Lab 5's Q1 bar was set: REINFORCE with working and with broken pieces, on the shipped predictor.

    .venv/bin/python benchmarks/bench_lab5_targets.py [--seeds 10]

Q1a and Q1b run the student's sampler (or update) inside ``controller.rl_search`` with the library's other piece:
2,000 predictor queries under MACs <= 2 M, seeds 0-2 visible and 3-5 hidden, graded on the mean best predicted
accuracy over the three seeds (``BAR`` in the notebook). This file runs that search per seed with the library's
pieces, with updates a student might hand in (the sign flipped, no baseline, no update at all) and random search
at the same number of queries, then prints the worst 3-seed mean of the working version and the best of the broken
ones over the two seed windows the notebook uses. The bar must sit between them (the midpoint is printed);
it depends on the shipped predictor, so it is re-set whenever the predictor is rebuilt.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from nas_lab import controller, search
from nas_lab.accuracy import MLPPredictor

CONSTRAINTS = {"macs": 2.0}
QUERIES = 2000
WINDOWS = ((0, 1, 2), (3, 4, 5))   # visible and hidden seeds of Q1a / Q1b


def sign_flipped(opt, logits, log_prob, reward, baseline, entropy_weight):  # noqa: ANN001, ANN201
    """Gradient ascent on the loss: the policy moves away from good archs."""
    return controller.policy_gradient_step(opt, logits, -log_prob, reward, baseline, entropy_weight)


def no_baseline(opt, logits, log_prob, reward, baseline, entropy_weight):  # noqa: ANN001, ANN201
    """Raw rewards (all near 90): every drawn arch is pushed up alike."""
    return controller.policy_gradient_step(opt, logits, log_prob, reward, 0.0, entropy_weight)


def no_update(opt, logits, log_prob, reward, baseline, entropy_weight):  # noqa: ANN001, ANN201
    """The policy never learns: REINFORCE degenerates to sampling from the initial policy."""
    return 0.0


VARIANTS = {"library pieces": controller.policy_gradient_step, "sign flipped": sign_flipped,
            "baseline 0": no_baseline, "no update": no_update}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(1)
    predictor = MLPPredictor.shipped()
    rows: dict[str, list[float]] = {}
    for name, step in VARIANTS.items():
        rows[name] = [controller.rl_search(predictor, CONSTRAINTS, queries=QUERIES, seed=s, step_fn=step)
                      .predicted_accuracy for s in range(args.seeds)]
    rows["random search"] = [search.random_search(predictor, QUERIES, CONSTRAINTS, seed=s, batch_size=20)
                             .predicted_accuracy for s in range(args.seeds)]
    print(f"best predicted accuracy (%) after {QUERIES} queries under {CONSTRAINTS}, seeds 0-{args.seeds - 1}")
    for name, best in rows.items():
        print(f"  {name:15s} " + " / ".join(f"{b:.2f}" for b in best) + f"   mean {np.mean(best):.3f}")
    means = {name: [float(np.mean([best[s] for s in w])) for w in WINDOWS] for name, best in rows.items()}
    worst_working = min(means["library pieces"])
    best_broken = max(max(m) for name, m in means.items() if name != "library pieces")
    print("3-seed means over seeds " + " and ".join("-".join(map(str, (w[0], w[-1]))) for w in WINDOWS) + ":")
    for name, m in means.items():
        print(f"  {name:15s} " + " / ".join(f"{x:.3f}" for x in m))
    print(f"worst working 3-seed mean {worst_working:.3f}, best broken {best_broken:.3f}: "
          f"margin {worst_working - best_broken:+.3f}; bar (midpoint, floored to 0.01) "
          f"{np.floor(100 * (worst_working + best_broken) / 2) / 100:.2f}")


if __name__ == "__main__":
    main()
