"""Activation memory of a CNN: the inference peak (one rule, shared with the NAS engine) and the training total.

Inference: peak activation memory (``peak_memory``)
----------------------------------------------------
One rule, the same one the NAS engine's analytic predictor implements for supernet subnets
(``docs/memory.md`` has worked examples):

1. Batch 1, activations only (weights are not counted), int8 elements: **bytes = elements**.
   ``KB = bytes / 1024``.
2. Only ``nn.Conv2d`` and ``nn.Linear`` calls are counted. Each needs its **input + output** alive at once.
   BatchNorm, activations and pooling are taken as fused into (or done in place after) the layer before,
   so they add nothing.
3. Inside a residual block the block's input stays alive until the add: for every conv/linear layer in the
   block **whose input is not the block input itself**, the block input's elements are added.
   A residual block is a module with ``use_residual == True`` (``MBConv``, the blocks of
   :mod:`nas_lab.blocks`), ``use_res_connect == True`` (torchvision MobileNetV2/V3) or a torchvision
   ResNet ``BasicBlock``/``Bottleneck``. Shortcut branch: a ResNet projection shortcut (1x1 conv) is just
   another conv of the block whose input *is* the block input, so it counts input + output and nothing
   extra; for the other layers the tensor kept for the add is counted as the block input, whether the
   shortcut is the identity or a projection (for a projection this is an approximation: which of x and its
   projection waits depends on evaluation order). Nested residual blocks each add their own input.
4. Network peak = max over the layer calls.

Training: stored activations (``training_activation_bytes``)
------------------------------------------------------------
For backward, autograd keeps (roughly) the input of every layer that needs it. Simple rule used here:
the **input of every conv, linear, BatchNorm and activation module call is stored**, for every sample of
the batch, until backward: ``bytes = batch_size * bytes_per_element * sum(input elements per sample)``.
The default element is float32 (4 bytes), the usual training precision. Residual adds, pooling and
functional ops (``F.relu``) are not counted, so it is a slight underestimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from nas_lab.counting import _kind, forward_with_hooks

__all__ = [
    "ACTIVATIONS",
    "LayerMemory",
    "MemoryReport",
    "is_residual_block",
    "peak_memory",
    "peak_memory_kb",
    "saved_activation_elements",
    "training_activation_bytes",
    "weight_bytes",
]

# Activation modules whose inputs the training rule stores.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh,
               nn.LeakyReLU, nn.PReLU, nn.ELU)


def _per_sample(t: torch.Tensor) -> int:
    """Elements of one sample of a batched tensor (the first dim is the batch)."""
    return math.prod(t.shape[1:])


def is_residual_block(module: nn.Module) -> bool:
    """True if ``module`` keeps its input alive until its end (rule 3 of the module docstring)."""
    for flag in ("use_residual", "use_res_connect"):
        if hasattr(module, flag):
            return getattr(module, flag) is True
    cls = type(module)
    return cls.__module__ == "torchvision.models.resnet" and cls.__name__ in ("BasicBlock", "Bottleneck")


@dataclass(frozen=True)
class LayerMemory:
    """Activation elements alive during one conv/linear call (per image; int8 so elements = bytes)."""

    name: str
    kind: str  # as in nas_lab.counting: "conv", "depthwise", "grouped", "pointwise" or "linear"
    input_elements: int
    output_elements: int
    residual_elements: int  # inputs of enclosing residual blocks kept alive for the add
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    @property
    def bytes(self) -> int:
        """input + output + kept residual inputs, at 1 byte per element."""
        return self.input_elements + self.output_elements + self.residual_elements

    @property
    def kb(self) -> float:
        return self.bytes / 1024


@dataclass
class MemoryReport:
    """Per-layer activation memory of one forward pass and its peak."""

    layers: list[LayerMemory] = field(default_factory=list)

    @property
    def peak_layer(self) -> LayerMemory:
        """The first layer call that reaches the peak."""
        return max(self.layers, key=lambda layer: layer.bytes)

    @property
    def peak_bytes(self) -> int:
        return self.peak_layer.bytes if self.layers else 0

    @property
    def peak_kb(self) -> float:
        """Peak in KB, where 1 KB = 1024 bytes."""
        return self.peak_bytes / 1024

    def table(self, max_rows: int | None = None) -> str:
        """A plain-text table: one row per layer call (elements; int8 so also bytes), then the peak."""
        head = f"{'layer':<28} {'kind':<9} {'input':>10} {'output':>10} {'residual':>10} {'total KB':>9}"
        rows = [head, "-" * len(head)]
        shown = self.layers if max_rows is None else self.layers[:max_rows]
        peak = self.peak_layer if self.layers else None
        for layer in shown:
            mark = "  <- peak" if layer is peak else ""
            rows.append(f"{layer.name[-28:]:<28} {layer.kind:<9} {layer.input_elements:>10,} "
                        f"{layer.output_elements:>10,} {layer.residual_elements:>10,} {layer.kb:>9.1f}{mark}")
        if len(shown) < len(self.layers):
            rows.append(f"... {len(self.layers) - len(shown)} more layers")
        if peak is not None:
            rows.append(f"peak: {self.peak_bytes:,} bytes = {self.peak_kb:.1f} KB at {peak.name}")
        return "\n".join(rows)


def peak_memory(model: nn.Module, example_input: torch.Tensor | tuple) -> MemoryReport:
    """Run ``model`` once and apply the peak-activation rule (module docstring) to every conv/linear call.

    Element counts are per image, so any batch size gives the batch-1 result.
    """
    report = MemoryReport()
    live_inputs: list[torch.Tensor] = []  # inputs of the residual blocks currently running (outermost first)
    handles = []

    def push(module: nn.Module, inputs: tuple) -> None:
        live_inputs.append(inputs[0])

    def pop(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        live_inputs.pop()

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x = inputs[0]
            kept = sum(_per_sample(b) for b in live_inputs if b is not x)
            report.layers.append(LayerMemory(name, _kind(module), _per_sample(x), _per_sample(output), kept,
                                             tuple(x.shape), tuple(output.shape)))
        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_hook(record(name)))
        elif is_residual_block(module):
            handles.append(module.register_forward_pre_hook(push))
            handles.append(module.register_forward_hook(pop))
    forward_with_hooks(model, example_input, handles)
    return report


def peak_memory_kb(model: nn.Module, example_input: torch.Tensor | tuple) -> float:
    """Peak activation memory in KB (1 KB = 1024 bytes, int8 elements, batch 1)."""
    return peak_memory(model, example_input).peak_kb


def saved_activation_elements(model: nn.Module, example_input: torch.Tensor | tuple) -> int:
    """Elements stored for backward per sample: inputs of every conv/linear/BatchNorm/activation call."""
    total = 0
    handles = []

    def hook(module: nn.Module, inputs: tuple) -> None:
        nonlocal total
        total += _per_sample(inputs[0])

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, *ACTIVATIONS)):
            handles.append(module.register_forward_pre_hook(hook))
    forward_with_hooks(model, example_input, handles)
    return total


def training_activation_bytes(model: nn.Module, example_input: torch.Tensor | tuple, batch_size: int,
                              bytes_per_element: int = 4) -> int:
    """Activation bytes stored for backward at ``batch_size`` (float32 by default); see the module docstring."""
    return batch_size * bytes_per_element * saved_activation_elements(model, example_input)


def weight_bytes(model: nn.Module, bytes_per_element: int = 1) -> int:
    """Bytes of all parameters (int8 by default, to compare with the int8 peak activation)."""
    return bytes_per_element * sum(p.numel() for p in model.parameters())
