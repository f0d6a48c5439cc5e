"""Net2Net: grow a trained conv net wider or deeper without changing the function it computes.

The model is :class:`ConvNet`, a plain stack of conv-BN-ReLU layers, global average pooling and a linear
head, described by a spec ``[(channels, stride), ...]``. Two function-preserving moves return a *new*
model (the argument is never modified):

- :func:`net2wider` gives layer ``i`` more output channels. Each new channel is a copy of an existing one
  (picked at random, seeded); the copy's conv filter and its BN statistics and affine parameters are
  copied, and the next layer's weights for every copy of a unit are divided by that unit's number of
  copies, so the next layer sums to what it saw before. The core is :func:`widen_conv_pair`.
- :func:`net2deeper` inserts a conv-BN-ReLU after layer ``i`` that computes the identity: a Dirac conv,
  and a BN whose affine parameters undo its own normalisation (:func:`identity_conv_bn`). The ReLU is
  harmless because its input, the previous layer's output, is already non-negative.

**BN of the inserted layer, eval vs train mode.** In eval mode BN computes
``(x - running_mean) / sqrt(running_var + eps) * weight + bias``; with ``weight = sqrt(running_var + eps)``
and ``bias = running_mean`` that is ``x`` for *any* running statistics. In train mode BN uses the
*batch's* mean and variance instead, so an identity BN with running_mean 0 and running_var 1 would
output ``(x - batch mean) / batch std``: standardised, half of it then cut by the ReLU, a big jump in the
function at the first training step. :func:`net2deeper` therefore measures the per-channel mean and
variance of the activations it sits on (from a calibration batch ``calib``) and uses them as running
statistics *and* affine parameters: eval mode is still exactly the identity, and train mode is the
identity up to the difference between batch and population statistics. Without ``calib`` it falls back to
mean 0 / variance 1 (exact in eval mode only).

Both moves take ``noise`` to break the symmetry between copies (Net2Net's advice): then the outputs are
close to, but no longer equal to, the original ones. ``widen_conv_pair`` and ``identity_conv_bn`` are
small on purpose: Lab 7 asks students to write them, and ``net2wider(widen=...)`` /
``net2deeper(identity=...)`` accept their versions.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Seed = int | torch.Generator


def _generator(seed: Seed) -> torch.Generator:
    return seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))


def make_conv(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1,
              gen: torch.Generator | None = None) -> nn.Conv2d:
    """A bias-free 'same'-padded conv, He-initialised from ``gen`` (the global RNG is never touched)."""
    conv = nn.utils.skip_init(nn.Conv2d, c_in, c_out, kernel, stride=stride, padding=kernel // 2,
                              groups=groups, bias=False)
    with torch.no_grad():
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu", generator=gen)
    return conv


def make_linear(c_in: int, c_out: int, gen: torch.Generator | None = None) -> nn.Linear:
    """A linear layer with N(0, 1/c_in) weights from ``gen`` and a zero bias."""
    lin = nn.utils.skip_init(nn.Linear, c_in, c_out)
    with torch.no_grad():
        nn.init.normal_(lin.weight, std=1.0 / math.sqrt(c_in), generator=gen)
        lin.bias.zero_()
    return lin


class ConvBNReLU(nn.Module):
    """``relu(bn(conv(x)))``: one layer of :class:`ConvNet`."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv, self.bn = conv, bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W) -> (N, C_out, H/s, W/s)
        return F.relu(self.bn(self.conv(x)))


class ConvNet(nn.Module):
    """Conv-BN-ReLU layers -> global average pool -> linear head; ``spec`` lists (channels, stride).

    Node 0 is the input image, node ``j`` the output of layer ``j - 1`` (0-based layers), so a net of
    L layers has nodes 0..L; :meth:`nodes` returns them all (what growing code attaches to).
    """

    def __init__(self, widths: Sequence[int], strides: Sequence[int] | None = None, kernel: int = 3,
                 in_channels: int = 1, num_classes: int = 10, seed: Seed = 0) -> None:
        super().__init__()
        strides = [1] * len(widths) if strides is None else list(strides)
        if len(strides) != len(widths) or not widths:
            raise ValueError(f"need one stride per width, got widths {list(widths)} strides {strides}")
        gen = _generator(seed)
        layers, c = [], in_channels
        for width, stride in zip(widths, strides):
            layers.append(ConvBNReLU(make_conv(c, width, kernel, stride, gen=gen), nn.BatchNorm2d(width)))
            c = width
        self.in_channels = in_channels
        self.layers = nn.ModuleList(layers)
        self.head = make_linear(c, num_classes, gen)

    @property
    def spec(self) -> list[tuple[int, int]]:
        """``[(out_channels, stride), ...]``, read from the layers themselves (always current)."""
        return [(layer.conv.out_channels, layer.conv.stride[0]) for layer in self.layers]

    def node_channels(self, node: int) -> int:
        return self.in_channels if node == 0 else self.layers[node - 1].conv.out_channels

    def nodes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[x, layer0(x), layer1(layer0(x)), ...]``: the L + 1 node values, (N, C_j, H_j, W_j) each."""
        out = [x]
        for layer in self.layers:
            out.append(layer(out[-1]))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W) -> (N, classes)
        return self.head(self.nodes(x)[-1].mean((2, 3)))


# ---- Net2Wider --------------------------------------------------------------------------------------------
def widen_conv_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d, next_layer: nn.Conv2d | nn.Linear,
                    mapping: torch.Tensor) -> tuple[nn.Conv2d, nn.BatchNorm2d, nn.Conv2d | nn.Linear]:
    """Net2Wider on one layer: new unit ``i`` is a copy of old unit ``mapping[i]``; returns new modules.

    ``mapping`` (C_new,) must use every old unit at least once. The conv's filters and the BN's
    statistics and affine parameters are gathered by ``mapping``; the next layer's input weights are
    gathered too and divided by how often their unit was copied, so it receives the same sum as before.
    ``next_layer`` is the next conv, or the linear head (after global average pooling, which is
    per-channel and linear, the same rule holds).
    """
    mapping = torch.as_tensor(mapping, dtype=torch.long)
    old = conv.out_channels
    if conv.groups != 1 or getattr(next_layer, "groups", 1) != 1:
        raise ValueError("widen_conv_pair handles dense (groups=1) convs only")
    counts = torch.bincount(mapping, minlength=old)  # (C_old,) copies of each old unit
    if len(counts) != old or (counts == 0).any():
        raise ValueError(f"mapping must use each of the {old} old units at least once, in range")
    new_conv = nn.utils.skip_init(nn.Conv2d, conv.in_channels, len(mapping), conv.kernel_size,
                                  stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                                  bias=conv.bias is not None)
    new_bn = nn.BatchNorm2d(len(mapping), eps=bn.eps, momentum=bn.momentum)
    with torch.no_grad():
        new_conv.weight.copy_(conv.weight[mapping])  # (C_new, C_in, k, k)
        if conv.bias is not None:
            new_conv.bias.copy_(conv.bias[mapping])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new_bn, name).copy_(getattr(bn, name)[mapping])
        new_bn.num_batches_tracked.copy_(bn.num_batches_tracked)
        w = next_layer.weight  # (C_next, C_old, k, k) or (classes, C_old)
        scale = (1.0 / counts[mapping].to(w.dtype)).view(1, -1, *([1] * (w.dim() - 2)))
        new_next = copy.deepcopy(next_layer)
        if isinstance(new_next, nn.Conv2d):
            new_next.in_channels = len(mapping)
        else:
            new_next.in_features = len(mapping)
        new_next.weight = nn.Parameter(w[:, mapping] * scale)
    return new_conv, new_bn, new_next


def net2wider(model: ConvNet, layer_index: int, new_width: int, seed: Seed = 0, noise: float = 0.0,
              widen: Callable | None = None) -> ConvNet:
    """A copy of ``model`` whose layer ``layer_index`` has ``new_width`` output channels, same function.

    The extra ``new_width - C`` units copy randomly chosen units (seeded). ``noise`` > 0 adds
    ``noise * std(filters) * N(0, 1)`` to the copies' filters to break the symmetry (the function then
    changes slightly). ``widen`` replaces :func:`widen_conv_pair` (a student's version).
    """
    _check_plain(model)
    new = copy.deepcopy(model)
    layer = new.layers[layer_index]
    old = layer.conv.out_channels
    if new_width <= old:
        raise ValueError(f"layer {layer_index} has {old} channels; new_width must be larger, got {new_width}")
    gen = _generator(seed)
    mapping = torch.cat([torch.arange(old), torch.randint(old, (new_width - old,), generator=gen)])
    last = layer_index == len(new.layers) - 1
    nxt = new.head if last else new.layers[layer_index + 1].conv
    conv, bn, nxt = (widen or widen_conv_pair)(layer.conv, layer.bn, nxt, mapping)
    if noise > 0:
        with torch.no_grad():
            extra = conv.weight[old:]  # (new_width - old, C_in, k, k)
            extra += noise * conv.weight.std() * torch.randn(extra.shape, generator=gen)
    layer.conv, layer.bn = conv, bn
    if last:
        new.head = nxt
    else:
        new.layers[layer_index + 1].conv = nxt
    return new


# ---- Net2Deeper -------------------------------------------------------------------------------------------
def identity_conv_bn(channels: int, kernel: int = 3, mean: torch.Tensor | None = None,
                     var: torch.Tensor | None = None, eps: float = 1e-5) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """A conv (Dirac filters) and a BN that together compute ``x`` in eval mode.

    The BN's running statistics are ``mean``/``var`` (per channel; default 0 and 1) and its affine
    parameters undo them (``weight = sqrt(var + eps)``, ``bias = mean``): the identity in eval mode for
    any statistics, and close to it in train mode when they are the statistics of the real input.
    """
    if kernel % 2 == 0:
        raise ValueError(f"an identity conv needs an odd kernel, got {kernel}")
    conv = nn.utils.skip_init(nn.Conv2d, channels, channels, kernel, padding=kernel // 2, bias=False)
    mean = torch.zeros(channels) if mean is None else mean.detach().float()
    var = torch.ones(channels) if var is None else var.detach().float()
    bn = nn.BatchNorm2d(channels, eps=eps)
    with torch.no_grad():
        nn.init.dirac_(conv.weight)  # weight[i, i, k//2, k//2] = 1, all else 0
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(torch.sqrt(var + eps))
        bn.bias.copy_(mean)
    return conv, bn


@torch.no_grad()
def node_statistics(model: ConvNet, node: int, calib: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (biased) variance of node ``node`` on the batch ``calib``, in eval mode."""
    was_training = model.training
    model.eval()
    h = model.nodes(calib)[node]  # (N, C, H, W)
    model.train(was_training)
    return h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=False)


def net2deeper(model: ConvNet, after_layer_index: int, calib: torch.Tensor | None = None, seed: Seed = 0,
               noise: float = 0.0, identity: Callable | None = None) -> ConvNet:
    """A copy of ``model`` with an identity conv-BN-ReLU (stride 1) inserted after ``after_layer_index``.

    ``calib`` (N, C_in, H, W): images whose activations set the new BN's statistics (see the module
    docstring; without it eval mode is exact, train mode is not). ``noise`` > 0 adds
    ``noise / sqrt(fan_in) * N(0, 1)`` to the new filters. ``identity`` replaces :func:`identity_conv_bn`.
    """
    _check_plain(model)
    conv = model.layers[after_layer_index].conv
    channels, kernel = conv.out_channels, conv.kernel_size[0]
    mean = var = None
    if calib is not None:
        mean, var = node_statistics(model, after_layer_index + 1, calib)
    new_conv, bn = (identity or identity_conv_bn)(channels, kernel, mean, var)
    if noise > 0:
        with torch.no_grad():
            fan_in = channels * kernel * kernel
            new_conv.weight += noise / math.sqrt(fan_in) * torch.randn(new_conv.weight.shape,
                                                                       generator=_generator(seed))
    new = copy.deepcopy(model)
    new.layers.insert(after_layer_index + 1, ConvBNReLU(new_conv, bn))
    return new


def _check_plain(model: ConvNet) -> None:
    if len(getattr(model, "branches", ())):
        raise ValueError("Net2Net moves here apply to nets without grown branches (widen/deepen first, then grow)")
