"""Petridish pieces: the stop layers, attaching candidates without changing the parent, gradient scoring
with an L1 penalty, choosing, growth reproducibility and the Pareto front of a growth history."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from nas_lab import net2net
from nas_lab import petridish as P
from nas_lab.counting import conv2d_macs, count_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _x(n: int = 16, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))  # (N, 1, s, s)


def _net(seed: int = 0) -> P.PetriNet:
    return P.PetriNet((4, 6, 6), (1, 2, 1), seed=seed)  # nodes: 0 (1 ch), 1 (4), 2 (6, stride 2), 3 (6)


def test_stop_forward_outputs_zero_and_passes_the_gradient():
    x = _x().requires_grad_()
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    y = P.StopForward.apply(x * 3.0)
    assert torch.equal(y, torch.zeros_like(x))
    (y * upstream).sum().backward()
    torch.testing.assert_close(x.grad, 3.0 * upstream)


def test_stop_gradient_passes_values_and_blocks_the_gradient():
    x = _x().requires_grad_()
    y = P.StopGradient.apply(x)
    assert torch.equal(y, x)
    (2.0 * x + 5.0 * y).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 2.0))  # only the direct path counts


def test_candidates_cover_the_legal_positions():
    net = _net()
    pool = P.candidates(net, torch.Generator().manual_seed(0))
    positions = {(b.src, b.dst) for b in pool}
    assert positions == {(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)}  # span <= 2, total stride <= 2
    assert [b.name for b in pool if b.op_name == "skip"] == ["skip:2->3"]  # shapes match only there
    net.branches.append(pool[0])
    assert pool[0].name not in {b.name for b in P.candidates(net, torch.Generator().manual_seed(0))}


def test_attached_candidates_change_neither_outputs_nor_parent_gradients():
    net = _net()
    gen = torch.Generator().manual_seed(0)
    net.branches.append(P.Branch(1, 3, "conv3x3", P.make_op("conv3x3", 4, 6, 2, gen), gate=0.7))
    probes = [P.Probe(b) for b in P.candidates(net, gen)]
    x, y = _x(), torch.arange(16) % 10
    for mode in ("train", "eval"):
        getattr(net, mode)()
        grads = []
        for extra in ((), probes):
            net.zero_grad()
            out = net(x, extra)
            F.cross_entropy(out, y).backward()
            grads.append((out.detach(), [p.grad.clone() for p in net.parameters()]))
        assert torch.equal(grads[0][0], grads[1][0])
        assert all(torch.equal(a, b) for a, b in zip(grads[0][1], grads[1][1]))
    assert all(p.branch.gate.grad is not None and p.branch.gate.grad != 0 for p in probes)


def test_probes_accept_other_stop_layers_and_the_oracle_catches_a_wrong_one():
    net, x, y = _net().eval(), _x(), torch.arange(16) % 10
    pool = P.candidates(net, torch.Generator().manual_seed(0))
    ref = P.score_candidates(net, copy.deepcopy(pool), [(x, y)], l1=0.0).gate_grads
    other = lambda b: P.Probe(b, lambda t: t - t.detach(), lambda t: t.detach())  # noqa: E731
    torch.testing.assert_close(P.score_candidates(net, copy.deepcopy(pool), [(x, y)], probe=other).gate_grads, ref)
    leaky = [P.Probe(b, lambda t: t) for b in pool]  # forgets to zero the forward pass
    assert not torch.equal(net(x, leaky), net(x))


def test_a_branch_with_gate_zero_is_function_preserving():
    net, x = _net().eval(), _x()
    before = net(x)
    net.branches.append(P.Branch(0, 2, "sep3x3", P.make_op("sep3x3", 1, 6, 2, torch.Generator()), gate=0.0))
    assert torch.equal(net(x), before)
    macs = count_model(net, x[:1]).macs - count_model(_net(), x[:1]).macs
    assert macs == conv2d_macs(1, 1, 3, 6, 6, groups=1) + conv2d_macs(1, 6, 1, 6, 6)


def _blind_parent() -> tuple[P.PetriNet, torch.Tensor, torch.Tensor]:
    """A parent whose first layer sees nothing (zero filters, BN bias 0): node 1 is all zeros, so the
    labels, a function of the image, can only be learnt from the image itself."""
    net = P.PetriNet((4, 6), (1, 1), seed=0)
    with torch.no_grad():
        net.layers[0].conv.weight.zero_()
    x = _x(64, 8, seed=3)
    y = (x.mean((1, 2, 3)) > 0).long()  # (64,) two classes
    return net.eval(), x, y


def test_scoring_prefers_the_candidate_that_can_lower_the_loss():
    net, x, y = _blind_parent()
    gen = torch.Generator().manual_seed(0)
    seeing = P.Branch(0, 2, "conv3x3", P.make_op("conv3x3", 1, 6, 1, gen))  # reads the image
    blind = P.Branch(1, 2, "conv3x3", P.make_op("conv3x3", 4, 6, 1, gen))  # reads the all-zero node 1
    base = F.cross_entropy(net(x), y)
    probe = P.score_candidates(net, [copy.deepcopy(seeing), copy.deepcopy(blind)], [(x, y)], l1=0.0)
    g_seeing, g_blind = probe.gate_grads.abs().tolist()
    assert g_blind == 0.0 and g_seeing > 1e-3
    l1 = g_seeing / 2
    scores = P.score_candidates(net, [seeing, blind], [(x, y)], l1=l1, steps=1, lr=0.1)
    assert scores.gates[0] > 0 and scores.gates[1] == 0
    torch.testing.assert_close(scores.gates[0], torch.tensor(0.1 * (g_seeing - l1)))
    assert P.choose([seeing, blind], scores.gates, max_add=2) == [0]
    for branch, lowers in ((seeing, True), (blind, False)):  # add it for real, with its scored gate
        grown = copy.deepcopy(net)
        grown.branches.append(copy.deepcopy(branch).train())
        loss = F.cross_entropy(grown(x), y)
        assert (loss < base - 1e-5) if lowers else torch.equal(loss, base)
    with torch.no_grad():
        blind.gate.fill_(1.0)  # even at full strength the blind branch cannot change anything
    grown = copy.deepcopy(net)
    grown.branches.append(blind)
    assert torch.equal(F.cross_entropy(grown(x), y), base)


def test_one_step_keeps_exactly_the_gates_whose_gradient_beats_the_penalty():
    net = _net().eval()
    pool = P.candidates(net, torch.Generator().manual_seed(1))
    x, y = _x(32), torch.arange(32) % 10
    grads = P.score_candidates(net, copy.deepcopy(pool), [(x, y)], l1=0.0).gate_grads.abs()
    l1 = float(grads.median())
    gates = P.score_candidates(net, pool, [(x, y)], l1=l1, steps=1).gates
    assert torch.equal(gates > 0, grads > l1) and 0 < int((gates > 0).sum()) < len(pool)


def test_choose_takes_the_best_per_position_then_the_best_positions():
    pool = [P.Branch(s, d, "skip", torch.nn.Identity()) for s, d in [(0, 1), (0, 1), (1, 2), (1, 3), (2, 3)]]
    strength = torch.tensor([0.2, 0.5, 0.3, 0.0, 0.1])
    assert P.choose(pool, strength, max_add=2) == [1, 2]
    assert P.choose(pool, strength, max_add=5) == [1, 2, 4]  # the zero gate is never chosen
    assert P.choose(pool, torch.zeros(5), max_add=2) == []


def test_fresh_copy_has_the_same_architecture_and_new_weights():
    net, x = _net(), _x()
    gen = torch.Generator().manual_seed(2)
    for b in P.candidates(net, gen)[::4]:
        net.branches.append(b)
    new = P.fresh_copy(net, seed=9, gate=1.0)
    assert [b.name for b in new.branches] == [b.name for b in net.branches]
    assert all(float(b.gate) == 1.0 for b in new.branches)
    assert count_model(new, x[:1]).macs == count_model(net, x[:1]).macs
    assert not torch.equal(new.layers[0].conv.weight, net.layers[0].conv.weight)


def test_net2net_refuses_a_grown_net():
    net = _net()
    net.branches.append(P.Branch(2, 3, "skip", torch.nn.Identity()))
    with pytest.raises(ValueError, match="without grown branches"):
        net2net.net2wider(net, 0, 8)


TINY = dict(rounds=2, widths=(4, 8), strides=(1, 2), resolution=10, train_images=256, first_steps=6,
            steps_per_round=4, batch_size=32, eval_limit=200, max_add=2)


@pytest.mark.parametrize("strategy", P.STRATEGIES)
def test_growth_is_reproducible_per_seed(strategy):
    a, b = (P.grow(seed=4, strategy=strategy, **TINY) for _ in range(2))
    c = P.grow(seed=5, strategy=strategy, **TINY)
    assert [vars(p) for p in a.points] == [vars(p) for p in b.points]
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    assert not all(torch.equal(v, c.model.state_dict()[k]) for k, v in a.model.state_dict().items()
                   if k in c.model.state_dict() and v.shape == c.model.state_dict()[k].shape)
    assert [p.round for p in a.points] == [0, 1, 2] and a.train_steps == 6 + 2 * 4
    assert len(a.points[-1].branches) == sum(len(p.added) for p in a.points) <= 4
    assert a.points[-1].macs >= a.points[0].macs
    assert (a.score_images > 0) == (strategy == "petridish")


def test_front_of_a_hand_made_history():
    hist = P.GrowthHistory("petridish", 0)
    for i, (macs, acc) in enumerate([(100, 70.0), (200, 75.0), (150, 65.0), (300, 75.0), (400, 80.0), (90, 60.0)]):
        hist.points.append(P.GrowthPoint(i, macs, 0, acc, [], []))
    assert hist.front() == [5, 0, 1, 4]  # cheapest first; (150, 65) and (300, 75) are dominated


def test_mean_sd_and_table():
    assert P.mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0) and P.mean_sd([4.0]) == (4.0, 0.0)
    hist = P.GrowthHistory("random", 0, [P.GrowthPoint(0, 1000, 10, 50.0, [], [])], seconds=2.0)
    table = P.summary_table({"random": [hist, hist]})
    assert "random" in table and "50.00 +- 0.00" in table
    with pytest.raises(ValueError, match="unknown strategy"):
        P.grow(strategy="evolution")


def test_grow_runs_a_given_scorer_and_chooser():
    kw = dict(TINY, l1=0.01, score_steps=1, score_lr=0.1, score_op_lr=0.1)
    ref = P.grow(seed=3, **kw)
    calls = []

    def scorer(model, pool, batches):
        return P.score_candidates(model, pool, batches, 0.01, 1, 0.1, 0.1).gates

    def chooser(pool, strength, max_add):
        calls.append(len(pool))
        return P.choose(pool, strength, max_add)

    got = P.grow(seed=3, scorer=scorer, chooser=chooser, **kw)
    assert [vars(p) for p in got.points] == [vars(p) for p in ref.points]
    assert got.score_images == ref.score_images == 2 * TINY["batch_size"] and len(calls) == 2
    first = P.grow(seed=3, chooser=lambda pool, strength, max_add: [0], **kw)  # the hook decides
    assert [p.added for p in first.points[1:]] == [[n] for n in first.points[-1].branches]
    with pytest.raises(ValueError, match="one strength per candidate"):
        P.grow(seed=3, scorer=lambda model, pool, batches: torch.zeros(len(pool) + 1), **kw)
