"""The search space: size, arch strings, validation, sampling coverage, mutation and crossover."""

import itertools
import random

import pytest

from nas_lab.space import Arch, ArchError, SearchSpace, unique

SPACE = SearchSpace()


def brute_force_size(space: SearchSpace) -> int:
    """Count distinct arch strings by enumerating every gene combination (tiny spaces only)."""
    strings = set()
    m = space.max_depth
    for res, width in itertools.product(space.resolutions, space.widths):
        for depths in itertools.product(space.depths, repeat=space.num_stages):
            for ks in itertools.product(space.kernels, repeat=space.num_slots):
                for es in itertools.product(space.expands, repeat=space.num_slots):
                    strings.add(str(Arch(res, width, depths, ks, es, m)))
    return len(strings)


def test_size_matches_enumeration_on_a_tiny_space():
    tiny = SearchSpace(resolutions=(16, 20), widths=(0.5, 1.0), depths=(1, 2), kernels=(3, 5), expands=(3,),
                       stage_channels=(8, 16), stage_strides=(1, 2))
    assert tiny.size() == brute_force_size(tiny) == 2 * 2 * (2 + 4) ** 2


def test_size_of_the_default_space_by_hand():
    per_stage = 9 + 9 ** 2 + 9 ** 3  # depth 1, 2 or 3 blocks, 9 (kernel, expand) choices each
    assert SPACE.stage_size() == per_stage == 819
    assert SPACE.size() == per_stage ** 4 * 3 * 4
    assert SPACE.size(include_width=False, include_resolution=False) == per_stage ** 4


def test_arch_string_and_dict_round_trip():
    rng = random.Random(0)
    for _ in range(200):
        a = SPACE.sample(rng)
        assert SPACE.parse(str(a)) == a
        assert Arch.from_dict(a.to_dict()) == a
    assert str(SPACE.smallest()) == "r16_w0.5_k3e3_k3e3_k3e3_k3e3"
    assert str(SPACE.largest()) == "r28_w1.0_" + "_".join(["-".join(["k7e6"] * 3)] * 4)


def test_inactive_genes_do_not_affect_identity():
    a = SPACE.smallest()
    b = Arch(a.resolution, a.width, a.depths, (3, 7, 7) * 4, (3, 6, 6) * 4)
    assert a == b and hash(a) == hash(b) and len(unique([a, b])) == 1


@pytest.mark.parametrize("text, fragment", [
    ("r30_w1.0_k3e3_k3e3_k3e3_k3e3", "resolution 30"),
    ("r28_w0.6_k3e3_k3e3_k3e3_k3e3", "width 0.6"),
    ("r28_w1.0_k9e3_k3e3_k3e3_k3e3", "kernel of stage 1 block 1"),
    ("r28_w1.0_k3e3_k3e5_k3e3_k3e3", "expand of stage 2 block 1"),
    ("r28_w1.0_k3e3-k3e3-k3e3-k3e3_k3e3_k3e3_k3e3", "stage 1 has 4 blocks"),
    ("r28_w1.0_k3e3_k3e3_k3e3", "malformed"),
    ("hello", "malformed"),
    ("r28_w1.0_k3x3_k3e3_k3e3_k3e3", "malformed"),
])
def test_bad_archs_are_rejected_with_the_allowed_values(text, fragment):
    with pytest.raises(ArchError) as err:
        SPACE.parse(text)
    assert fragment in str(err.value)
    if "not in the space" in str(err.value):
        assert "allowed values" in str(err.value)


def test_dict_with_a_misspelt_key_is_an_error():
    d = SPACE.largest().to_dict()
    d["kernel"] = d.pop("kernels")
    with pytest.raises(ArchError, match="keys"):
        Arch.from_dict(d)


def test_sampling_reaches_every_choice():
    rng = random.Random(1)
    archs = [SPACE.sample(rng) for _ in range(600)]
    assert {a.resolution for a in archs} == set(SPACE.resolutions)
    assert {a.width for a in archs} == set(SPACE.widths)  # width 1.0 included
    for s in range(SPACE.num_stages):
        assert {a.depths[s] for a in archs} == set(SPACE.depths)
    for i in range(SPACE.num_slots):
        assert {a.kernels[i] for a in archs} == set(SPACE.kernels)
        assert {a.expands[i] for a in archs} == set(SPACE.expands)


def test_sampling_is_seeded():
    assert [str(SPACE.sample(random.Random(7))) for _ in range(3)] == \
           [str(SPACE.sample(random.Random(7))) for _ in range(3)]


def test_mutation_probabilities():
    rng = random.Random(2)
    a = SPACE.sample(rng)
    assert SPACE.mutate(a, rng, prob=0.0, resolution_prob=0.0) == a
    changed = sum(SPACE.mutate(a, rng, prob=1.0, resolution_prob=1.0) != a for _ in range(50))
    assert changed >= 45


def test_crossover_takes_every_gene_from_a_parent():
    rng = random.Random(3)
    for _ in range(50):
        a, b = SPACE.sample(rng), SPACE.sample(rng)
        c = SPACE.crossover(a, b, rng)
        assert c.resolution in (a.resolution, b.resolution) and c.width in (a.width, b.width)
        for field in ("depths", "kernels", "expands"):
            for x, y, z in zip(getattr(a, field), getattr(b, field), getattr(c, field)):
                assert z in (x, y)


def test_restricted_sub_space():
    sub = SPACE.restrict(kernels=(3,), widths=(1.0, 0.5))
    assert sub.kernels == (3,) and sub.widths == (0.5, 1.0) and sub.expands == SPACE.expands
    assert sub.size() == (3 + 3 ** 2 + 3 ** 3) ** 4 * 2 * 4
    rng = random.Random(0)
    for _ in range(50):
        a = sub.sample(rng)
        assert SPACE.validate(a) is a and set(k for _, _, k, _ in a.blocks()) == {3}
    with pytest.raises(ArchError, match="allowed values"):
        SPACE.restrict(kernels=(9,))
    with pytest.raises(ArchError, match="unknown dimension"):
        SPACE.restrict(kernel=(3,))


def test_a_shallower_sub_space_keeps_the_parent_skeleton():
    shallow = SPACE.restrict(depths=(1,))
    assert shallow.max_depth == SPACE.max_depth and shallow.num_slots == SPACE.num_slots
    assert shallow.size() == 9 ** 4 * 12
    a = shallow.sample(random.Random(0))
    assert SPACE.validate(a) is a and a.depths == (1, 1, 1, 1)
    assert SPACE.parse(str(a)) == a
