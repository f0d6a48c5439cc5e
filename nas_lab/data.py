"""Fashion-MNIST from the shipped files: a fixed, seeded split and simple tensor loaders.

Splits (fixed forever, seed 0): ``train`` = 55,000 training images, ``minival`` = the other 5,000
training images (held out from training; used for BN recalibration and the accuracy data set),
``test`` = the official 10,000 test images. Images are float32 in [0, 1], shape (N, 1, 28, 28),
normalised by the training mean/std inside :func:`normalise`.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nas_lab import artifacts
from nas_lab.artifacts import ArtifactError

SPLITS = ("train", "minival", "test")
SPLIT_SEED = 0
MINIVAL_SIZE = 5000
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: Path) -> np.ndarray:
    """Registry loader of a gzipped IDX file of unsigned bytes: (N, 28, 28) images or (N,) labels.

    IDX: two zero bytes, a type byte (0x08 = uint8), the number of dimensions, then each dimension as a
    big-endian uint32, then the data.
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except OSError as err:  # pragma: no cover - the sha256 check catches corruption first
        raise ArtifactError(f"{path} cannot be read ({err})") from err
    if raw[:3] != b"\x00\x00\x08":
        raise ArtifactError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@cache
def _raw(source: str) -> tuple[torch.Tensor, torch.Tensor]:
    images_file, labels_file = _FILES[source]
    images = artifacts.load(f"fashion-mnist/{images_file}").reshape(-1, 1, 28, 28)
    labels = artifacts.load(f"fashion-mnist/{labels_file}")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def split_indices() -> tuple[torch.Tensor, torch.Tensor]:
    """(train, minival) indices into the official 60k training set, from a fixed seeded permutation."""
    perm = torch.randperm(60000, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return perm[MINIVAL_SIZE:].sort().values, perm[:MINIVAL_SIZE].sort().values


@cache
def load_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 of one split: 'train', 'minival' or 'test'."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if split == "test":
        return _raw("test")
    images, labels = _raw("train")
    train_idx, minival_idx = split_indices()
    idx = train_idx if split == "train" else minival_idx
    return images[idx], labels[idx]


def normalise(images_uint8: torch.Tensor, resolution: int = 28) -> torch.Tensor:
    """uint8 (N, 1, 28, 28) -> normalised float32 (N, 1, r, r); bilinear resize when r != 28."""
    x = (images_uint8.float() / 255.0 - MEAN) / STD
    return resize(x, resolution)


def resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize a float batch (N, C, H, W) to (N, C, r, r) (bilinear with antialiasing); no-op if equal."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=True)


def batches(split: str, batch_size: int = 256, resolution: int = 28, shuffle: bool = False,
            seed: int = 0, limit: int | None = None, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield normalised (images, labels) batches of a split, optionally shuffled with a seed.

    ``start`` skips the first images (e.g. the minival images that recalibrated BatchNorm) and ``limit``
    keeps only the first ``limit`` of the rest (after the seeded shuffle), for quick checks.
    """
    images, labels = load_split(split)
    n = len(labels)
    if not 0 <= start < n:
        raise ValueError(f"start {start}: the {split} split has {n} images")
    order = torch.randperm(n - start, generator=torch.Generator().manual_seed(seed)) if shuffle \
        else torch.arange(n - start)
    order = order + start
    if limit is not None:
        order = order[:limit]
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield normalise(images[idx], resolution), labels[idx]


class TensorLoader:
    """A re-iterable loader over one split (a light DataLoader stand-in: no workers, no pickling)."""

    def __init__(self, split: str, batch_size: int = 256, resolution: int = 28, shuffle: bool = False,
                 seed: int = 0, limit: int | None = None) -> None:
        self.split, self.batch_size, self.resolution = split, batch_size, resolution
        self.shuffle, self.seed, self.limit, self.epoch = shuffle, seed, limit, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed = self.seed + self.epoch  # a new, reproducible order each pass
        self.epoch += 1
        return batches(self.split, self.batch_size, self.resolution, self.shuffle, seed, self.limit)

    def __len__(self) -> int:
        n = len(load_split(self.split)[1]) if self.limit is None else self.limit
        return (n + self.batch_size - 1) // self.batch_size


def dataloader(split: str, batch_size: int = 256, resolution: int = 28, shuffle: bool = False,
               seed: int = 0, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """A standard ``torch.utils.data.DataLoader`` over a split (normalised, resized, seeded shuffle)."""
    images, labels = load_split(split)
    dataset = torch.utils.data.TensorDataset(normalise(images, resolution), labels)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                       generator=generator, num_workers=num_workers)
