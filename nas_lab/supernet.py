"""The once-for-all supernet: elastic resolution, width, depth, kernel and expand; subnet extraction.

``OFASupernet`` holds the weights of the largest network. ``set_active_subnet(arch)`` chooses which part
of it runs; ``get_active_subnet()`` copies that part into a standalone :class:`~nas_lab.subnet.Subnet`
with identical outputs; ``recalibrate_bn`` re-estimates BatchNorm statistics for a subnet on the minival
split at the subnet's own resolution (shared BN statistics are meaningless for any particular subnet).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas_lab.elastic import ElasticBatchNorm2d, ElasticConv2d, ElasticDepthwiseConv2d, ElasticLinear
from nas_lab.space import Arch, SearchSpace
from nas_lab.subnet import ConvBNAct, MBConv, Subnet


class ElasticMBConv(nn.Module):
    """Inverted bottleneck with elastic input/output width, expand ratio and depthwise kernel."""

    def __init__(self, max_in: int, max_out: int, stride: int, space: SearchSpace) -> None:
        super().__init__()
        max_mid = max_in * max(space.expands)
        self.stride = stride
        self.expand_conv = ElasticConv2d(max_in, max_mid, 1)
        self.expand_bn = ElasticBatchNorm2d(max_mid)
        self.depthwise_conv = ElasticDepthwiseConv2d(max_mid, space.kernels, stride)
        self.depthwise_bn = ElasticBatchNorm2d(max_mid)
        self.project_conv = ElasticConv2d(max_mid, max_out, 1)
        self.project_bn = ElasticBatchNorm2d(max_out)

    def forward(self, x: torch.Tensor, out_channels: int, kernel: int, expand: int) -> torch.Tensor:
        mid = x.shape[1] * expand
        h = F.relu6(self.expand_bn(self.expand_conv(x, mid)))
        h = F.relu6(self.depthwise_bn(self.depthwise_conv(h, kernel)))
        h = self.project_bn(self.project_conv(h, out_channels))
        return x + h if self.stride == 1 and x.shape[1] == out_channels else h

    @torch.no_grad()
    def sort_expanded_channels(self) -> None:
        """Reorder the expanded (middle) channels by importance, most important first (OFA).

        Importance = L1 norm of each middle channel's weights in the projection conv. A permutation of the
        middle channels leaves the full block's function unchanged, but makes the first channels, which
        small expand ratios and widths keep, the most important ones.
        """
        importance = self.project_conv.weight.abs().sum(dim=(0, 2, 3))
        order = torch.argsort(importance, descending=True)
        self.expand_conv.weight.copy_(self.expand_conv.weight[order])
        self.depthwise_conv.weight.copy_(self.depthwise_conv.weight[order])
        self.project_conv.weight.copy_(self.project_conv.weight[:, order])
        for bn in (self.expand_bn, self.depthwise_bn):
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t.copy_(t[order])


class ElasticConvBN(nn.Module):
    """Elastic dense conv -> elastic BN -> ReLU6 (stem and head)."""

    def __init__(self, max_in: int, max_out: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = ElasticConv2d(max_in, max_out, kernel_size, stride)
        self.bn = ElasticBatchNorm2d(max_out)

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        return F.relu6(self.bn(self.conv(x, out_channels)))


class OFASupernet(nn.Module):
    """MobileNetV2-style once-for-all supernet over a :class:`SearchSpace`."""

    def __init__(self, space: SearchSpace | None = None) -> None:
        super().__init__()
        self.space = space = space or SearchSpace()
        ch = space.channels(max(space.widths))
        self.stem = ElasticConvBN(space.in_channels, ch["stem"], 3, 2)
        blocks, c_in = [], ch["stem"]
        for s, c_out in enumerate(ch["stages"]):
            for b in range(space.max_depth):
                blocks.append(ElasticMBConv(c_in, c_out, space.stage_strides[s] if b == 0 else 1, space))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = ElasticConvBN(c_in, ch["head"], 1)
        self.classifier = ElasticLinear(ch["head"], space.num_classes)
        self.active = space.largest()

    # ---- choosing a subnet -----------------------------------------------------------------
    def set_active_subnet(self, arch: Arch) -> Arch:
        """Make ``arch`` the path that ``forward`` runs (validated against the space)."""
        self.active = self.space.validate(arch)
        return self.active

    def sample_active_subnet(self, rng: random.Random) -> Arch:
        """Sample a uniformly random arch (every choice reachable) and make it active."""
        return self.set_active_subnet(self.space.sample(rng))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the active subnet on x of shape (N, C, r, r) (r should be the active resolution)."""
        a, ch = self.active, self.space.channels(self.active.width)
        x = self.stem(x, ch["stem"])
        for stage, block, k, e in a.blocks():
            x = self.blocks[stage * self.space.max_depth + block](x, ch["stages"][stage], k, e)
        x = self.head(x, ch["head"])
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def sort_expanded_channels(self) -> None:
        for block in self.blocks:
            block.sort_expanded_channels()

    # ---- extraction --------------------------------------------------------------------------
    @torch.no_grad()
    def get_active_subnet(self) -> Subnet:
        """A standalone static copy of the active subnet (same outputs, in the supernet's train/eval mode)."""
        a, space = self.active, self.space
        net = Subnet(a, space)
        ch = space.channels(a.width)
        _copy_conv_bn(net.stem, self.stem.conv.active_weight(space.in_channels, ch["stem"]), self.stem.bn)
        for static, (stage, block, k, e) in zip(net.blocks, a.blocks()):
            src = self.blocks[stage * space.max_depth + block]
            c_in = static.expand[0].in_channels
            mid, c_out = c_in * e, ch["stages"][stage]
            _copy_conv_bn(static.expand, src.expand_conv.active_weight(c_in, mid), src.expand_bn)
            _copy_conv_bn(static.depthwise, src.depthwise_conv.active_weight(mid, k), src.depthwise_bn)
            _copy_conv_bn(static.project, src.project_conv.active_weight(mid, c_out), src.project_bn)
        c_last = ch["stages"][-1]
        _copy_conv_bn(net.head, self.head.conv.active_weight(c_last, ch["head"]), self.head.bn)
        net.classifier.weight.copy_(self.classifier.weight[:, :ch["head"]])
        net.classifier.bias.copy_(self.classifier.bias)
        return net.train(self.training)

    # ---- persistence ---------------------------------------------------------------------------
    def config(self) -> dict:
        return {"space": self.space.describe()}

    @classmethod
    def from_config(cls, config: dict) -> "OFASupernet":
        return cls(SearchSpace.from_dict(config["space"]))


def _copy_conv_bn(dst: ConvBNAct | nn.Sequential, weight: torch.Tensor, bn: nn.BatchNorm2d) -> None:
    conv, dst_bn = dst[0], dst[1]
    conv.weight.copy_(weight)
    c = dst_bn.num_features
    dst_bn.weight.copy_(bn.weight[:c])
    dst_bn.bias.copy_(bn.bias[:c])
    dst_bn.running_mean.copy_(bn.running_mean[:c])
    dst_bn.running_var.copy_(bn.running_var[:c])
    dst_bn.num_batches_tracked.copy_(bn.num_batches_tracked)


def load_weights(net: OFASupernet, path: str | Path) -> None:
    """Load supernet weights from a safetensors file (tensors only, no pickle); a mismatch is a ValueError."""
    from safetensors.torch import load_file

    missing, unexpected = net.load_state_dict(load_file(str(path)), strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not match the supernet: missing {missing[:3]}, unexpected {unexpected[:3]}")


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics from ``images`` (already at the model's resolution).

    Resets the statistics, then averages them over all batches (cumulative average, momentum=None). Returns
    the model in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for start in range(0, len(images), batch_size):
        model(images[start:start + batch_size])
    for bn, m in zip(bns, saved):
        bn.momentum = m
    return model.eval()


__all__ = ["OFASupernet", "ElasticMBConv", "recalibrate_bn", "MBConv", "Subnet"]
