"""minitrain.fit: seeded, learns, refuses unknown optimisers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas_lab.minitrain import fit, train_batches


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(14 * 14, 10))


def test_fit_is_seeded_and_lowers_the_loss() -> None:
    a = fit(_tiny(), steps=30, lr=0.1, batch_size=64, resolution=14, train_images=2000, seed=3)
    b = fit(_tiny(), steps=30, lr=0.1, batch_size=64, resolution=14, train_images=2000, seed=3)
    assert a.losses == b.losses and a.images == 30 * 64
    assert sum(a.losses[-5:]) / 5 < sum(a.losses[:5]) / 5


def test_batches_cycle_past_one_pass() -> None:
    it = train_batches(batch_size=100, resolution=14, train_images=250, seed=0)
    sizes = [len(next(it)[1]) for _ in range(4)]
    assert sizes == [100, 100, 50, 100]


def test_unknown_optimizer() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        fit(_tiny(), steps=1, optimizer="rmsprop")
