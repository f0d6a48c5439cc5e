"""Tiny DARTS: the mixed op, the cell against its discrete counterpart, the first-order bilevel step against a
hand computation, derivation of the discrete cell, and a few seeded search steps."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas_lab import darts as D

torch.set_num_threads(1)


def seeded(make, seed: int = 0):
    """``make()`` with a seeded initialisation, leaving the global random stream as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make()


def batch(n: int = 8, c: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, 14, 14, generator=torch.Generator().manual_seed(seed))


def test_mixed_op_with_one_hot_weights_is_exactly_the_chosen_op():
    op = seeded(lambda: D.MixedOp(4))
    x = batch()
    for i, name in enumerate(D.OPS):
        w = torch.zeros(len(D.OPS))
        w[i] = 1.0
        assert torch.equal(op(x, w), op.ops[i](x)), name
    assert torch.equal(op.ops[D.OPS.index("zero")](x), torch.zeros_like(x))
    assert torch.equal(op.ops[D.OPS.index("skip")](x), x)


def test_mixed_op_is_the_weighted_sum():
    op = seeded(lambda: D.MixedOp(4))
    x = batch()
    w = torch.softmax(torch.randn(len(D.OPS), generator=torch.Generator().manual_seed(1)), 0)
    hand = sum(float(w[i]) * op.ops[i](x) for i in range(len(D.OPS)))
    assert torch.allclose(op(x, w), hand, atol=1e-6)


def test_cell_with_one_hot_weights_equals_the_discrete_cell():
    cell = seeded(lambda: D.Cell(4, nodes=3))
    genotype = ((0, 1, "sep_conv_3x3"), (0, 2, "max_pool_3x3"), (1, 2, "conv_3x3"), (0, 3, "skip"),
                (1, 3, "avg_pool_3x3"), (2, 3, "conv_3x3"))  # every edge of the cell, in edge order
    weights = torch.zeros(6, len(D.OPS))
    discrete = D.DiscreteCell(genotype, 4, nodes=3)
    for e, (src, dst, name) in enumerate(genotype):
        assert D.edges(3)[e] == (src, dst)
        weights[e, D.OPS.index(name)] = 1.0
        discrete.ops[e].load_state_dict(cell.edges[e].ops[D.OPS.index(name)].state_dict())
    x = batch()
    assert torch.allclose(cell(x, weights), discrete(x), atol=1e-6)


def test_first_order_step_is_alpha_on_validation_then_weights_on_training():
    model = seeded(lambda: D.SearchNetwork(channels=4))
    ref = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    train = (torch.randn(16, 1, 14, 14, generator=gen), torch.randint(0, 10, (16,), generator=gen))
    val = (torch.randn(16, 1, 14, 14, generator=gen), torch.randint(0, 10, (16,), generator=gen))
    w_opt = torch.optim.SGD(model.weights(), lr=0.1)
    a_opt = torch.optim.SGD([model.alpha], lr=1.0)
    train_loss, val_loss = D.darts_step(model, w_opt, a_opt, train, val)
    # by hand: alpha <- alpha - grad of the validation loss; then w <- w - 0.1 grad of the training loss there
    loss = F.cross_entropy(ref(val[0]), val[1])
    g_alpha, = torch.autograd.grad(loss, [ref.alpha])
    assert val_loss == pytest.approx(float(loss.detach()))
    with torch.no_grad():
        ref.alpha -= g_alpha
    loss = F.cross_entropy(ref(train[0]), train[1])
    grads = torch.autograd.grad(loss, ref.weights())
    assert train_loss == pytest.approx(float(loss.detach()))
    assert torch.allclose(model.alpha, ref.alpha, atol=1e-6) and not torch.equal(model.alpha, ref.alpha + g_alpha)
    for p, q, g in zip(model.weights(), ref.weights(), grads):
        assert torch.allclose(p, q - 0.1 * g, atol=1e-6)


def test_derive_keeps_the_strongest_non_zero_edges():
    alpha = torch.full((6, len(D.OPS)), -5.0)
    z, skip, conv, sep, maxp = (D.OPS.index(n) for n in ("zero", "skip", "conv_3x3", "sep_conv_3x3",
                                                         "max_pool_3x3"))
    alpha[0, z], alpha[0, conv] = 9.0, 1.0   # 0->1: zero dominates, but zero is never chosen: conv
    alpha[1, sep] = 3.0                      # 0->2
    alpha[2, skip] = 2.0                     # 1->2
    alpha[3, maxp] = 0.5                     # 0->3: the weakest of node 3's edges, dropped
    alpha[4, conv] = 4.0                     # 1->3
    alpha[5, skip] = 1.0                     # 2->3
    genotype = D.derive(alpha)
    assert genotype == ((0, 1, "conv_3x3"), (0, 2, "sep_conv_3x3"), (1, 2, "skip"), (1, 3, "conv_3x3"),
                        (2, 3, "skip"))
    assert D.check_genotype(genotype) == genotype


def test_check_genotype_rejects_bad_cells():
    with pytest.raises(ValueError, match="invalid edge"):
        D.check_genotype(((1, 1, "skip"), (0, 2, "skip"), (0, 3, "skip")))
    with pytest.raises(ValueError, match="invalid edge"):
        D.check_genotype(((0, 1, "conv_5x5"), (0, 2, "skip"), (0, 3, "skip")))
    with pytest.raises(ValueError, match=r"nodes \[3\]"):
        D.check_genotype(((0, 1, "skip"), (0, 2, "skip")))
    with pytest.raises(ValueError, match="unknown op"):
        D.make_op("conv_5x5", 4)


def test_parameter_free_share():
    uniform = np.full((6, len(D.OPS)), 1 / len(D.OPS))
    assert D.parameter_free_share(uniform) == pytest.approx(4 / 6)
    only_conv = np.zeros((6, len(D.OPS)))
    only_conv[:, D.OPS.index("conv_3x3")] = 1
    assert D.parameter_free_share(only_conv) == 0.0


def test_a_few_search_steps_move_alpha_are_seeded_and_give_a_trainable_cell():
    state = torch.random.get_rng_state()
    r = D.darts_search(steps=3, channels=4, batch_size=16, train_images=256, val_images=128, a_lr=0.05, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is untouched
    again = D.darts_search(steps=3, channels=4, batch_size=16, train_images=256, val_images=128, a_lr=0.05, seed=1)
    assert np.array_equal(r.alpha_history, again.alpha_history) and r.genotype == again.genotype
    assert r.alpha_history.shape == (4, 6, len(D.OPS)) and np.allclose(r.alpha_history.sum(-1), 1, atol=1e-6)
    assert np.abs(r.alpha_history[-1] - r.alpha_history[0]).max() > 0.01  # Adam moves every logit ~lr a step
    assert len(r.history) == 3 and all(np.isfinite(h["train_loss"]) for h in r.history)
    D.check_genotype(r.genotype)
    assert all(op != "zero" for _, _, op in r.genotype) and len(r.genotype) == 5  # 1 + 2 + 2 inputs
    net = D.DiscreteNetwork(r.genotype, channels=4)
    assert net(torch.randn(2, 1, 14, 14)).shape == (2, 10)


def test_student_functions_plug_in():
    calls = []

    def student_mixed(x, ops, weights):  # written another way: stack the outputs, contract with the weights
        return torch.einsum("o,onchw->nchw", weights, torch.stack([op(x) for op in ops]))

    def student_step(model, w_opt, a_opt, train_batch, val_batch):
        calls.append(1)
        return D.darts_step(model, w_opt, a_opt, train_batch, val_batch)

    common = dict(steps=2, channels=4, batch_size=16, train_images=128, val_images=64, seed=2)
    ref = D.darts_search(**common)
    mine = D.darts_search(**common, mixed_fn=student_mixed, step_fn=student_step)
    assert len(calls) == 2 and np.allclose(mine.alpha_history, ref.alpha_history, atol=1e-5)
