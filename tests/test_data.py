"""Fashion-MNIST splits and loaders: sizes, disjointness, determinism, resizing, any working directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas_lab import data


def test_split_sizes_and_types() -> None:
    for split, n in (("train", 55_000), ("minival", 5_000), ("test", 10_000)):
        images, labels = data.load_split(split)
        assert images.shape == (n, 1, 28, 28) and images.dtype == torch.uint8, split
        assert labels.shape == (n,) and labels.dtype == torch.int64, split
        assert set(labels.unique().tolist()) == set(range(10)), split
    assert len(data.CLASSES) == 10


def test_train_and_minival_disjoint_and_cover_training_set() -> None:
    train_idx, minival_idx = data.split_indices()
    assert len(train_idx) == 55_000 and len(minival_idx) == 5_000
    assert not set(train_idx.tolist()) & set(minival_idx.tolist())
    assert torch.equal(torch.cat([train_idx, minival_idx]).sort().values, torch.arange(60_000))
    # minival holds exactly the held-out training images
    images, _ = data._raw("train")
    assert torch.equal(data.load_split("minival")[0], images[minival_idx])


def test_split_deterministic() -> None:
    a, b = data.split_indices(), data.split_indices()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    first = data.split_indices()[1][:5].tolist()
    code = "from nas_lab import data; print(data.split_indices()[1][:5].tolist())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(first)  # a fresh process draws the same split


def test_batches_seeded_shuffle() -> None:
    x1, y1 = next(data.batches("minival", 64, shuffle=True, seed=3))
    x2, y2 = next(data.batches("minival", 64, shuffle=True, seed=3))
    _, y3 = next(data.batches("minival", 64, shuffle=True, seed=4))
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(y1, y3)
    loader = data.TensorLoader("minival", batch_size=1000, shuffle=True, limit=3000)
    assert len(loader) == 3
    epoch1, epoch2 = [y for _, y in loader], [y for _, y in loader]
    assert sum(len(y) for y in epoch1) == 3000
    assert not torch.equal(torch.cat(epoch1), torch.cat(epoch2))  # a new order each epoch


def test_batches_from_start_skip_the_first_images() -> None:
    images, labels = data.load_split("minival")
    got = list(data.batches("minival", 1000, start=2000))
    assert [len(y) for _, y in got] == [1000, 1000, 1000]
    assert torch.equal(torch.cat([y for _, y in got]), labels[2000:])
    assert torch.equal(got[0][0], data.normalise(images[2000:3000], 28))
    shuffled = torch.cat([y for _, y in data.batches("minival", 500, shuffle=True, seed=1, start=4000)])
    assert sorted(shuffled.tolist()) == sorted(labels[4000:].tolist()) and not torch.equal(shuffled, labels[4000:])
    with pytest.raises(ValueError, match="has 5000 images"):
        next(data.batches("minival", start=5000))


def test_normalise_and_resize_shapes() -> None:
    images = data.load_split("train")[0][:512]
    x = data.normalise(images)
    assert x.shape == (512, 1, 28, 28) and x.dtype == torch.float32
    assert abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.1
    for r in (16, 20, 32, 40):
        assert data.normalise(images[:4], r).shape == (4, 1, r, r)
    assert data.resize(x, 28) is x
    loader = data.dataloader("test", batch_size=32, resolution=24)
    xb, yb = next(iter(loader))
    assert xb.shape == (32, 1, 24, 24) and yb.shape == (32,)


def test_loader_from_another_working_directory(tmp_path: Path) -> None:
    code = ("from nas_lab import data; x, y = next(iter(data.TensorLoader('test', batch_size=8, resolution=20)));"
            "print(tuple(x.shape), tuple(y.shape))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(8, 1, 20, 20) (8,)"
