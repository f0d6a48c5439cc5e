"""Counting multiply-accumulates (MACs) and weights of convolutional and linear layers.

One MAC is one multiplication followed by one addition (``acc += w * x``); papers that quote FLOPs
usually count the two separately, so **1 MAC = 2 FLOPs**. Everything here counts MACs.

What is counted, and what is not:

- Counted: ``nn.Conv2d`` (dense, grouped, depthwise, dilated, strided, padded, 1x1) and ``nn.Linear``.
  These hold almost all the weights and almost all the arithmetic of a CNN.
- Ignored: bias additions (the bias is counted as a *parameter* but adds no MAC), BatchNorm, activations
  (ReLU, ...), residual additions, pooling (max and average), softmax, dropout, reshapes, concatenation.
  Their cost is linear in the activation size, typically well under 1 % of the conv/linear MACs.
- MACs are per image: the batch dimension is never multiplied in, so a batch of 8 reports the same
  count as a batch of 1.

The formula functions (``conv2d_macs`` ...) take plain integers; ``layer_macs`` reads the sizes from a
module; ``count_model`` runs one forward pass with hooks and applies ``layer_macs`` to every call of
every conv/linear layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "CONV_LINEAR_OPS",
    "LayerCount",
    "ModelCount",
    "conv2d_macs",
    "conv2d_output_size",
    "conv2d_params",
    "count_model",
    "layer_macs",
    "layer_params",
    "linear_macs",
    "linear_params",
    "torchprofile_macs",
    "trace_layers",
]

Size2 = int | tuple[int, int] | Sequence[int]


def _pair(value: Size2) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    a, b = value
    return int(a), int(b)


def conv2d_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0,
                       dilation: int = 1) -> int:
    """Output height (or width) of a convolution along one axis.

    ``floor((size + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1``; the same rule as
    ``nn.Conv2d`` and the pooling layers. Raises ``ValueError`` if the kernel does not fit.
    """
    span = dilation * (kernel_size - 1) + 1  # extent of the dilated kernel
    if size + 2 * padding < span:
        raise ValueError(f"kernel of extent {span} does not fit an input of size {size} with padding {padding}")
    return (size + 2 * padding - span) // stride + 1


def _check_groups(c_in: int, c_out: int, groups: int) -> None:
    if groups < 1 or c_in % groups or c_out % groups:
        raise ValueError(f"groups={groups} must divide c_in={c_in} and c_out={c_out}")


def conv2d_macs(c_in: int, c_out: int, kernel_size: Size2, out_h: int, out_w: int, groups: int = 1) -> int:
    """MACs of one 2-D convolution for one image: ``c_out * out_h * out_w * (c_in / groups) * kh * kw``.

    Every output element is a dot product over a ``(c_in / groups) x kh x kw`` window. Depthwise is
    ``groups == c_in == c_out``; a 1x1 (pointwise) conv is ``kernel_size=1``. Stride, padding and
    dilation only enter through ``out_h`` and ``out_w``. The bias adds no MAC.
    """
    _check_groups(c_in, c_out, groups)
    kh, kw = _pair(kernel_size)
    return c_out * out_h * out_w * (c_in // groups) * kh * kw


def conv2d_params(c_in: int, c_out: int, kernel_size: Size2, groups: int = 1, bias: bool = False) -> int:
    """Weights of one 2-D convolution: ``c_out * (c_in / groups) * kh * kw`` (+ ``c_out`` with a bias)."""
    _check_groups(c_in, c_out, groups)
    kh, kw = _pair(kernel_size)
    return c_out * (c_in // groups) * kh * kw + (c_out if bias else 0)


def linear_macs(in_features: int, out_features: int) -> int:
    """MACs of a fully connected layer for one input vector: ``in_features * out_features``."""
    return in_features * out_features


def linear_params(in_features: int, out_features: int, bias: bool = True) -> int:
    """Weights of a fully connected layer: ``in * out`` (+ ``out`` with a bias, PyTorch's default)."""
    return in_features * out_features + (out_features if bias else 0)


def _conv_out_hw(module: nn.Conv2d, h: int, w: int) -> tuple[int, int]:
    kh, kw = module.kernel_size
    sh, sw = module.stride
    dh, dw = module.dilation
    if isinstance(module.padding, str):  # 'valid' or 'same' (stride 1 only, enforced by PyTorch)
        if module.padding == "same":
            return h, w
        ph = pw = 0
    else:
        ph, pw = module.padding
    return conv2d_output_size(h, kh, sh, ph, dh), conv2d_output_size(w, kw, sw, pw, dw)


def layer_macs(module: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs of one call of ``module`` (``nn.Conv2d`` or ``nn.Linear``) on an input of ``input_shape``.

    ``input_shape`` is the shape of the input tensor: ``(N, C, H, W)`` (or unbatched ``(C, H, W)``)
    for a conv, ``(N, ..., in_features)`` for a linear layer. The count is per image: the batch size
    ``N`` is left out, while extra middle dimensions of a linear input (e.g. tokens) are multiplied in.
    """
    shape = tuple(int(s) for s in input_shape)
    if isinstance(module, nn.Conv2d):
        if len(shape) not in (3, 4):
            raise ValueError(f"Conv2d expects a (N, C, H, W) or (C, H, W) input, got {shape}")
        c, h, w = shape[-3:]
        if c != module.in_channels:
            raise ValueError(f"input has {c} channels, the conv expects {module.in_channels}")
        out_h, out_w = _conv_out_hw(module, h, w)
        return conv2d_macs(module.in_channels, module.out_channels, module.kernel_size, out_h, out_w,
                           module.groups)
    if isinstance(module, nn.Linear):
        if not shape or shape[-1] != module.in_features:
            raise ValueError(f"Linear expects (..., {module.in_features}) inputs, got {shape}")
        per_image_vectors = math.prod(shape[1:-1]) if len(shape) >= 2 else 1
        return per_image_vectors * linear_macs(module.in_features, module.out_features)
    raise TypeError(f"layer_macs counts nn.Conv2d and nn.Linear only, not {type(module).__name__}")


def layer_params(module: nn.Module) -> int:
    """Weights (and bias) of an ``nn.Conv2d`` or ``nn.Linear``, from its sizes, not its tensors."""
    if isinstance(module, nn.Conv2d):
        return conv2d_params(module.in_channels, module.out_channels, module.kernel_size, module.groups,
                             bias=module.bias is not None)
    if isinstance(module, nn.Linear):
        return linear_params(module.in_features, module.out_features, bias=module.bias is not None)
    raise TypeError(f"layer_params counts nn.Conv2d and nn.Linear only, not {type(module).__name__}")


@dataclass(frozen=True)
class LayerCount:
    """One call of one conv/linear layer during the forward pass (shapes include the batch dim)."""

    name: str
    kind: str  # "conv", "depthwise", "grouped", "pointwise" or "linear"
    macs: int
    params: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    @property
    def input_elements(self) -> int:
        """Input activation elements per image (batch dim excluded)."""
        return math.prod(self.input_shape[1:])

    @property
    def output_elements(self) -> int:
        """Output activation elements per image (batch dim excluded)."""
        return math.prod(self.output_shape[1:])


@dataclass
class ModelCount:
    """Per-layer counts of a model; ``macs``/``params`` cover conv and linear layers only."""

    layers: list[LayerCount] = field(default_factory=list)
    total_params: int = 0  # every parameter of the model (BN, embeddings, ... included)

    @property
    def macs(self) -> int:
        """Total MACs per image of all conv/linear calls."""
        return sum(layer.macs for layer in self.layers)

    @property
    def flops(self) -> int:
        """``2 * macs`` (one multiply + one add per MAC)."""
        return 2 * self.macs

    @property
    def params(self) -> int:
        """Weights of the conv/linear layers (each module once, even if it is called several times)."""
        return sum({layer.name: layer.params for layer in self.layers}.values())

    def table(self, max_rows: int | None = None) -> str:
        """A plain-text table: one row per layer call, then the totals."""
        head = f"{'layer':<24} {'kind':<9} {'output':>18} {'params':>12} {'MACs':>15} {'MACs %':>7}"
        rows = [head, "-" * len(head)]
        total = max(self.macs, 1)
        shown = self.layers if max_rows is None else self.layers[:max_rows]
        for layer in shown:
            out = "x".join(str(s) for s in layer.output_shape[1:])
            rows.append(f"{layer.name[:24]:<24} {layer.kind:<9} {out:>18} {layer.params:>12,} "
                        f"{layer.macs:>15,} {100 * layer.macs / total:>6.1f}%")
        if len(shown) < len(self.layers):
            rows.append(f"... {len(self.layers) - len(shown)} more layers")
        rows.append("-" * len(head))
        rows.append(f"{'total (conv + linear)':<34} {'':>18} {self.params:>12,} {self.macs:>15,}")
        rows.append(f"all parameters: {self.total_params:,}; MACs = {self.macs / 1e9:.3f} G "
                    f"(= {self.flops / 1e9:.3f} GFLOPs)")
        return "\n".join(rows)


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    if module.groups == 1:
        return "pointwise" if tuple(module.kernel_size) == (1, 1) else "conv"
    if module.groups == module.in_channels == module.out_channels:
        return "depthwise"
    return "grouped"


@torch.no_grad()
def forward_with_hooks(model: nn.Module, example_input: torch.Tensor | tuple, handles: list) -> None:
    """One forward pass in eval mode without gradients, then remove the hook ``handles`` whatever happens.

    The model's train/eval mode is restored; the hooks collect whatever the caller measures.
    """
    was_training = model.training
    try:
        model.eval()
        model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def trace_layers(model: nn.Module, example_input: torch.Tensor | tuple
                 ) -> list[tuple[str, nn.Module, tuple[int, ...], tuple[int, ...]]]:
    """Every call of an ``nn.Conv2d``/``nn.Linear`` in one forward pass: ``(name, module, in_shape, out_shape)``.

    Shapes include the batch dimension. The forward runs in eval mode without gradients (the model's
    mode is restored). It also works on the ``meta`` device (shapes only, no arithmetic), which makes
    large models cheap to trace: ``with torch.device("meta"): model = vgg16()``.
    """
    calls: list[tuple[str, nn.Module, tuple[int, ...], tuple[int, ...]]] = []

    def hook(name: str):
        def fn(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            calls.append((name, module, tuple(inputs[0].shape), tuple(output.shape)))
        return fn

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules()
               if isinstance(module, (nn.Conv2d, nn.Linear))]
    forward_with_hooks(model, example_input, handles)
    return calls


def count_model(model: nn.Module, example_input: torch.Tensor | tuple) -> ModelCount:
    """Count MACs and weights of every ``nn.Conv2d``/``nn.Linear`` call in one forward pass.

    Forward hooks (:func:`trace_layers`) record the input shape each layer actually sees, and
    :func:`layer_macs` turns it into MACs, so the count follows the real data flow (a layer called
    twice appears twice). MACs are per image. BN, activations, residual adds and pooling are not
    counted (see the module docstring).
    """
    result = ModelCount(total_params=sum(p.numel() for p in model.parameters()))
    for name, module, in_shape, out_shape in trace_layers(model, example_input):
        result.layers.append(LayerCount(name, _kind(module), layer_macs(module, in_shape),
                                        layer_params(module), in_shape, out_shape))
    return result


# torchprofile operators that belong to conv and linear layers (everything else it counts, such as
# batch_norm, mul, mean and avg_pool, is left out so that the totals compare like with like).
CONV_LINEAR_OPS = ("aten::_convolution", "aten::linear", "aten::addmm", "aten::matmul")


def torchprofile_macs(model: nn.Module, example_input: torch.Tensor,
                      ops: Sequence[str] | None = CONV_LINEAR_OPS) -> int:
    """MACs per image according to ``torchprofile.profile_macs``, restricted to ``ops`` (None = all).

    An independent cross-check of :func:`count_model`: torchprofile traces the graph and counts each
    aten operator. Its total also includes BatchNorm (one MAC per output element), elementwise ``mul``
    and average pooling/mean, which is why the default keeps only conv and linear operators.
    Divides by the batch size, so the result is per image.
    """
    from torchprofile import profile_macs

    was_training = model.training
    model.eval()
    try:
        per_node = profile_macs(model, example_input, reduction=None)
    finally:
        model.train(was_training)
    total = sum(m for node, m in per_node.items() if ops is None or node.operator in ops)
    batch = example_input.shape[0] if example_input.dim() >= 2 else 1
    return total // batch
