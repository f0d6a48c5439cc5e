"""Static (non-elastic) modules of an extracted subnet: plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.Linear``.

``get_active_subnet`` in :mod:`nas_lab.supernet` builds a :class:`Subnet` and copies the active weights
into it; the result is an ordinary PyTorch model that counters (hooks, torchprofile) and students can read.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from nas_lab.space import Arch, SearchSpace


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> optional ReLU6; 'same' padding."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class MBConv(nn.Module):
    """MobileNetV2 inverted bottleneck: 1x1 expand -> kxk depthwise -> 1x1 project (linear), + residual."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, expand: int, stride: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = ConvBNAct(c_in, mid, 1)
        self.depthwise = ConvBNAct(mid, mid, kernel_size, stride, groups=mid)
        self.project = ConvBNAct(mid, c_out, 1, act=False)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))  # (N, c_in, H, W) -> (N, c_out, H/s, W/s)
        return x + out if self.use_residual else out


class Subnet(nn.Module):
    """A standalone network for one :class:`Arch` (random init; weights come from the supernet)."""

    def __init__(self, arch: Arch, space: SearchSpace) -> None:
        super().__init__()
        self.arch, self.resolution = arch, arch.resolution
        ch = space.channels(arch.width)
        self.stem = ConvBNAct(space.in_channels, ch["stem"], 3, 2)
        blocks, c_in = [], ch["stem"]
        for stage, block, k, e in arch.blocks():
            stride = space.stage_strides[stage] if block == 0 else 1
            blocks.append(MBConv(c_in, ch["stages"][stage], k, e, stride))
            c_in = ch["stages"][stage]
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBNAct(c_in, ch["head"], 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(ch["head"], space.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))  # (N, 1, r, r) -> (N, head, r/8.., ..)
        return self.classifier(torch.flatten(self.pool(x), 1))  # (N, num_classes)
