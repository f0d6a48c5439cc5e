"""REINFORCE search: a policy over the engine's genes, trained by policy gradient on predicted accuracy.

The policy is one softmax per decision of the space, on the engine's gene layout
(:class:`nas_lab.efficiency.GeneLayout`): resolution, width, a depth per stage, a kernel and an expand ratio per
block slot (30 decisions in the default space). It is stored as one logit matrix ``(decisions, max choices)``;
a decision with fewer choices than the widest one holds :data:`MASKED` (-1e9) in its unused columns, so their
probability is exactly 0 while entropies and gradients stay finite. All-zero logits are the uniform
distribution, so step 1 of the search is random search.

This is Zoph and Le's controller without the RNN: the decisions here are a fixed-length vector, and a
factorised policy (independent softmaxes) keeps the two pieces a student writes small:

- :func:`sample` draws archs and returns their genes and summed log-probabilities;
- :func:`policy_gradient_step` does one REINFORCE update: loss = -mean((R - b) log pi(a)) - beta H(pi), Adam.

Reward: the predicted accuracy (percent) of each sampled arch, through the engine's cached
:class:`~nas_lab.search.Scorer`, so queries count distinct archs exactly as random search and evolution count
them, and :func:`rl_search` stops at exactly ``queries`` distinct archs: the three strategies compare at equal
queries. Baseline ``b``: an exponential moving average of the batch-mean reward. Entropy bonus ``beta``: keeps
the policy from collapsing on its first good arch.

Constraints: a **bounded feasibility filter plus a penalty on the rejected draws**. Each step draws archs from
the policy until ``batch_size`` of them meet the constraints (at most ``max_tries`` draws, then the engine's
:class:`~nas_lab.search.ConstraintError`, so no loop can hang); only those are scored by the predictor. The first
``batch_size`` rejected draws join the update with the reward ``baseline - penalty`` (a fixed negative advantage,
in accuracy points), without a query. Why the filter: every queried arch is feasible, as in random search and
evolution, so a query budget means the same for all three, and the costs are analytic or table lookups, so
rejecting costs no query. Why the penalty as well: a filter alone gives the policy no signal from the infeasible
archs, and a factorised policy then drifts out of the feasible region (each decision moves towards its best
choice, and the product of those choices breaks a MACs limit: measured here, after ~150 steps under ``macs <= 2``
no feasible arch was left among 200,000 draws). Why not a penalty alone (reward = accuracy - w * violation):
an infeasible arch would need a query for its accuracy, or a reward scale of its own, and ``w`` needs tuning.
The update is a heuristic, not an unbiased gradient of one objective: a batch over-represents feasible archs
(drawn until ``batch_size`` are found), and their log-probabilities are not those of the policy conditioned on
feasibility; the missing term scales with the batch's mean advantage, small when the baseline tracks it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from nas_lab import efficiency as eff
from nas_lab.search import ConstraintError, CostModel, Predictor, Scorer, SearchResult, check_constraints
from nas_lab.space import SearchSpace

MASKED = -1e9  # logit of a choice a decision does not have (softmax probability exactly 0 in float32)

SampleFn = Callable[[torch.Tensor, torch.Generator, int], tuple[torch.Tensor, torch.Tensor]]
StepFn = Callable[[torch.optim.Optimizer, torch.Tensor, torch.Tensor, torch.Tensor, float, float], float]


# ---- the policy ------------------------------------------------------------------------------------------
def init_logits(space: SearchSpace | None = None) -> torch.Tensor:
    """(decisions, max choices) logits of the uniform policy: 0 for real choices, :data:`MASKED` elsewhere.

    Row ``g`` is gene column ``g`` of the engine's gene matrix; the result is a leaf tensor that requires grad.
    """
    sizes = torch.as_tensor(eff.gene_sizes(space or SearchSpace()))               # (G,)
    valid = torch.arange(int(sizes.max()))[None, :] < sizes[:, None]              # (G, C)
    return torch.where(valid, 0.0, MASKED).requires_grad_(True)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(G, C) probability of every choice of every decision (rows sum to 1)."""
    return torch.softmax(logits.detach(), dim=-1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Scalar: the policy's entropy in nats, summed over decisions (differentiable)."""
    return _entropy(logits)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    # the engine's own copy (history), so that a lab test can switch :func:`entropy` off while a search runs
    log_p = torch.log_softmax(logits, dim=-1)                                     # (G, C)
    return -(log_p.exp() * log_p).sum()


def most_likely(logits: torch.Tensor) -> np.ndarray:
    """(1, G) genes of the policy's mode (argmax of every decision)."""
    return logits.detach().argmax(dim=-1).numpy()[None, :].astype(np.int64)


def sample(logits: torch.Tensor, rng: torch.Generator, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` archs from the policy.

    Returns ``genes`` (n, G) int64, each entry a choice index drawn from its decision's softmax, and
    ``log_prob`` (n,): the sum over decisions of log pi(choice), differentiable with respect to ``logits``.
    """
    probs = torch.softmax(logits.detach(), dim=-1)                                # (G, C)
    picks = torch.multinomial(probs, n, replacement=True, generator=rng)         # (G, n)
    log_p = torch.log_softmax(logits, dim=-1)                                     # (G, C)
    return picks.T.contiguous(), log_p.gather(1, picks).sum(dim=0)                # (n, G), (n,)


def policy_gradient_step(optimizer: torch.optim.Optimizer, logits: torch.Tensor, log_prob: torch.Tensor,
                         reward: torch.Tensor, baseline: float, entropy_weight: float) -> float:
    """One REINFORCE update of ``logits``: minimise -mean((reward - baseline) * log_prob) - beta * entropy.

    ``log_prob`` (n,) comes from :func:`sample` (still attached to ``logits``); ``reward`` (n,) is a plain
    tensor. Returns the loss.
    """
    advantage = reward - baseline                                                 # (n,)
    loss = -(advantage * log_prob).mean() - entropy_weight * entropy(logits)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def update_baseline(baseline: float | None, reward: torch.Tensor, decay: float) -> float:
    """Exponential moving average of the batch-mean reward (the first batch sets it)."""
    mean = float(reward.mean())
    return mean if baseline is None else decay * baseline + (1 - decay) * mean


# ---- drawing feasible archs --------------------------------------------------------------------------------
def draw_feasible(logits: torch.Tensor, rng: torch.Generator, n: int, model: CostModel,
                  constraints: Mapping[str, float], max_tries: int = 200_000,
                  sample_fn: SampleFn = sample) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """Policy draws until ``n`` meet the constraints (at most ``max_tries`` draws; none at all is an error).

    Returns ``genes`` (m, G), ``log_prob`` (m,) and ``feasible`` (m,) bool: the feasible draws (``n``, fewer only
    when the tries run out) followed by the first ``n`` infeasible ones (the search penalises those).
    """
    good: list[tuple[np.ndarray, torch.Tensor]] = []
    bad: list[tuple[np.ndarray, torch.Tensor]] = []
    kept = rejected = tried = 0
    chunk = n
    while kept < n and tried < max_tries:
        m = min(chunk, max_tries - tried)
        genes, log_prob = sample_fn(logits, rng, m)
        genes = genes.numpy().astype(np.int64)
        tried += m
        ok = model.feasible(genes, constraints) if constraints else np.ones(m, dtype=bool)
        for part, mask, room in ((good, ok, n - kept), (bad, ~ok, n - rejected)):
            idx = np.nonzero(mask)[0][:room]
            part.append((genes[idx], log_prob[torch.as_tensor(idx, dtype=torch.long)]))
        kept, rejected = sum(len(g) for g, _ in good), sum(len(g) for g, _ in bad)
        chunk = min(4 * chunk, 8192)  # few feasible archs: draw more at once
    if kept == 0:
        low = {k: round(model.minimum(k), 4) for k in constraints}
        raise ConstraintError(f"no arch meeting {dict(constraints)} among {max_tries} draws from the policy; each "
                              f"limit alone is reachable (smallest values: {low}) but together they are too tight "
                              f"for sampling: loosen them or raise max_tries")
    parts = good + bad
    feasible = np.repeat([True, False], [kept, rejected])
    return (np.concatenate([g for g, _ in parts]), torch.cat([lp for _, lp in parts]), feasible)


def _new_prefix(genes: np.ndarray, scorer: Scorer, space: SearchSpace, budget: int) -> int:
    """How many leading rows of ``genes`` can be scored without exceeding ``budget`` new distinct archs."""
    new: set[bytes] = set()
    for i, row in enumerate(eff.canonical(genes, space)):
        key = row.tobytes()
        if key not in scorer.cache and key not in new:
            if len(new) == budget:
                return i
            new.add(key)
    return len(genes)


# ---- the search ----------------------------------------------------------------------------------------------
def rl_search(predictor: Predictor, constraints: Mapping[str, float] | None = None, queries: int = 2000,
              space: SearchSpace | None = None, latency_table: Any = None, seed: int = 0, batch_size: int = 16,
              lr: float = 0.2, baseline_decay: float = 0.9, entropy_weight: float = 0.05, penalty: float = 1.0,
              max_tries: int = 200_000, max_steps: int | None = None, sample_fn: SampleFn = sample,
              step_fn: StepFn = policy_gradient_step,
              progress: Callable[[int], None] | None = None) -> SearchResult:
    """REINFORCE on the predicted accuracy until ``queries`` distinct archs are scored (or ``max_steps``).

    Returns the engine's :class:`~nas_lab.search.SearchResult` (strategy ``"rl"``): the best arch seen, its
    costs, the top 100 distinct archs scored, and a history entry per policy step with the best-so-far and
    batch-mean predicted accuracy, the queries so far, the baseline and the policy's entropy (plot ``best``
    against ``queries`` to compare with random search and evolution). ``max_steps`` (default: 10 x queries /
    batch_size) bounds a policy that has converged and stopped proposing new archs: the result's ``queries`` is
    then below the budget (compare the others' best-so-far at that count). ``max_tries`` bounds the draws of one
    step. ``sample_fn`` and ``step_fn`` replace :func:`sample` and :func:`policy_gradient_step` (the lab's
    exercises).
    """
    start, constraints = time.perf_counter(), check_constraints(constraints)
    if queries < 1 or batch_size < 1 or not 0 <= baseline_decay < 1:
        raise ValueError(f"need queries >= 1, batch_size >= 1 and 0 <= baseline_decay < 1; got {queries}, "
                         f"{batch_size}, {baseline_decay}")
    model = CostModel(space, latency_table)
    sp = model.space
    model.check_reachable(constraints)
    scorer = Scorer(predictor, sp)
    rng = torch.Generator().manual_seed(seed)
    logits = init_logits(sp)
    optimizer = torch.optim.Adam([logits], lr=lr)
    max_steps = max_steps if max_steps is not None else 10 * math.ceil(queries / batch_size)
    baseline: float | None = None
    best = -math.inf
    history: list[dict[str, float]] = []
    step = 0
    while scorer.queries < queries and step < max_steps:
        step += 1
        before = scorer.queries
        genes, log_prob, feasible = draw_feasible(logits, rng, batch_size, model, constraints, max_tries,
                                                  sample_fn)
        n_ok = int(feasible.sum())
        keep = _new_prefix(genes[:n_ok], scorer, sp, queries - scorer.queries)
        reward_ok = torch.as_tensor(scorer(genes[:keep]), dtype=torch.float32)     # (k,) percent
        best = max(best, float(reward_ok.max()))
        b = float(reward_ok.mean()) if baseline is None else baseline
        n_bad = len(genes) - n_ok
        reward = torch.cat([reward_ok, torch.full((n_bad,), b - penalty)])           # (k + n_bad,)
        step_fn(optimizer, logits, torch.cat([log_prob[:keep], log_prob[n_ok:]]), reward, b, entropy_weight)
        baseline = update_baseline(baseline, reward_ok, baseline_decay)
        history.append({"step": step, "best": best, "mean": float(reward_ok.mean()), "queries": scorer.queries,
                        "baseline": baseline, "entropy": float(_entropy(logits.detach()))})
        if progress:
            progress(scorer.queries - before)
    return _result(scorer, model, constraints, seed, start, history)


def _result(scorer: Scorer, model: CostModel, constraints: dict[str, float], seed: int, start: float,
            history: list[dict[str, float]], keep: int = 100) -> SearchResult:
    """The engine's result from every distinct arch scored: the best, its costs, the top ``keep``."""
    keys = list(scorer.cache)
    scores = np.array([scorer.cache[k] for k in keys])
    order = np.argsort(-scores, kind="stable")[:keep]
    genes = np.stack([np.frombuffer(keys[i], dtype=np.int64) for i in order])     # canonical rows
    costs: dict[str, float] = {k: float(v[0]) for k, v in model.costs(genes[:1]).items()}
    costs["params"] = int(costs["params"])
    archs = eff.from_genes(genes, model.space)
    return SearchResult(archs[0], float(scores[order[0]]), costs, "rl", constraints, seed, scorer.queries,
                        time.perf_counter() - start, history, list(zip(archs, scores[order].tolist())))
