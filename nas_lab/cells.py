"""A NASNet-style cell-level search space: its size, and random cells to make it concrete.

A cell is built in B steps. Each step picks two inputs (hidden states), one transform operation for
each of them, and one way to combine the two results into a new hidden state:

    one step  = inputs x inputs x ops x ops x combiners  = I * I * M * M * N
    one cell  = (one step) ** B                          (the lecture's count, with I = 2 inputs)

With I = 2, M = 5, N = 2, B = 5 that is (2*2*5*5*2)^5 = 200^5 = 3.2e11 cells. In NASNet itself, step b
may also read the outputs of earlier steps, so it has 2 + b candidate inputs (``growing_inputs=True``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

NASNET_OPS = ("identity", "sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3")
NASNET_COMBINERS = ("add", "concat")


def cell_space_size(num_ops: int, num_combiners: int, num_steps: int, num_inputs: int = 2,
                    growing_inputs: bool = False) -> int:
    """Number of distinct cells: the product over steps of inputs^2 * ops^2 * combiners (exact integer)."""
    if min(num_ops, num_combiners, num_steps, num_inputs) < 1:
        raise ValueError("every count must be at least 1")
    return math.prod((num_inputs + (b if growing_inputs else 0)) ** 2 * num_ops ** 2 * num_combiners
                     for b in range(num_steps))


@dataclass(frozen=True)
class CellStep:
    """One step of a cell: hidden states ``a`` and ``b`` go through ``op_a`` / ``op_b``, then ``combine``."""

    a: int
    b: int
    op_a: str
    op_b: str
    combine: str

    def __str__(self) -> str:
        return f"{self.combine}({self.op_a}(h{self.a}), {self.op_b}(h{self.b}))"


def sample_cell(rng: random.Random, num_steps: int = 5, ops: tuple[str, ...] = NASNET_OPS,
                combiners: tuple[str, ...] = NASNET_COMBINERS, growing_inputs: bool = False) -> list[CellStep]:
    """A random cell. Hidden states h0, h1 are the two cell inputs; step b writes h(2 + b)."""
    steps = []
    for b in range(num_steps):
        n_inputs = 2 + b if growing_inputs else 2
        steps.append(CellStep(rng.randrange(n_inputs), rng.randrange(n_inputs), rng.choice(ops), rng.choice(ops),
                              rng.choice(combiners)))
    return steps


def describe_cell(steps: list[CellStep]) -> str:
    """One line per step, e.g. ``h2 = add(sep_conv_3x3(h0), identity(h1))``."""
    return "\n".join(f"h{2 + i} = {s}" for i, s in enumerate(steps))
