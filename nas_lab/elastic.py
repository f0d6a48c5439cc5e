"""Elastic layers: one set of weights, many sizes (the building bricks of the once-for-all supernet).

- ``ElasticConv2d``: a dense conv whose active input/output channels are the first ones (channel slicing).
- ``ElasticDepthwiseConv2d``: a depthwise conv of the largest kernel; a smaller kernel takes the centre of
  the larger one through a small learnt transform matrix per step (7 -> 5 -> 3, as in OFA).
- ``ElasticBatchNorm2d``: BatchNorm over the first ``c`` channels (slices of the weight and running stats).
- ``ElasticLinear``: a linear layer over the first ``in`` features.

Each ``active_*`` method returns exactly the weights the active configuration uses, so extraction copies
them into static layers whose outputs are identical.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ElasticConv2d(nn.Module):
    """Conv2d (groups=1, fixed kernel) with elastic input and output channels."""

    def __init__(self, max_in: int, max_out: int, kernel_size: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, kernel_size // 2
        self.weight = nn.Parameter(torch.empty(max_out, max_in, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def active_weight(self, in_channels: int, out_channels: int) -> torch.Tensor:
        return self.weight[:out_channels, :in_channels]

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        # x: (N, in, H, W) -> (N, out, H/stride, W/stride)
        return F.conv2d(x, self.active_weight(x.shape[1], out_channels), None, self.stride, self.padding)


class ElasticDepthwiseConv2d(nn.Module):
    """Depthwise conv with elastic channels and elastic kernel size (centre + learnt transform)."""

    def __init__(self, max_channels: int, kernel_sizes: tuple[int, ...], stride: int = 1) -> None:
        super().__init__()
        self.kernel_sizes = tuple(sorted(kernel_sizes))
        self.stride = stride
        k = self.kernel_sizes[-1]
        self.weight = nn.Parameter(torch.empty(max_channels, 1, k, k))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        # one (k_small^2 x k_small^2) matrix per shrinking step, shared across channels, identity at start
        for big, small in zip(self.kernel_sizes[:0:-1], self.kernel_sizes[-2::-1]):
            self.register_parameter(f"transform_{big}to{small}", nn.Parameter(torch.eye(small * small)))

    def active_weight(self, channels: int, kernel_size: int) -> torch.Tensor:
        """(channels, 1, k, k) weight of the active kernel size."""
        w = self.weight[:channels]
        big = self.kernel_sizes[-1]
        for small in reversed(self.kernel_sizes[:-1]):
            if small < kernel_size:
                break
            start = (big - small) // 2
            centre = w[:, :, start:start + small, start:start + small].reshape(channels, small * small)
            w = F.linear(centre, getattr(self, f"transform_{big}to{small}")).reshape(channels, 1, small, small)
            big = small
        return w

    def forward(self, x: torch.Tensor, kernel_size: int) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(x, self.active_weight(c, kernel_size), None, self.stride, kernel_size // 2, 1, c)


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d applied to the first C channels of its input (C taken from the input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        use_batch_stats = self.training or not self.track_running_stats
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if self.momentum is None:  # cumulative moving average, used by BN recalibration
                momentum = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            use_batch_stats, momentum, self.eps)


class ElasticLinear(nn.Module):
    """Linear layer over the first ``in`` features of its input."""

    def __init__(self, max_in: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, max_in))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, :x.shape[1]], self.bias)
