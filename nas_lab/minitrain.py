"""A small, seeded training loop for the labs' minute-sized experiments (DARTS, growing networks, proxies).

Not the supernet recipe (that is :mod:`nas_lab.train`): plain SGD or Adam for a fixed number of steps on
the first ``train_images`` images of the training split, at one resolution, batches drawn in a seeded
order. Deterministic for a given seed on one thread, so a lab's numbers repeat. Accuracy: use
:mod:`nas_lab.evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from nas_lab import data


@dataclass
class FitResult:
    """Loss after each step and the number of images seen."""

    losses: list[float] = field(default_factory=list)
    images: int = 0


def train_batches(batch_size: int, resolution: int, train_images: int, seed: int,
                  split: str = "train") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless normalised batches of the first ``train_images`` images of ``split``, reshuffled every pass."""
    epoch = 0
    while True:
        yield from data.batches(split, batch_size, resolution, shuffle=True, seed=seed * 10_007 + epoch,
                                limit=train_images)
        epoch += 1


def fit(model: nn.Module, steps: int, lr: float = 0.05, batch_size: int = 128, resolution: int = 28,
        train_images: int = 10_000, seed: int = 0, optimizer: str = "sgd", weight_decay: float = 0.0,
        on_step: Callable[[int, float], None] | None = None) -> FitResult:
    """Train ``model`` for ``steps`` steps of cross-entropy (cosine learning-rate decay); returns the losses."""
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9,
                                                     weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose 'sgd' or 'adam'")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    result = FitResult()
    model.train()
    for step, (x, y) in zip(range(steps), train_batches(batch_size, resolution, train_images, seed)):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        result.losses.append(loss.item())
        result.images += len(y)
        if on_step is not None:
            on_step(step, result.losses[-1])
    return result
