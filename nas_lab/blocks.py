"""The building blocks of efficient CNNs, as small plain PyTorch modules (Lab 2).

Every block is built the same way: ``Block(c_in, c_out, stride=1, *, keyword options)`` and maps
``(N, c_in, H, W) -> (N, c_out, H/stride, W/stride)``. Convolutions have no bias (a BatchNorm follows each).

- ``ConvBlock``: one kxk conv -> BN -> ReLU (the baseline the others are compared against)
- ``BasicBlock``: ResNet-18/34, 3x3 -> 3x3, + shortcut
- ``Bottleneck``: ResNet-50, 1x1 reduce -> 3x3 -> 1x1 expand, + shortcut
- ``GroupedBottleneck``: ResNeXt, the bottleneck with a grouped 3x3 conv
- ``MultiPathBottleneck``: ResNeXt's equivalent form, ``groups`` narrow bottleneck paths summed
- ``DepthwiseSeparable``: MobileNet, kxk depthwise -> 1x1 pointwise
- ``InvertedBottleneck``: MobileNetV2, 1x1 expand -> kxk depthwise -> 1x1 linear project (+ residual)
- ``ShuffleUnit``: ShuffleNet, grouped 1x1 -> channel shuffle -> 3x3 depthwise -> grouped 1x1

Activations are ``nn.ReLU`` modules (not ``F.relu``) so that hooks, e.g. in :mod:`nas_lab.memory`, see them.
``use_residual`` says whether a block keeps its input alive until its end (to add it, or to concatenate a
pooled copy of it); :mod:`nas_lab.memory` uses it for the peak-activation rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas_lab.subnet import ConvBNAct, MBConv

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ConvBlock",
    "DepthwiseSeparable",
    "GroupedBottleneck",
    "InvertedBottleneck",
    "MultiPathBottleneck",
    "ShuffleUnit",
    "channel_shuffle",
    "multipath_from_grouped",
]


def conv_bn(c_in: int, c_out: int, kernel_size: int = 1, stride: int = 1, groups: int = 1) -> ConvBNAct:
    """Conv (no bias, 'same' padding) -> BatchNorm, no activation."""
    return ConvBNAct(c_in, c_out, kernel_size, stride, groups=groups, act=False)


def shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    """ResNet shortcut: identity when the shape is kept, else a strided 1x1 projection conv + BN."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return conv_bn(c_in, c_out, 1, stride)


class ConvBlock(nn.Module):
    """A single kxk conv -> BN -> ReLU (no residual)."""

    use_residual = False

    def __init__(self, c_in: int, c_out: int, stride: int = 1, *, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = conv_bn(c_in, c_out, kernel_size, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))  # (N, c_in, H, W) -> (N, c_out, H/s, W/s)


class BasicBlock(nn.Module):
    """ResNet basic block: 3x3 conv -> 3x3 conv, plus an identity (or 1x1 projection) shortcut."""

    use_residual = True

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, 3, stride)
        self.conv2 = conv_bn(c_out, c_out, 3)
        self.shortcut = shortcut(c_in, c_out, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.conv1(x))           # (N, c_in, H, W) -> (N, c_out, H/s, W/s)
        out = self.conv2(out)                    # (N, c_out, H/s, W/s), same shape
        return self.relu(out + self.shortcut(x))  # shortcut(x): (N, c_out, H/s, W/s)


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce to ``mid`` -> 3x3 at ``mid`` -> 1x1 expand to ``c_out``, + shortcut.

    ``mid`` defaults to ``c_out // 4`` (ResNet-50's ratio), e.g. 2048 -> 512 -> 512 -> 2048.
    ``groups`` > 1 makes the 3x3 conv grouped (that is ResNeXt; see :class:`GroupedBottleneck`).
    """

    use_residual = True

    def __init__(self, c_in: int, c_out: int, stride: int = 1, *, mid: int | None = None,
                 groups: int = 1) -> None:
        super().__init__()
        mid = mid or c_out // 4
        self.reduce = conv_bn(c_in, mid, 1)
        self.conv = conv_bn(mid, mid, 3, stride, groups=groups)
        self.expand = conv_bn(mid, c_out, 1)
        self.shortcut = shortcut(c_in, c_out, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.reduce(x))  # (N, c_in, H, W) -> (N, mid, H, W)
        out = self.relu(self.conv(out))  # -> (N, mid, H/s, W/s)
        out = self.expand(out)           # -> (N, c_out, H/s, W/s)
        return self.relu(out + self.shortcut(x))


class GroupedBottleneck(Bottleneck):
    """ResNeXt block: a bottleneck whose 3x3 conv has ``groups`` groups (cardinality).

    ``mid`` defaults to ``c_out // 2`` (ResNeXt-50 32x4d: 256 -> 128 -> 128 -> 256 with 32 groups of 4).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, *, mid: int | None = None,
                 groups: int = 32) -> None:
        super().__init__(c_in, c_out, stride, mid=mid or c_out // 2, groups=groups)


class MultiPathBottleneck(nn.Module):
    """ResNeXt's multi-path form: ``groups`` thin bottlenecks (c_in -> mid/g -> mid/g -> c_out), summed.

    The last 1x1 convs of the paths are summed *before* the shared BatchNorm, which is what makes this
    block compute exactly the same function as :class:`GroupedBottleneck` (see
    :func:`multipath_from_grouped`).
    """

    use_residual = True

    def __init__(self, c_in: int, c_out: int, stride: int = 1, *, mid: int | None = None,
                 groups: int = 32) -> None:
        super().__init__()
        mid = mid or c_out // 2
        if mid % groups:
            raise ValueError(f"mid={mid} is not divisible by groups={groups}")
        width = mid // groups
        self.paths = nn.ModuleList(
            nn.Sequential(conv_bn(c_in, width, 1), nn.ReLU(inplace=True),
                          conv_bn(width, width, 3, stride), nn.ReLU(inplace=True),
                          nn.Conv2d(width, c_out, 1, bias=False))
            for _ in range(groups))
        self.bn = nn.BatchNorm2d(c_out)
        self.shortcut = shortcut(c_in, c_out, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = sum(path(x) for path in self.paths)  # each path: (N, c_in, H, W) -> (N, c_out, H/s, W/s)
        return self.relu(self.bn(out) + self.shortcut(x))


@torch.no_grad()
def multipath_from_grouped(block: GroupedBottleneck) -> MultiPathBottleneck:
    """A :class:`MultiPathBottleneck` holding the same weights as ``block``, so it computes the same outputs.

    Path ``i`` takes output channels ``i*w:(i+1)*w`` of the first 1x1 conv (and their BN), group ``i``
    of the grouped 3x3 conv, and input channels ``i*w:(i+1)*w`` of the last 1x1 conv.
    """
    c_in, mid = block.reduce[0].in_channels, block.reduce[0].out_channels
    c_out, groups, stride = block.expand[0].out_channels, block.conv[0].groups, block.conv[0].stride[0]
    multi = MultiPathBottleneck(c_in, c_out, stride, mid=mid, groups=groups)
    width = mid // groups

    def copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, sl: slice) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(dst, name).copy_(getattr(src, name)[sl])

    for i, path in enumerate(multi.paths):
        sl = slice(i * width, (i + 1) * width)
        path[0][0].weight.copy_(block.reduce[0].weight[sl])            # (w, c_in, 1, 1)
        copy_bn(path[0][1], block.reduce[1], sl)
        path[2][0].weight.copy_(block.conv[0].weight[sl])              # group i: (w, w, 3, 3)
        copy_bn(path[2][1], block.conv[1], sl)
        path[4].weight.copy_(block.expand[0].weight[:, sl])            # (c_out, w, 1, 1)
    copy_bn(multi.bn, block.expand[1], slice(None))
    multi.shortcut.load_state_dict(block.shortcut.state_dict())
    return multi.train(block.training)


class DepthwiseSeparable(nn.Module):
    """MobileNet block: kxk depthwise conv (one filter per channel) -> 1x1 pointwise conv, each + BN + ReLU6."""

    use_residual = False

    def __init__(self, c_in: int, c_out: int, stride: int = 1, *, kernel_size: int = 3) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(c_in, c_in, kernel_size, stride, groups=c_in)
        self.pointwise = ConvBNAct(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))  # (N, c_in, H, W) -> (N, c_in, H/s, W/s) -> (N, c_out, ..)


class InvertedBottleneck(MBConv):
    """MobileNetV2 inverted bottleneck (the supernet's :class:`~nas_lab.subnet.MBConv`).

    1x1 expand to ``expand * c_in`` -> kxk depthwise -> 1x1 linear projection (no activation), with a
    residual when ``residual`` is true and the shape allows it (stride 1, ``c_in == c_out``).
    Example: 160 -> 960 -> 960 -> 160 is ``InvertedBottleneck(160, 160, expand=6)``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, *, expand: int = 6, kernel_size: int = 3,
                 residual: bool = True) -> None:
        super().__init__(c_in, c_out, kernel_size, expand, stride)
        self.use_residual = residual and self.use_residual


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups, so that each new group holds channels from every old one.

    Channels ``[a0 a1 | b0 b1 | c0 c1]`` (3 groups of 2) become ``[a0 b0 c0 | a1 b1 c1]``.
    """
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"{c} channels cannot be split into {groups} groups")
    x = x.reshape(n, groups, c // groups, h, w)   # (N, g, C/g, H, W)
    x = x.transpose(1, 2)                         # (N, C/g, g, H, W)
    return x.reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNet (v1) unit: grouped 1x1 -> channel shuffle -> 3x3 depthwise -> grouped 1x1.

    Stride 1: the input is added (``c_in == c_out``). Stride 2: a 3x3 average-pooled copy of the input is
    concatenated, so the branch produces ``c_out - c_in`` channels. ``mid`` defaults to ``c_out // 4``.
    Both forms keep their input alive to the end, so ``use_residual`` is true for both.
    """

    use_residual = True

    def __init__(self, c_in: int, c_out: int, stride: int = 1, *, groups: int = 3,
                 mid: int | None = None) -> None:
        super().__init__()
        if stride == 1 and c_in != c_out:
            raise ValueError("a stride-1 ShuffleUnit adds its input, so c_in must equal c_out")
        mid = mid or c_out // 4
        branch_out = c_out if stride == 1 else c_out - c_in
        self.groups, self.stride = groups, stride
        self.gconv1 = conv_bn(c_in, mid, 1, groups=groups)
        self.depthwise = conv_bn(mid, mid, 3, stride, groups=mid)
        self.gconv2 = conv_bn(mid, branch_out, 1, groups=groups)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(self.relu(self.gconv1(x)), self.groups)  # (N, c_in, H, W) -> (N, mid, H, W)
        out = self.gconv2(self.depthwise(out))                        # -> (N, branch_out, H/s, W/s)
        if self.stride == 1:
            return self.relu(x + out)
        pooled = F.avg_pool2d(x, 3, self.stride, 1)                   # (N, c_in, H/s, W/s)
        return self.relu(torch.cat([pooled, out], dim=1))             # (N, c_out, H/s, W/s)
