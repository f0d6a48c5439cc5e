"""Load the shipped supernet and measure subnets: extract, recalibrate BN on minival, evaluate.

BN recalibration always runs at the subnet's own resolution, on the first ``calib_images`` images of the
minival split (never training, never test images), so an accuracy is a function of the arch alone.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

from nas_lab import artifacts, data
from nas_lab.artifacts import ArtifactError
from nas_lab.progress import bar as progress_bar
from nas_lab.space import Arch
from nas_lab.subnet import Subnet
from nas_lab.supernet import OFASupernet, load_weights, recalibrate_bn

# The reference number of minival images for BN recalibration: every accuracy the library records (the
# accuracy data set, `nas-lab evaluate`, the supernet's reference accuracies) uses it. The labs pass fewer
# (their LAB_CALIB_IMAGES) to stay fast, at the price of slightly noisier BN statistics.
CALIB_IMAGES = 2000
WEIGHTS, CONFIG = "supernet.safetensors", "supernet.json"


def read_supernet(weights: Path) -> OFASupernet:
    """Registry loader of ``supernet.safetensors``: the net of the shipped ``supernet.json`` with these weights."""
    net = OFASupernet.from_config(artifacts.load(CONFIG))
    try:
        load_weights(net, weights)
    except ValueError as err:
        raise ArtifactError(f"{err}; rebuild it (see data/manifest.json)") from None
    return net.eval()


@lru_cache(maxsize=1)
def _shipped() -> OFASupernet:
    return artifacts.load(WEIGHTS)


def load_supernet() -> OFASupernet:
    """The shipped pretrained supernet (verified by sha256, loaded with safetensors: no pickle; loaded once)."""
    net = _shipped()
    net.set_active_subnet(net.space.largest())
    return net


def load_checkpoint(path: str | Path) -> OFASupernet:
    """A supernet from a training checkpoint (``runs/.../checkpoint.pt``), loaded with ``weights_only=True``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = OFASupernet.from_config(json.loads(state["space"]))
    net.load_state_dict(state["model"])
    return net.eval()


def extract(net: OFASupernet, arch: Arch, calib_images: int = CALIB_IMAGES) -> Subnet:
    """The standalone subnet ``arch`` with BN recalibrated on minival at ``arch.resolution``, in eval mode."""
    net.set_active_subnet(arch)
    sub = net.get_active_subnet().to(memory_format=torch.channels_last)
    images = data.load_split("minival")[0][:calib_images]
    x = data.normalise(images, arch.resolution).contiguous(memory_format=torch.channels_last)
    return recalibrate_bn(sub, x)


@torch.inference_mode()
def top1_accuracy(model: torch.nn.Module, split: str = "minival", resolution: int = 28,
                  limit: int | None = None, batch_size: int = 1000, start: int = 0) -> float:
    """Top-1 accuracy (percent) of ``model`` on a split at ``resolution``, from image ``start`` on."""
    model.eval()
    correct = total = 0
    n = len(data.load_split(split)[1]) - start
    n = n if limit is None else min(limit, n)
    for x, y in progress_bar(data.batches(split, batch_size, resolution, limit=limit, start=start),
                             total=-(-n // batch_size),
                             desc=f"accuracy on {split}", unit="batch", leave=False):
        correct += (model(x.contiguous(memory_format=torch.channels_last)).argmax(1) == y).sum().item()
        total += len(y)
    return 100.0 * correct / total



def evaluate_arch(arch: Arch | str, split: str = "test", net: OFASupernet | None = None,
                  limit: int | None = None, calib_images: int = CALIB_IMAGES, start: int = 0) -> float:
    """Accuracy (percent) of a subnet of the shipped supernet: extract, recalibrate, evaluate on ``split``.

    ``limit`` evaluates on the first images of the split only and ``calib_images`` recalibrates BN on fewer
    minival images: both trade precision for speed (the labs use them to stay within minutes on a laptop).
    ``start`` skips the first images of the split (``start=calib_images`` on minival keeps the images that
    measure accuracy apart from those that recalibrated BN).
    """
    net = net or load_supernet()
    if isinstance(arch, str):
        arch = net.space.parse(arch)
    return top1_accuracy(extract(net, arch, calib_images), split, arch.resolution, limit, start=start)
