"""ProxylessNAS-style search: expected latency (exact oracle by enumeration), two-path binarised gates, the gated
forward pass against the supernet's own forward, and a short search on the shipped supernet."""

from __future__ import annotations

import copy
import itertools
import random

import numpy as np
import pytest
import torch

from nas_lab import efficiency as eff
from nas_lab import proxyless as P
from nas_lab.evaluate import load_supernet
from nas_lab.latency import LatencyTable, layer_key, space_layers
from nas_lab.space import Arch, ArchError, SearchSpace

torch.set_num_threads(1)
SPACE = SearchSpace()


def synthetic_table(space: SearchSpace = SPACE) -> LatencyTable:
    """Every layer's ms from its MACs (plus a per-layer constant): not monotone-free, but known exactly."""
    return LatencyTable({k: 0.01 + v.macs() / 1e6 for k, v in space_layers(SPACE).items()}, {}, space)


def one_hot(arch: Arch, space: SearchSpace) -> tuple[torch.Tensor, torch.Tensor]:
    ops = P.op_choices(space)
    op_p = torch.zeros(space.num_slots, len(ops))
    for slot, (k, e) in enumerate(zip(arch.kernels, arch.expands)):
        op_p[slot, ops.index((k, e))] = 1
    depth_p = torch.zeros(space.num_stages, len(space.depths))
    depth_p[torch.arange(space.num_stages), [space.depths.index(d) for d in arch.depths]] = 1
    return op_p, depth_p


# ---- expected latency ------------------------------------------------------------------------------------
def test_expected_latency_of_one_hot_probabilities_is_the_hand_sum_of_the_table():
    table = synthetic_table()
    rng = random.Random(0)
    for arch in [SPACE.largest(), SPACE.smallest()] + [SPACE.sample(rng) for _ in range(6)]:
        lookup = P.latency_lookup(table, arch.resolution, arch.width)
        hand = sum(table.entries[layer_key(layer)] for layer in eff.arch_layers(arch))
        got = P.expected_latency(*one_hot(arch, SPACE), lookup)
        assert float(got) == pytest.approx(hand, rel=1e-5)


def test_expected_latency_is_the_exact_expectation_over_archs():
    # small space: enumerate every arch, weight its table latency by its probability
    space = SPACE.restrict(kernels=(3, 7), expands=(6,), depths=(1, 2), resolutions=(20,), widths=(0.75,))
    table = synthetic_table(space)
    lookup = P.latency_lookup(table, 20, 0.75, space)
    gen = torch.Generator().manual_seed(0)
    op_p = torch.softmax(torch.randn(space.num_slots, 2, generator=gen), -1)
    depth_p = torch.softmax(torch.randn(space.num_stages, 2, generator=gen), -1)
    total = 0.0
    for depth_idx in itertools.product(range(2), repeat=space.num_stages):
        depths = tuple(space.depths[i] for i in depth_idx)
        active = [s * space.max_depth + b for s, d in enumerate(depths) for b in range(d)]
        for ops in itertools.product(range(2), repeat=len(active)):
            kernels = [3] * space.num_slots
            for slot, o in zip(active, ops):
                kernels[slot] = space.kernels[o]
            prob = float(np.prod([depth_p[s, i] for s, i in enumerate(depth_idx)]) *
                         np.prod([op_p[slot, o] for slot, o in zip(active, ops)]))
            arch = Arch(20, 0.75, depths, tuple(kernels), (6,) * space.num_slots, space.max_depth)
            total += prob * table.predict(arch)
    assert float(P.expected_latency(op_p, depth_p, lookup)) == pytest.approx(total, rel=1e-5)


def test_expected_latency_is_differentiable_with_the_closed_form_gradient():
    lookup = P.latency_lookup(synthetic_table(), 28, 1.0)
    gen = torch.Generator().manual_seed(1)
    op_p = torch.softmax(torch.randn(SPACE.num_slots, 9, generator=gen), -1).requires_grad_(True)
    depth_p = torch.softmax(torch.randn(SPACE.num_stages, 3, generator=gen), -1).requires_grad_(True)
    P.expected_latency(op_p, depth_p, lookup).backward()
    # P(block b of a stage runs) = P(depth > b): 1, p(2) + p(3), p(3)
    d = depth_p.detach()
    active = torch.stack([torch.ones(4), d[:, 1] + d[:, 2], d[:, 2]], 1).reshape(-1)   # (slots,)
    assert torch.allclose(op_p.grad, (active[:, None] * lookup.ops).float(), rtol=1e-5)
    assert depth_p.grad.abs().sum() > 0


def test_latency_lookup_rejects_choices_outside_the_space():
    with pytest.raises(ArchError, match="resolution 32"):
        P.latency_lookup(synthetic_table(), 32, 1.0)


# ---- gates -----------------------------------------------------------------------------------------------
def test_binary_gates_are_one_hot_forward_and_pass_straight_through_gradients():
    logits = torch.randn(5, 9, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    pairs = P.sample_pairs(logits, torch.Generator().manual_seed(1))
    gates = P.binary_gates(logits, pairs)
    assert torch.equal(gates.detach(), torch.tensor([[1.0, 0.0]] * 5))
    c = torch.randn(5, 2, generator=torch.Generator().manual_seed(2))     # dL/dg
    (gates * c).sum().backward()
    p2 = torch.softmax(logits.detach().gather(1, pairs), -1)
    expected = torch.zeros(5, 9)
    for r in range(5):
        for i in range(2):  # dL/dalpha_i = sum_j c_j p_j (delta_ij - p_i)
            expected[r, pairs[r, i]] = sum(c[r, j] * p2[r, j] * (float(i == j) - p2[r, i]) for j in range(2))
    assert torch.allclose(logits.grad, expected, atol=1e-6)
    assert (logits.grad.abs() > 0).sum() == 10  # only the two sampled choices of each row


def test_sample_pairs_distribution():
    # the active choice i: P = sum_j P({i, j} drawn) * p_i / (p_i + p_j), pairs drawn without replacement
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = p.log().repeat(20_000, 1)
    pairs = P.sample_pairs(logits, torch.Generator().manual_seed(0))
    assert (pairs[:, 0] != pairs[:, 1]).all()
    pn = np.array([0.5, 0.3, 0.15, 0.05])
    exact = [sum(pn[i] * pn[j] * (1 / (1 - pn[i]) + 1 / (1 - pn[j])) * pn[i] / (pn[i] + pn[j])
                 for j in range(4) if j != i) for i in range(4)]
    counts = np.bincount(pairs[:, 0].numpy(), minlength=4)
    chi2 = float(((counts - 20_000 * np.array(exact)) ** 2 / (20_000 * np.array(exact))).sum())
    assert abs(sum(exact) - 1) < 1e-9 and chi2 < 25


def test_rescale_keeps_the_pair_total_and_leaves_the_others():
    logits = torch.randn(3, 9, generator=torch.Generator().manual_seed(0))
    pairs = torch.tensor([[0, 4], [8, 2], [1, 1]])
    before = torch.logsumexp(logits.gather(1, pairs), 1)
    moved = logits.clone()
    moved[0, 0] += 1.0
    moved[1, 2] -= 0.5
    moved[2, 1] += 2.0  # a one-choice "pair" is left alone
    P.rescale_pairs(moved, pairs, before)
    assert torch.allclose(torch.logsumexp(moved.gather(1, pairs[:2]), 1), before[:2])
    assert moved[0, 0] - moved[0, 4] == pytest.approx(float(logits[0, 0] - logits[0, 4] + 1.0), abs=1e-5)
    untouched = torch.ones(3, 9, dtype=torch.bool)
    untouched[0, [0, 4]] = untouched[1, [8, 2]] = untouched[2, 1] = False
    assert torch.equal(moved[untouched], logits[untouched]) and moved[2, 1] == logits[2, 1] + 2.0


# ---- the gated supernet ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def net():
    return load_supernet()


@pytest.fixture()
def own_net(net):
    """A private copy: the tests below run BN in training mode, which would move the shared one's statistics."""
    return copy.deepcopy(net)


def test_gated_forward_is_the_active_path_and_sends_gradients_to_the_pairs(own_net):
    net = own_net
    arch = SPACE.parse("r16_w0.5_k3e4-k7e6_k5e3_k7e3-k3e6-k5e4_k3e3-k3e3")
    ops = P.op_choices(SPACE)
    on = torch.tensor([ops.index((k, e)) for k, e in zip(arch.kernels, arch.expands)])
    op_pairs = torch.stack([on, (on + 4) % 9], 1)                                      # other candidate differs
    d_on = torch.tensor([SPACE.depths.index(d) for d in arch.depths])
    depth_pairs = torch.stack([d_on, (d_on + 1) % 3], 1)
    op_logits = torch.zeros(SPACE.num_slots, 9, requires_grad=True)
    depth_logits = torch.zeros(SPACE.num_stages, 3, requires_grad=True)
    x = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 10
    net.train()
    out = P.gated_forward(net, x, SPACE, 0.5, op_pairs, P.binary_gates(op_logits, op_pairs), depth_pairs,
                          P.binary_gates(depth_logits, depth_pairs))
    net.set_active_subnet(arch)
    with torch.no_grad():
        ref = net(x)
    assert torch.allclose(out, ref, atol=1e-5)  # gates (1, 0): exactly the sampled subnet's function
    torch.nn.functional.cross_entropy(out, y).backward()
    active = torch.tensor([b < arch.depths[s] for s in range(4) for b in range(3)])
    grad = op_logits.grad
    assert (grad[active].abs() > 0).sum() == 2 * int(active.sum())                 # both of each pair
    assert (grad[~active] == 0).all() and (depth_logits.grad.abs() > 0).sum() == 8


def test_short_search_trades_latency_and_leaves_the_shared_supernet_alone(net):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    table = synthetic_table()
    common = dict(resolution=16, width=0.5, steps=6, batch_size=16, net=net, table=table, lr=0.3)
    fast = P.proxyless_search(50.0, **common)  # latency dominates the loss
    again = P.proxyless_search(50.0, **common)
    assert fast.arch == again.arch and fast.history == again.history                # seeded
    assert fast.history[-1]["expected_latency_ms"] < fast.history[0]["expected_latency_ms"]
    assert all(d[0] > 1 / 3 for d in fast.depth_probs[-1])                         # every stage: depth 1 gains
    assert SPACE.validate(fast.arch) and fast.arch.resolution == 16 and fast.arch.width == 0.5
    assert fast.op_probs.shape == (7, SPACE.num_slots, 9) and np.allclose(fast.op_probs.sum(-1), 1, atol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    calls = []

    def student_latency(op_p, depth_p, lookup):
        calls.append(1)
        return P.expected_latency(op_p, depth_p, lookup)
    P.proxyless_search(0.0, **{**common, "steps": 2}, latency_fn=student_latency)
    assert len(calls) == 3  # two steps and the final report
    with pytest.raises(ValueError, match="lam"):
        P.proxyless_search(-1.0, **common)


def test_derive_takes_the_argmax():
    op_logits = torch.zeros(SPACE.num_slots, 9)
    op_logits[:, 8] = 1.0  # (7, 6) everywhere
    depth_logits = torch.tensor([[0.0, 1.0, 0.0]] * 4)
    arch = P.derive(op_logits, depth_logits, SPACE, 24, 0.75)
    assert str(arch) == "r24_w0.75_" + "_".join(["k7e6-k7e6"] * 4)


def test_lookup_is_float64_and_one_hot_gives_the_shipped_table_prediction_exactly():
    table = LatencyTable.shipped()
    rng = random.Random(3)
    for arch in [SPACE.largest(), SPACE.smallest()] + [SPACE.sample(rng) for _ in range(4)]:
        lookup = P.latency_lookup(table, arch.resolution, arch.width)
        assert lookup.ops.dtype == torch.float64
        got = float(P.expected_latency(*one_hot(arch, SPACE), lookup))
        assert abs(got - table.predict(arch)) < 1e-9


def test_gate_fn_plugs_in(net):
    table = synthetic_table()
    common = dict(resolution=16, width=0.5, steps=3, batch_size=16, net=net, table=table, lr=0.3, seed=4)
    calls = []

    def student_gates(logits, pairs):  # the same estimator, written another way
        calls.append(1)
        p2 = torch.softmax(torch.stack([logits.gather(1, pairs[:, :1]), logits.gather(1, pairs[:, 1:])], 1)
                           .squeeze(-1), dim=-1)
        return torch.tensor([1.0, 0.0]).expand_as(p2) + p2 - p2.detach()

    ref = P.proxyless_search(1.0, **common)
    mine = P.proxyless_search(1.0, **common, gate_fn=student_gates)
    assert len(calls) == 2 * 3  # ops and depths, every step
    assert mine.arch == ref.arch
    assert torch.allclose(mine.op_logits, ref.op_logits, atol=1e-5)
    assert torch.allclose(mine.depth_logits, ref.depth_logits, atol=1e-5)
