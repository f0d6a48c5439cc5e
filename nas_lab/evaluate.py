"""Load the shipped supernet and measure subnets: extract, recalibrate BN on minival, evaluate.

BN recalibration always runs at the subnet's own resolution, on the first ``CALIB_IMAGES`` images of the
minival split (never training, never test images), so an accuracy is a function of the arch alone.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

from nas_lab import data
from nas_lab.artifacts import ArtifactError, verified_path
from nas_lab.space import Arch
from nas_lab.subnet import Subnet
from nas_lab.supernet import OFASupernet, load_weights, recalibrate_bn

CALIB_IMAGES = 2000
WEIGHTS, CONFIG = "supernet.safetensors", "supernet.json"


@lru_cache(maxsize=1)
def _load_cached() -> OFASupernet:
    from nas_lab.cli_supernet import SUPERNET_REBUILD

    config = json.loads(verified_path(CONFIG, SUPERNET_REBUILD).read_text())
    net = OFASupernet.from_config(config)
    try:
        load_weights(net, verified_path(WEIGHTS, SUPERNET_REBUILD))
    except ValueError as err:
        raise ArtifactError(f"{err}; rebuild it (see data/manifest.json)") from None
    return net.eval()


def load_supernet() -> OFASupernet:
    """The shipped pretrained supernet (verified by sha256, loaded with safetensors: no pickle)."""
    net = _load_cached()
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
def accuracy(model: torch.nn.Module, split: str = "minival", resolution: int = 28,
             limit: int | None = None, batch_size: int = 1000) -> float:
    """Top-1 accuracy (percent) of ``model`` on a split at ``resolution``."""
    model.eval()
    correct = total = 0
    for x, y in data.batches(split, batch_size, resolution, limit=limit):
        correct += (model(x.contiguous(memory_format=torch.channels_last)).argmax(1) == y).sum().item()
        total += len(y)
    return 100.0 * correct / total


def evaluate_arch(arch: Arch | str, split: str = "test", net: OFASupernet | None = None,
                  limit: int | None = None, calib_images: int = CALIB_IMAGES) -> float:
    """Accuracy (percent) of a subnet of the shipped supernet: extract, recalibrate, evaluate on ``split``.

    ``limit`` evaluates on the first images of the split only and ``calib_images`` recalibrates BN on fewer
    minival images: both trade precision for speed (the labs use them to stay within minutes on a laptop).
    """
    net = net or load_supernet()
    if isinstance(arch, str):
        arch = net.space.parse(arch)
    return accuracy(extract(net, arch, calib_images), split, arch.resolution, limit)
