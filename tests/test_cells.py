"""NASNet cell space size: formula vs brute-force enumeration, and the lecture's 3.2e11."""

import itertools
import random

import pytest

from nas_lab.cells import NASNET_COMBINERS, NASNET_OPS, cell_space_size, describe_cell, sample_cell


def enumerate_cells(num_ops, num_combiners, num_steps, growing):
    ops, combs = range(num_ops), range(num_combiners)
    per_step = [list(itertools.product(range(2 + b if growing else 2), range(2 + b if growing else 2), ops, ops,
                                       combs)) for b in range(num_steps)]
    return sum(1 for _ in itertools.product(*per_step))


@pytest.mark.parametrize("m, n, b, growing", [(2, 1, 2, False), (2, 2, 2, True), (3, 2, 1, False), (1, 2, 3, True)])
def test_size_equals_enumeration(m, n, b, growing):
    assert cell_space_size(m, n, b, growing_inputs=growing) == enumerate_cells(m, n, b, growing)


def test_lecture_value():
    size = cell_space_size(num_ops=5, num_combiners=2, num_steps=5)
    assert size == (2 * 2 * 5 * 5 * 2) ** 5 == 4 ** 5 * 5 ** 10 * 2 ** 5
    assert f"{size:.1e}" == "3.2e+11"


def test_random_cells_are_valid_and_seeded():
    for growing in (False, True):
        cell = sample_cell(random.Random(0), growing_inputs=growing)
        assert cell == sample_cell(random.Random(0), growing_inputs=growing)
        for b, step in enumerate(cell):
            limit = 2 + b if growing else 2
            assert 0 <= step.a < limit and 0 <= step.b < limit
            assert step.op_a in NASNET_OPS and step.combine in NASNET_COMBINERS
        assert describe_cell(cell).count("\n") == 4


def test_bad_counts_raise():
    with pytest.raises(ValueError):
        cell_space_size(0, 2, 5)
