"""Analytic efficiency vs counting the extracted subnet; vectorised vs per-arch; exact minimisation."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from nas_lab import efficiency as eff
from nas_lab.space import Arch, SearchSpace
from nas_lab.supernet import OFASupernet

torch.set_num_threads(1)
SPACE = SearchSpace()


def _archs(n: int, seed: int) -> list[Arch]:
    rng = random.Random(seed)
    return [SPACE.largest(), SPACE.smallest()] + [SPACE.sample(rng) for _ in range(n)]


@pytest.fixture(scope="module")
def supernet() -> OFASupernet:
    return OFASupernet(SPACE).eval()


def _hook_count(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """Independent count: MACs of Conv2d/Linear calls from hooks, and all parameters."""
    macs = 0

    def hook(m, inputs, out):
        nonlocal macs
        if isinstance(m, torch.nn.Conv2d):
            macs += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, torch.nn.Linear):
            macs += m.in_features * m.out_features
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return macs, sum(p.numel() for p in model.parameters())


def test_analytic_costs_equal_counting_the_extracted_subnet(supernet):
    counting = pytest.importorskip("nas_lab.counting")
    memory = pytest.importorskip("nas_lab.memory")
    for arch in _archs(25, seed=1):
        supernet.set_active_subnet(arch)
        sub = supernet.get_active_subnet()
        x = torch.zeros(1, 1, arch.resolution, arch.resolution)
        c = eff.costs(arch)
        counted = counting.count_model(sub, x)
        assert c.macs * 1e6 == pytest.approx(counted.macs, abs=1e-6), arch
        assert c.params == counted.total_params, arch
        assert c.peak_memory_kb == memory.peak_memory(sub, x).peak_kb, arch
        macs, params = _hook_count(sub, x)
        assert (round(c.macs * 1e6), c.params) == (macs, params), arch


def test_known_values_of_the_extremes():
    # smallest: r16 w0.5, one k3e3 block per stage; hand-checked against the layer list
    small, large = eff.costs(SPACE.smallest()), eff.costs(SPACE.largest())
    stem_macs = 8 * 8 * 8 * 9  # 8 channels, 8x8 output, 1 input channel, 3x3
    assert eff.arch_layers(SPACE.smallest())[0].h_out == 8
    assert small.macs * 1e6 > stem_macs
    assert small.macs < large.macs and small.params < large.params and small.peak_memory_kb < large.peak_memory_kb
    # the largest net's peak is in the first residual block: 16ch 14x14 expanded x6 -> 96 x 14 x 14 (+ 16 x 14 x 14)
    assert large.peak_memory_kb * 1024 == 96 * 196 * 2 + 16 * 196


def test_vectorised_costs_match_per_arch_costs():
    archs = _archs(300, seed=2)
    vec = eff.costs_many(archs)
    ref = [eff.costs(a) for a in archs]
    np.testing.assert_allclose(vec["macs"], [c.macs for c in ref], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(vec["params"], [c.params for c in ref])
    np.testing.assert_allclose(vec["peak_memory_kb"], [c.peak_memory_kb for c in ref], rtol=0, atol=1e-9)


def test_genes_round_trip_and_canonical_form():
    archs = _archs(50, seed=3)
    genes = eff.to_genes(archs)
    assert genes.shape == (len(archs), len(eff.gene_sizes(SPACE)))
    assert (genes >= 0).all() and (genes < eff.gene_sizes(SPACE)).all()
    assert eff.from_genes(genes) == archs
    # two archs differing only in inactive genes are the same arch, with the same canonical genes
    a = SPACE.smallest()
    kernels = tuple(7 if slot % SPACE.max_depth else k for slot, k in enumerate(a.kernels))  # inactive slots
    b = Arch(a.resolution, a.width, a.depths, kernels, a.expands)
    assert a == b
    ga, gb = eff.to_genes([a, b])
    assert not np.array_equal(ga, gb)
    np.testing.assert_array_equal(eff.canonical(ga[None], SPACE), eff.canonical(gb[None], SPACE))


def test_gene_layout_names_every_column():
    layout = eff.GeneLayout.of(SPACE)
    arch = SPACE.sample(random.Random(5))
    genes = eff.to_genes([arch])[0]
    assert layout.size == len(genes) == len(eff.gene_sizes(SPACE)) == 2 + SPACE.num_stages + 2 * SPACE.num_slots
    assert SPACE.resolutions[genes[layout.resolution]] == arch.resolution
    assert SPACE.widths[genes[layout.width]] == arch.width
    assert tuple(SPACE.depths[i] for i in genes[layout.depths]) == arch.depths
    assert tuple(SPACE.kernels[i] for i in genes[layout.kernels]) == arch.kernels
    assert tuple(SPACE.expands[i] for i in genes[layout.expands]) == arch.expands


def test_cost_metrics_table_drives_the_costs():
    """The analytic metrics are the table's metrics with a layer formula; latency is the measured one."""
    assert eff.METRICS == tuple(k for k in eff.COST_METRICS if k != "latency_ms")
    assert not eff.COST_METRICS["latency_ms"].analytic
    assert set(eff.tables(SPACE)) == set(eff.METRICS) == set(eff.costs(SPACE.largest()).as_dict())
    assert eff.COST_METRICS["macs"].report(2_500_000) == 2.5 and eff.COST_METRICS["params"].report(7) == 7


def _all_archs(space: SearchSpace) -> list[Arch]:
    blocks = list(itertools.product(space.kernels, space.expands))
    stages = [seq for d in space.depths for seq in itertools.product(blocks, repeat=d)]
    out = []
    m = space.max_depth
    for r, w in itertools.product(space.resolutions, space.widths):
        for combo in itertools.product(stages, repeat=space.num_stages):
            ks = [space.kernels[0]] * space.num_slots
            es = [space.expands[0]] * space.num_slots
            for s, seq in enumerate(combo):
                for b, (k, e) in enumerate(seq):
                    ks[s * m + b], es[s * m + b] = k, e
            out.append(Arch(r, w, tuple(len(seq) for seq in combo), tuple(ks), tuple(es), m))
    return out


TINY = SearchSpace(resolutions=(16, 20), widths=(0.5, 1.0), depths=(1, 2), kernels=(3, 5), expands=(3, 6),
                   stage_channels=(8, 16), stage_strides=(1, 2))


@pytest.mark.parametrize("reduce", ["sum", "max"])
def test_minimum_is_exact_by_brute_force_even_for_non_monotone_tables(reduce):
    archs = _all_archs(TINY)
    genes = eff.to_genes(archs, TINY)
    rng = np.random.default_rng(0)
    values = {}

    def value(layer):  # arbitrary positive values, so the smallest arch is not automatically the cheapest
        return values.setdefault(layer, int(rng.integers(1, 1000)))
    table = eff.SlotTable.build(TINY, value, reduce)
    assert table.minimum() == table.evaluate(genes).min()
    for metric in eff.METRICS:
        assert eff.minimum(metric, TINY) == pytest.approx(eff.costs_genes(genes, TINY)[metric].min())


def test_minimum_of_the_default_space_is_the_smallest_arch():
    small = eff.costs(SPACE.smallest()).as_dict()
    for metric in eff.METRICS:
        assert eff.minimum(metric) == pytest.approx(small[metric])
    with pytest.raises(KeyError, match="analytic metrics"):
        eff.minimum("flops")
