"""Constrained architecture search: random search, evolution (OFA-style) and the Pareto front.

Everything works on a population's integer **gene matrix** (:mod:`nas_lab.efficiency`), so sampling,
mutation, crossover, costing and encoding are a few numpy operations per generation, not a Python loop
per arch; the OFA default budget (population 100 x 500 generations) takes about a second.

- Constraints: upper limits on the cost metrics of :data:`nas_lab.efficiency.COST_METRICS`: ``macs``
  (millions), ``peak_memory_kb``, ``latency_ms`` (needs a :class:`~nas_lab.latency.LatencyTable`) and
  ``params``. An unknown key is an error listing the allowed keys (never silently ignored); a limit below
  the smallest reachable value is an error stating that value.
- Sampling is bounded: at most ``max_tries`` candidates, then an error (no ``while True``).
- The predictor is any callable mapping a list of ``Arch`` to accuracies (percent), called in batches;
  one with a ``predict_genes`` method (the shipped MLP) is called on gene matrices directly. Each distinct
  arch is queried once (cached by its canonical genes, i.e. its arch string).
- ``select_parents`` and ``crossover`` are small functions you can replace (Lab 4 asks you to write them);
  :func:`arch_crossover` adapts a crossover written on ``Arch`` objects.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas_lab import efficiency as eff
from nas_lab.artifacts import LATENCY_REBUILD
from nas_lab.progress import bar as progress_bar
from nas_lab.space import Arch, SearchSpace

CONSTRAINT_KEYS = tuple(eff.COST_METRICS)  # ("macs", "peak_memory_kb", "latency_ms", "params")
Predictor = Callable[[Sequence[Arch]], Sequence[float]]
Crossover = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


class ConstraintError(ValueError):
    """An unknown constraint key, or constraints no arch of the space satisfies (within the tries)."""


def check_constraints(constraints: Mapping[str, float | None] | None) -> dict[str, float]:
    """Validated constraints (``None`` values dropped); unknown keys raise, listing the allowed ones."""
    out = {}
    for key, value in (constraints or {}).items():
        if key not in CONSTRAINT_KEYS:
            raise ConstraintError(f"unknown constraint {key!r}; allowed keys: {', '.join(CONSTRAINT_KEYS)}")
        if value is not None:
            if not float(value) > 0:
                raise ConstraintError(f"constraint {key} must be a positive number, got {value!r}")
            out[key] = float(value)
    return out


class CostModel:
    """Vectorised costs of gene matrices: the analytic metrics, plus latency when a table is given."""

    def __init__(self, space: SearchSpace | None = None, latency_table: Any = None) -> None:
        self.space, self.latency = space or SearchSpace(), latency_table
        self.tables = eff.tables(self.space)

    def metric(self, genes: np.ndarray | eff.Lookup, key: str) -> np.ndarray:
        """One metric of every row of a gene matrix (or of its :func:`~nas_lab.efficiency.lookup`)."""
        if key not in eff.COST_METRICS:
            raise ConstraintError(f"unknown metric {key!r}; allowed keys: {', '.join(CONSTRAINT_KEYS)}")
        if key in self.tables:
            return eff.COST_METRICS[key].report(self.tables[key].evaluate(genes))
        return self._latency().predict_genes(genes)

    def _latency(self) -> Any:
        if self.latency is None:
            raise ConstraintError(f"a latency constraint needs a latency table (build one with: {LATENCY_REBUILD})")
        return self.latency

    def costs(self, genes: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric this model can compute (latency only with a table) of every row, by key."""
        keys = [k for k in CONSTRAINT_KEYS if k in self.tables or self.latency is not None]
        lk = eff.lookup(genes, self.space)
        return {k: self.metric(lk, k) for k in keys}

    def feasible(self, genes: np.ndarray, constraints: Mapping[str, float]) -> np.ndarray:
        """(N,) bool: does each row meet every constraint?"""
        ok = np.ones(len(genes), dtype=bool)
        lk = eff.lookup(genes, self.space) if constraints else None
        for key, limit in constraints.items():
            ok &= self.metric(lk, key) <= limit
        return ok

    def minimum(self, key: str) -> float:
        """Smallest value of ``key`` reachable in the space (exact minimisation over the tables)."""
        if key in self.tables:
            return eff.minimum(key, self.space)
        return self._latency().minimum()

    def check_reachable(self, constraints: Mapping[str, float]) -> None:
        """Raise :class:`ConstraintError` if a limit is below the smallest reachable value of its metric."""
        for key, limit in constraints.items():
            low = self.minimum(key)
            if limit < low:
                unit = eff.COST_METRICS[key].unit
                raise ConstraintError(f"infeasible constraint {key} <= {limit:g}: the smallest {key} reachable in "
                                      f"this space is {low:.6g} {unit} (e.g. {self.space.smallest()})")


# ---- variation operators (small, replaceable) -----------------------------------------------------------
def sample_genes(space: SearchSpace, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniformly random archs as genes (every choice of every gene equally likely)."""
    sizes = eff.gene_sizes(space)
    return (rng.random((n, len(sizes))) * sizes).astype(np.int64)


def mutate(genes: np.ndarray, space: SearchSpace, rng: np.random.Generator, prob: float = 0.1,
           resolution_prob: float = 0.5) -> np.ndarray:
    """Resample each gene with probability ``prob`` (resolution and width: ``resolution_prob``), like
    :meth:`SearchSpace.mutate` for a whole batch of rows at once."""
    layout = eff.GeneLayout.of(space)
    p = np.full(genes.shape[1], prob)
    p[[layout.resolution, layout.width]] = resolution_prob
    redraw = rng.random(genes.shape) < p
    return np.where(redraw, sample_genes(space, len(genes), rng), genes)


def crossover(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-gene coin flip: each gene of each child row comes from ``a`` or ``b`` with probability 1/2."""
    return np.where(rng.random(a.shape) < 0.5, a, b)


def _best_first(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` best-scoring rows, best first (ties: lower index first)."""
    return np.argsort(-np.asarray(scores), kind="stable")[:n]


def select_parents(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` best-scoring rows, best first (ties: lower index first).

    Evolution's default parent selection, and the function Lab 4 asks students to write: the engine's own
    bookkeeping (best-so-far, the final ranking) sorts with a private copy, so a test that guards this
    function (``own_work``) can still run a search with the student's selection.
    """
    return _best_first(scores, n)


def arch_crossover(fn: Callable[[Arch, Arch, random.Random], Arch],
                   space: SearchSpace | None = None) -> Crossover:
    """Adapt ``fn(a: Arch, b: Arch, rng: random.Random) -> Arch`` to the batched gene form (slower, seeded)."""
    space = space or SearchSpace()

    def batched(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        r = random.Random(int(rng.integers(2**63)))
        children = [fn(x, y, r) for x, y in zip(eff.from_genes(a, space), eff.from_genes(b, space))]
        return eff.to_genes(children, space)
    return batched


# ---- scoring with a cache -------------------------------------------------------------------------------
class Scorer:
    """Predicted accuracy of gene rows, each distinct arch queried once; ``queries`` counts them."""

    def __init__(self, predictor: Predictor, space: SearchSpace) -> None:
        self.predictor, self.space = predictor, space
        self.cache: dict[bytes, float] = {}
        self.fast = callable(getattr(predictor, "predict_genes", None))

    @property
    def queries(self) -> int:
        return len(self.cache)

    def __call__(self, genes: np.ndarray) -> np.ndarray:
        canon = eff.canonical(genes, self.space)
        keys = [row.tobytes() for row in canon]
        todo: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in self.cache and k not in todo:
                todo[k] = i
        if todo:
            rows = canon[list(todo.values())]
            if self.fast:
                values = self.predictor.predict_genes(rows)  # type: ignore[attr-defined]
            else:
                values = self.predictor(eff.from_genes(rows, self.space))
            values = np.asarray(values, dtype=np.float64).reshape(-1)
            if len(values) != len(rows):
                raise ValueError(f"predictor returned {len(values)} values for {len(rows)} archs")
            self.cache.update(zip(todo, values.tolist()))
        return np.array([self.cache[k] for k in keys])


# ---- results --------------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    """The best arch found, its predicted accuracy (percent) and costs, and how the search went."""

    arch: Arch
    predicted_accuracy: float
    costs: dict[str, float]
    strategy: str
    constraints: dict[str, float]
    seed: int
    queries: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)  # per generation / batch
    population: list[tuple[Arch, float]] = field(default_factory=list)  # final, best first

    def to_json(self) -> dict[str, Any]:
        return {"arch": str(self.arch), "predicted_accuracy": self.predicted_accuracy, **self.costs,
                "strategy": self.strategy, "constraints": self.constraints, "seed": self.seed,
                "queries": self.queries, "seconds": self.seconds}


def _result(strategy: str, genes: np.ndarray, scores: np.ndarray, model: CostModel, scorer: Scorer,
            constraints: dict[str, float], seed: int, start: float, history: list) -> SearchResult:
    order = _best_first(scores, len(scores))
    best = genes[order[:1]]
    costs = {k: float(v[0]) for k, v in model.costs(best).items()}
    costs["params"] = int(costs["params"])
    archs = eff.from_genes(genes[order], model.space)
    return SearchResult(archs[0], float(scores[order[0]]), costs, strategy, constraints, seed, scorer.queries,
                        time.perf_counter() - start, history, list(zip(archs, scores[order].tolist())))


# ---- sampling under constraints -------------------------------------------------------------------------
def sample_feasible(n: int, model: CostModel, constraints: Mapping[str, float], rng: np.random.Generator,
                    max_tries: int = 200_000) -> np.ndarray:
    """``n`` uniformly random archs meeting the constraints, drawing at most ``max_tries`` candidates."""
    model.check_reachable(constraints)
    found, tried, batch = [], 0, max(4 * n, 512)
    while sum(len(f) for f in found) < n and tried < max_tries:
        cand = sample_genes(model.space, min(batch, max_tries - tried), rng)
        tried += len(cand)
        found.append(cand[model.feasible(cand, constraints)])
    genes = np.concatenate(found)[:n] if found else np.zeros((0, 0), np.int64)
    if len(genes) < n:
        low = {k: round(model.minimum(k), 4) for k in constraints}
        raise ConstraintError(f"only {len(genes)} of {n} archs meeting {constraints} found in {max_tries} random "
                              f"tries; each limit alone is reachable (smallest values: {low}) but together they "
                              f"are too tight for random sampling: loosen them or raise max_tries")
    return genes


def _repair(make: Callable[[np.ndarray, np.ndarray], np.ndarray], a: np.ndarray, b: np.ndarray, model: CostModel,
            constraints: Mapping[str, float], tries: int, width: int = 8) -> np.ndarray:
    """Children ``make(a, b)``; each infeasible one is redrawn from the same parents (``width`` draws at a time,
    the first feasible one kept) up to ``tries`` times in all, then the parent in ``a`` is copied."""
    children = make(a, b)
    if not constraints:
        return children
    bad = np.nonzero(~model.feasible(children, constraints))[0]
    for _ in range(max(1, -(-tries // width))):
        if not len(bad):
            return children
        rep = np.repeat(bad, width)
        cand = make(a[rep], b[rep]).reshape(len(bad), width, -1)
        ok = model.feasible(cand.reshape(len(rep), -1), constraints).reshape(len(bad), width)
        hit = ok.any(1)
        children[bad[hit]] = cand[hit, ok[hit].argmax(1)]
        bad = bad[~hit]
    children[bad] = a[bad]
    return children


# ---- strategies -----------------------------------------------------------------------------------------
def random_search(predictor: Predictor, num_samples: int = 10_000, constraints: Mapping[str, float] | None = None,
                  space: SearchSpace | None = None, latency_table: Any = None, seed: int = 0,
                  batch_size: int = 1000, max_tries: int = 200_000,
                  progress: Callable[[int], None] | None = None) -> SearchResult:
    """Score ``num_samples`` random feasible archs in batches; return the best (history per batch)."""
    start, constraints = time.perf_counter(), check_constraints(constraints)
    model = CostModel(space, latency_table)
    rng, scorer = np.random.default_rng(seed), Scorer(predictor, model.space)
    best_g, best_s, history, done = None, None, [], 0
    own = progress_bar(total=num_samples, enabled=progress is None, desc="random search", unit="arch")
    while done < num_samples:
        n = min(batch_size, num_samples - done)
        genes = sample_feasible(n, model, constraints, rng, max_tries)
        scores = scorer(genes)
        keep = _best_first(scores, min(n, 100))
        if best_g is not None:
            genes, scores = np.concatenate([best_g, genes[keep]]), np.concatenate([best_s, scores[keep]])
            keep = _best_first(scores, min(len(scores), 100))
        best_g, best_s = genes[keep], scores[keep]
        done += n
        history.append({"samples": done, "best": float(best_s[0]), "mean": float(scores.mean()),
                        "queries": scorer.queries})
        (progress or own.update)(n)
    own.close()
    return _result("random", best_g, best_s, model, scorer, constraints, seed, start, history)


def evolution_search(predictor: Predictor, constraints: Mapping[str, float] | None = None,
                     space: SearchSpace | None = None, latency_table: Any = None, population: int = 100,
                     generations: int = 500, parent_ratio: float = 0.25, mutation_ratio: float = 0.5,
                     mutate_prob: float = 0.1, resolution_prob: float = 0.5, seed: int = 0,
                     select: Callable[[np.ndarray, int], np.ndarray] = select_parents,
                     cross: Crossover = crossover,
                     max_tries: int = 200_000, child_tries: int = 200,
                     progress: Callable[[int], None] | None = None) -> SearchResult:
    """OFA's evolution: keep the best ``parent_ratio``, add mutants of random parents (``mutation_ratio``) and
    crossovers of random parent pairs (the rest), each redrawn until it meets the constraints (at most
    ``child_tries`` times, then the parent is copied). History: best / mean predicted accuracy of the
    population and queries so far, per generation (generation 0 = the initial population)."""
    start, constraints = time.perf_counter(), check_constraints(constraints)
    model = CostModel(space, latency_table)
    sp = model.space
    rng, scorer = np.random.default_rng(seed), Scorer(predictor, sp)
    n_par = max(1, int(round(population * parent_ratio)))
    n_mut = int(round(population * mutation_ratio))
    n_cross = population - n_par - n_mut
    if population < 1 or generations < 0 or n_cross < 0 or not 0 < parent_ratio <= 1:
        raise ValueError(f"need population >= 1, generations >= 0, 0 < parent_ratio <= 1 and parent_ratio + "
                         f"mutation_ratio <= 1; got {population}, {generations}, {parent_ratio}, {mutation_ratio}")
    genes = sample_feasible(population, model, constraints, rng, max_tries)
    scores = scorer(genes)

    def log(g: int) -> None:
        history.append({"generation": g, "best": float(scores.max()), "mean": float(scores.mean()),
                        "queries": scorer.queries})
    history: list[dict[str, float]] = []
    log(0)
    def mutant(a: np.ndarray, _: np.ndarray) -> np.ndarray:
        return mutate(a, sp, rng, mutate_prob, resolution_prob)

    def child(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return cross(a, b, rng)

    own = progress_bar(total=generations, enabled=progress is None, desc="evolution", unit="generation")
    for g in range(1, generations + 1):
        parents = genes[select(scores, n_par)]
        src = parents[rng.integers(n_par, size=n_mut)]
        mutants = _repair(mutant, src, src, model, constraints, child_tries)
        pa, pb = parents[rng.integers(n_par, size=n_cross)], parents[rng.integers(n_par, size=n_cross)]
        children = _repair(child, pa, pb, model, constraints, child_tries)
        genes = np.concatenate([parents, mutants, children])
        scores = scorer(genes)
        log(g)
        (progress or own.update)(1)
    own.close()
    return _result("evolution", genes, scores, model, scorer, constraints, seed, start, history)


# ---- Pareto front ---------------------------------------------------------------------------------------
def pareto_front(objectives: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Indices of the non-dominated rows of ``objectives`` (N, M), sorted by the first objective.

    A row is dominated if another row is at least as good in every objective and strictly better in one;
    duplicate points are all kept.
    """
    obj = np.asarray(objectives, dtype=float)
    if obj.ndim != 2 or obj.shape[1] != len(maximize):
        raise ValueError(f"objectives must be (N, {len(maximize)}), got {obj.shape}")
    x = np.where(np.asarray(maximize), -obj, obj)  # now every objective is minimised
    keep = np.ones(len(x), dtype=bool)
    for i in range(0, len(x), 512):
        block = x[i:i + 512]
        le = (x[None, :, :] <= block[:, None, :]).all(-1)
        lt = (x[None, :, :] < block[:, None, :]).any(-1)
        keep[i:i + 512] = ~(le & lt).any(1)
    idx = np.nonzero(keep)[0]
    return idx[np.argsort(x[idx, 0], kind="stable")]


def pareto_archs(archs: Sequence[Arch], accuracy: Sequence[float], cost: Sequence[float]) -> list[int]:
    """Indices of the archs on the accuracy (max) vs cost (min) front, cheapest first."""
    idx = pareto_front(np.column_stack([cost, accuracy]), [False, True])
    return idx.tolist()
