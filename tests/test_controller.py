"""REINFORCE controller: sampling matches the softmax, policy gradients move the right way, rl_search obeys the
engine's constraint and query semantics, and ``nas-lab search --strategy rl``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nas_lab import controller as C
from nas_lab import efficiency as eff
from nas_lab import search as S
from nas_lab.accuracy import MLPPredictor
from nas_lab.cli import main
from nas_lab.latency import LatencyTable, space_layers
from nas_lab.space import SearchSpace

torch.set_num_threads(1)
SPACE = SearchSpace()
SIZES = eff.gene_sizes(SPACE)
LAYOUT = eff.GeneLayout.of(SPACE)


def macs_predictor(archs):
    """Bigger is better: under a MACs limit the optimum sits just below the limit."""
    return eff.costs_many(archs)["macs"]


def random_logits(seed: int = 0) -> torch.Tensor:
    logits = C.init_logits(SPACE).detach()
    noise = torch.randn(logits.shape, generator=torch.Generator().manual_seed(seed))
    return torch.where(logits > C.MASKED, noise, logits).requires_grad_(True)


# ---- the policy ------------------------------------------------------------------------------------------
def test_uniform_policy_has_one_row_per_gene_and_the_right_entropy():
    logits = C.init_logits(SPACE)
    assert logits.shape == (LAYOUT.size, SIZES.max()) and logits.requires_grad
    probs = C.probabilities(logits)
    for g, k in enumerate(SIZES):
        assert torch.allclose(probs[g, :k], torch.full((k,), 1 / k)) and (probs[g, k:] == 0).all()
    assert float(C.entropy(logits.detach())) == pytest.approx(float(np.log(SIZES).sum()), rel=1e-6)


def test_sample_frequencies_match_the_softmax():
    logits = random_logits(1)
    n = 20_000
    genes, log_prob = C.sample(logits, torch.Generator().manual_seed(0), n)
    assert genes.shape == (n, LAYOUT.size) and log_prob.shape == (n,)
    assert (genes < torch.as_tensor(SIZES)).all()  # a masked choice is never drawn
    probs = C.probabilities(logits).numpy()
    for g, k in enumerate(SIZES):
        counts = np.bincount(genes[:, g].numpy(), minlength=k)
        expected = n * probs[g, :k]
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 25, (g, counts, expected)  # df <= 3: p < 1e-4 for a correct sampler
    # log_prob is the sum over decisions of log softmax at the drawn choices
    log_p = torch.log_softmax(logits.detach(), -1)
    for i in (0, 7, n - 1):
        hand = sum(float(log_p[g, genes[i, g]]) for g in range(LAYOUT.size))
        assert float(log_prob[i].detach()) == pytest.approx(hand, abs=1e-4)


def test_sample_is_seeded():
    logits = random_logits(2)
    a, _ = C.sample(logits, torch.Generator().manual_seed(5), 50)
    b, _ = C.sample(logits, torch.Generator().manual_seed(5), 50)
    c, _ = C.sample(logits, torch.Generator().manual_seed(6), 50)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_policy_gradient_matches_the_closed_form():
    # one sample with advantage A: d(-A log p_k)/dz_j = -A (1[j=k] - p_j), and the entropy term adds its own
    logits = random_logits(3)
    genes, log_prob = C.sample(logits, torch.Generator().manual_seed(0), 1)
    opt = torch.optim.SGD([logits], lr=0.0)  # lr 0: keep the logits, inspect the gradient
    C.policy_gradient_step(opt, logits, log_prob, torch.tensor([3.0]), 1.0, 0.0)
    p = C.probabilities(logits)
    onehot = torch.zeros_like(p).scatter_(1, genes.T, 1.0)
    assert torch.allclose(logits.grad, -2.0 * (onehot - p), atol=1e-6)


def test_policy_gradient_moves_probability_towards_the_rewarded_choice():
    logits = C.init_logits(SPACE)
    opt = torch.optim.Adam([logits], lr=0.1)
    rng = torch.Generator().manual_seed(0)
    col, target = LAYOUT.resolution, 3
    baseline = None
    for _ in range(30):
        genes, log_prob = C.sample(logits, rng, 16)
        reward = (genes[:, col] == target).float()  # 1 for resolution 28, else 0
        b = float(reward.mean()) if baseline is None else baseline
        C.policy_gradient_step(opt, logits, log_prob, reward, b, 0.0)
        baseline = C.update_baseline(baseline, reward, 0.8)
    p = C.probabilities(logits)
    assert p[col, target] > 0.6  # from 0.25
    assert (p[col, :target] < 0.25).all()


def test_entropy_bonus_alone_keeps_the_policy_uniform_and_flattens_a_peaked_one():
    logits = random_logits(4)
    opt = torch.optim.Adam([logits], lr=0.05)
    start = float(C.entropy(logits.detach()))
    for _ in range(50):
        C.policy_gradient_step(opt, logits, torch.zeros(1, requires_grad=True), torch.zeros(1), 0.0, 1.0)
    assert float(C.entropy(logits.detach())) > start
    unused = torch.as_tensor(SIZES[:, None] <= np.arange(SIZES.max())[None, :])
    assert (logits.detach()[unused] == C.MASKED).all()


def test_update_baseline_is_an_ema():
    assert C.update_baseline(None, torch.tensor([1.0, 3.0]), 0.9) == 2.0
    assert C.update_baseline(2.0, torch.tensor([4.0]), 0.75) == pytest.approx(2.5)


# ---- the search ------------------------------------------------------------------------------------------
def test_rl_search_respects_constraints_is_seeded_and_counts_queries_exactly():
    limits = {"macs": 1.0, "peak_memory_kb": 12.0}
    r1 = C.rl_search(macs_predictor, limits, queries=300, seed=3)
    r2 = C.rl_search(macs_predictor, limits, queries=300, seed=3)
    r3 = C.rl_search(macs_predictor, limits, queries=300, seed=4)
    assert isinstance(r1, S.SearchResult) and r1.strategy == "rl"
    assert r1.queries == 300 and r1.history[-1]["queries"] == 300
    assert r1.arch == r2.arch and r1.history == r2.history and r1.population == r2.population
    assert r1.population != r3.population
    c = eff.costs_many([a for a, _ in r1.population])
    assert (c["macs"] <= 1.0).all() and (c["peak_memory_kb"] <= 12.0).all()
    assert r1.predicted_accuracy == pytest.approx(r1.costs["macs"]) == r1.population[0][1]
    best = [h["best"] for h in r1.history]
    queries = [h["queries"] for h in r1.history]
    assert best == sorted(best) and queries == sorted(queries)
    assert set(r1.to_json()) == set(S.random_search(macs_predictor, 10, limits).to_json())


def test_each_distinct_arch_is_queried_once():
    calls = []

    def predictor(archs):
        calls.append(len(archs))
        return macs_predictor(archs)
    r = C.rl_search(predictor, {"macs": 2.0}, queries=250, seed=0, batch_size=10)
    assert sum(calls) == r.queries == 250


def test_rl_learns_a_known_optimum():
    r = C.rl_search(macs_predictor, {"macs": 2.0}, queries=1500, seed=0)
    assert r.history[-1]["best"] > r.history[0]["best"]
    assert r.history[-1]["mean"] > r.history[0]["mean"] + 0.3  # the policy itself improved, not just luck
    assert 1.95 < r.costs["macs"] <= 2.0


def test_rl_search_errors_like_the_engine():
    low = eff.minimum("macs")
    with pytest.raises(S.ConstraintError, match=f"smallest macs reachable in this space is {low:.6g}"):
        C.rl_search(macs_predictor, {"macs": low / 2}, queries=10)
    with pytest.raises(S.ConstraintError, match="'mac'.*allowed keys"):
        C.rl_search(macs_predictor, {"mac": 2.0}, queries=10)
    with pytest.raises(S.ConstraintError, match="too tight"):  # each limit reachable, jointly not by sampling
        C.rl_search(macs_predictor, {"macs": 0.1, "params": 10_100, "peak_memory_kb": 3.6}, queries=10,
                    max_tries=2000)
    with pytest.raises(ValueError, match="queries"):
        C.rl_search(macs_predictor, queries=0)


def test_a_stuck_policy_is_bounded_by_max_steps():
    def frozen_step(optimizer, logits, log_prob, reward, baseline, entropy_weight):
        return 0.0  # never learns; with one choice per gene left it proposes one arch forever

    space = SPACE.restrict(resolutions=(16,), widths=(0.5,), depths=(1,), kernels=(3,), expands=(3,))
    r = C.rl_search(macs_predictor, queries=50, space=space, step_fn=frozen_step, max_steps=20)
    assert r.queries == 1 and len(r.history) == 20


def test_student_functions_plug_in():
    seen = {"sample": 0, "step": 0}

    def student_sample(logits, rng, n=1):  # written another way: torch.distributions
        seen["sample"] += 1
        probs = torch.softmax(logits.detach(), -1)
        picks = torch.multinomial(probs, n, replacement=True, generator=rng).T      # (n, G)
        dist = torch.distributions.Categorical(logits=logits)
        return picks, dist.log_prob(picks).sum(-1)

    def student_step(optimizer, logits, log_prob, reward, baseline, entropy_weight):
        seen["step"] += 1
        return C.policy_gradient_step(optimizer, logits, log_prob, reward, baseline, entropy_weight)

    ref = C.rl_search(macs_predictor, {"macs": 2.0}, queries=200, seed=1)
    mine = C.rl_search(macs_predictor, {"macs": 2.0}, queries=200, seed=1, sample_fn=student_sample,
                       step_fn=student_step)
    assert seen["step"] == len(mine.history) and seen["sample"] >= seen["step"]
    assert mine.arch == ref.arch and [h["best"] for h in mine.history] == pytest.approx(
        [h["best"] for h in ref.history])


def test_latency_constraint_with_a_table():
    table = LatencyTable({k: 0.01 + v.macs() / 1e6 for k, v in space_layers(SPACE).items()}, {}, SPACE)
    r = C.rl_search(macs_predictor, {"latency_ms": 1.0}, queries=200, latency_table=table, seed=0)
    assert table.predict(r.arch) <= 1.0 and r.costs["latency_ms"] == pytest.approx(table.predict(r.arch))


# ---- CLI -------------------------------------------------------------------------------------------------
def test_cli_rl_json_has_the_engine_keys_and_is_seeded(tmp_path, capsys):
    pred = MLPPredictor(hidden=(16,)).save(tmp_path / "p.safetensors")
    args = ["search", "--strategy", "rl", "--predictor", str(pred), "--max-macs", "1.5", "--queries", "120",
            "--seed", "2", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("arch", "predicted_accuracy", "macs", "peak_memory_kb", "latency_ms", "params", "queries",
                "seconds", "strategy"):
        assert key in out
    assert out["strategy"] == "rl" and out["queries"] == 120 and out["macs"] <= 1.5
    assert eff.costs(SPACE.parse(out["arch"])).macs == pytest.approx(out["macs"])
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["arch"] == out["arch"] and math.isclose(again["predicted_accuracy"], out["predicted_accuracy"])
    assert main(["search", "--strategy", "rl", "--predictor", str(pred), "--max-macs", "0.01", "--json"]) == 2
    assert "smallest macs reachable" in capsys.readouterr().err
    assert main(["search", "--strategy", "rl", "--predictor", str(pred), "--queries", "0", "--json"]) == 2


def test_rl_search_runs_while_the_lab_switches_the_library_policy_off():
    """Lab 5's tests run rl_search with the student's functions while sample, policy_gradient_step and entropy
    raise (own_work): the engine must need none of them itself."""
    from nas_lab.own_work import own_work

    def student_step(optimizer, logits, log_prob, reward, baseline, entropy_weight):
        log_p = torch.log_softmax(logits, -1)
        loss = -((reward - baseline) * log_prob).mean() + entropy_weight * (log_p.exp() * log_p).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def student_sample(logits, rng, n=1):
        picks = torch.multinomial(torch.softmax(logits.detach(), -1), n, replacement=True, generator=rng).T
        return picks, torch.log_softmax(logits, -1).gather(1, picks.T).sum(0)

    ref = C.rl_search(macs_predictor, {"macs": 2.0}, queries=150, seed=2)
    with own_work("Q", "it", C.sample, C.policy_gradient_step, C.entropy):
        mine = C.rl_search(macs_predictor, {"macs": 2.0}, queries=150, seed=2, sample_fn=student_sample,
                           step_fn=student_step)
    assert mine.arch == ref.arch and [h["entropy"] for h in mine.history] == pytest.approx(
        [h["entropy"] for h in ref.history], rel=1e-4)
