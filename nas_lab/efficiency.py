"""Analytic efficiency of any ``Arch`` without building it: MACs, parameters and peak activation memory.

Conventions (the same as :mod:`nas_lab.counting` and :mod:`nas_lab.memory`; :data:`COST_METRICS` names them):

- **MACs** count multiply-accumulates of the conv and linear layers only (BatchNorm, ReLU6, pooling and the
  residual adds are not counted), at batch 1; reported in **millions**. MACs, not FLOPs (1 MAC ~ 2 FLOPs).
- **params** = every trainable parameter of the extracted subnet: conv weights (no bias), BN weight and
  bias, classifier weight and bias. BN running statistics are buffers, not parameters.
- **peak activation memory**: batch 1, activations only, int8 so bytes = elements, KB = bytes / 1024. Each
  conv / linear layer needs its input plus its output; inside a residual block every layer whose input is
  not the block input also keeps the block input alive (until the add). Peak = max over layers.

Everything is computed from the layer list of a subnet (:func:`arch_layers`), and, for speed, from
per-slot tables: the cost of a block depends only on (resolution, width, slot, kernel, expand)
(:func:`block_choices` walks every such block), so a population is costed with a few numpy gathers over its
integer **gene matrix** (:func:`to_genes`): one row per arch, columns laid out by :class:`GeneLayout`
(resolution, width, depth x stages, kernel x slots, expand x slots), each the index of the choice in the
space's tuples. Inactive slots keep their genes (as OFA does) but cost nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from nas_lab.space import Arch, SearchSpace


# ---- layers -------------------------------------------------------------------------------------------
class Layer(NamedTuple):
    """One conv / linear layer (or residual add / pooling) of a subnet, with its shapes (batch 1, square maps).

    ``kind`` is 'stem', 'expand', 'depthwise', 'project', 'add', 'head' or 'pool+linear';
    ``h_in``/``h_out`` are spatial sizes; ``residual`` is the block input's elements that stay alive
    while this layer runs (0 outside residual blocks and for the block's first layer).
    """

    kind: str
    c_in: int
    c_out: int
    kernel: int
    stride: int
    h_in: int
    h_out: int
    residual: int = 0

    def macs(self) -> int:
        """Multiply-accumulates of this layer (0 for the residual add)."""
        if self.kind == "add":
            return 0
        if self.kind == "pool+linear":
            return self.c_in * self.c_out
        groups = self.c_in if self.kind == "depthwise" else 1
        return self.c_out * self.h_out * self.h_out * (self.c_in // groups) * self.kernel * self.kernel

    def params(self) -> int:
        """Trainable parameters: conv weight + BN (weight, bias); linear weight + bias."""
        if self.kind == "add":
            return 0
        if self.kind == "pool+linear":
            return self.c_in * self.c_out + self.c_out
        groups = self.c_in if self.kind == "depthwise" else 1
        return self.c_out * (self.c_in // groups) * self.kernel * self.kernel + 2 * self.c_out

    def live_bytes(self) -> int:
        """Live activation elements (= int8 bytes) while the layer runs: input + output (+ kept residual)."""
        if self.kind == "add":
            return 0  # not a conv/linear layer: not counted by the rule
        if self.kind == "pool+linear":
            return self.c_in + self.c_out  # the linear layer's (pooled) input and its output
        return self.c_in * self.h_in * self.h_in + self.c_out * self.h_out * self.h_out + self.residual


# ---- the cost metrics -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CostMetric:
    """A cost of a subnet: its key (constraints, CSV columns, JSON), unit, and how it follows from the layers.

    The raw value of a subnet is ``reduce`` ('sum' or 'max') of ``layer_value`` over its layers, in MACs,
    parameters, bytes or ms; the reported value is raw / ``scale``. ``layer_value`` is None for a measured
    metric (latency: the values come from a :class:`~nas_lab.latency.LatencyTable`).
    """

    name: str
    unit: str
    scale: float = 1
    layer_value: Callable[[Layer], float] | None = None
    reduce: str = "sum"

    @property
    def analytic(self) -> bool:
        return self.layer_value is not None

    def combine(self, values: Iterable[float]) -> float:
        """The subnet's raw value from its layers' values."""
        return sum(values) if self.reduce == "sum" else max(values)

    def report(self, raw: Any) -> Any:
        """A raw value (or array) in the reported unit (integers stay integers when the scale is 1)."""
        return raw / self.scale if self.scale != 1 else raw


# every cost metric, in the order results list them (search constraints, search results, JSON)
COST_METRICS: dict[str, CostMetric] = {m.name: m for m in (
    CostMetric("macs", "M MACs", 1e6, Layer.macs),
    CostMetric("peak_memory_kb", "KB", 1024, Layer.live_bytes, "max"),
    CostMetric("latency_ms", "ms"),
    CostMetric("params", "params", 1, Layer.params),
)}
METRICS = tuple(name for name, m in COST_METRICS.items() if m.analytic)  # the ones computed here


def _conv_out(h: int, kernel: int, stride: int) -> int:
    return (h + 2 * (kernel // 2) - kernel) // stride + 1


def fixed_layers(space: SearchSpace, resolution: int, width: float, h_last: int) -> list[Layer]:
    """Stem, head and pooling + classifier layers (present in every subnet)."""
    ch = space.channels(width)
    h1 = _conv_out(resolution, 3, 2)
    return [Layer("stem", space.in_channels, ch["stem"], 3, 2, resolution, h1),
            Layer("head", ch["stages"][-1], ch["head"], 1, 1, h_last, h_last),
            Layer("pool+linear", ch["head"], space.num_classes, 1, 1, h_last, 1)]


def block_layers(space: SearchSpace, resolution: int, width: float, stage: int, block: int,
                 kernel: int, expand: int) -> list[Layer]:
    """The layers of the MBConv block in slot (stage, block): expand, depthwise, project (+ add)."""
    ch = space.channels(width)
    c_in = ch["stages"][stage] if block > 0 else (ch["stages"][stage - 1] if stage > 0 else ch["stem"])
    c_out, stride = ch["stages"][stage], (space.stage_strides[stage] if block == 0 else 1)
    h = stage_input_size(space, resolution, stage, block)
    ho = _conv_out(h, kernel, stride)
    mid = c_in * expand
    keep = c_in * h * h if (stride == 1 and c_in == c_out) else 0
    layers = [Layer("expand", c_in, mid, 1, 1, h, h),
              Layer("depthwise", mid, mid, kernel, stride, h, ho, keep),
              Layer("project", mid, c_out, 1, 1, ho, ho, keep)]
    if keep:
        layers.append(Layer("add", c_out, c_out, 1, 1, ho, ho))
    return layers


def stage_input_size(space: SearchSpace, resolution: int, stage: int, block: int = 0) -> int:
    """Spatial size at the input of block ``block`` of ``stage`` (kernel size does not change it)."""
    h = _conv_out(resolution, 3, 2)
    for s in range(stage + (1 if block > 0 else 0)):
        h = _conv_out(h, 3, space.stage_strides[s])
    return h


def arch_layers(arch: Arch, space: SearchSpace | None = None) -> list[Layer]:
    """Every layer of ``arch`` in forward order (stem, blocks, head, pool+linear)."""
    space = space or SearchSpace()
    body = [layer for s, b, k, e in arch.blocks()
            for layer in block_layers(space, arch.resolution, arch.width, s, b, k, e)]
    h_last = stage_input_size(space, arch.resolution, space.num_stages - 1, 1)
    stem, head, pool = fixed_layers(space, arch.resolution, arch.width, h_last)
    return [stem, *body, head, pool]


# ---- every layer group the space can contain (the per-slot tables and the latency table walk these) --------
def fixed_choices(space: SearchSpace) -> Iterator[tuple[tuple[int, int], list[Layer]]]:
    """``((resolution index, width index), fixed layers)`` for every (resolution, width) of the space."""
    for ri, r in enumerate(space.resolutions):
        h_last = stage_input_size(space, r, space.num_stages - 1, 1)
        for wi, w in enumerate(space.widths):
            yield (ri, wi), fixed_layers(space, r, w, h_last)


def block_choices(space: SearchSpace) -> Iterator[tuple[tuple[int, int, int, int, int], list[Layer]]]:
    """``((resolution, width, slot, kernel, expand) indices, block layers)`` for every block any subnet can hold."""
    for ri, r in enumerate(space.resolutions):
        for wi, w in enumerate(space.widths):
            for slot in range(space.num_slots):
                stage, block = divmod(slot, space.max_depth)
                for ki, k in enumerate(space.kernels):
                    for ei, e in enumerate(space.expands):
                        yield (ri, wi, slot, ki, ei), block_layers(space, r, w, stage, block, k, e)


# ---- costs of one arch -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Costs:
    """Analytic costs of one arch."""

    macs: float            # millions of multiply-accumulates (conv + linear)
    params: int
    peak_memory_kb: float  # int8 activations, KB = bytes / 1024

    def as_dict(self) -> dict[str, float]:
        return {"macs": self.macs, "params": self.params, "peak_memory_kb": self.peak_memory_kb}


def costs(arch: Arch, space: SearchSpace | None = None) -> Costs:
    """MACs (M), params and peak memory (KB) of one arch, layer by layer (the reference implementation)."""
    layers = arch_layers(arch, space)
    return Costs(**{name: m.report(m.combine(m.layer_value(layer) for layer in layers))
                    for name, m in COST_METRICS.items() if m.layer_value is not None})


# ---- genes: a population as an integer matrix -----------------------------------------------------------
@dataclass(frozen=True)
class GeneLayout:
    """The columns of a gene row: resolution, width, a depth per stage, a kernel per slot, an expand per slot.

    ``resolution`` and ``width`` are column indices; ``depths``, ``kernels`` and ``expands`` are slices
    (``genes[:, layout.kernels]`` is the (N, slots) kernel-choice matrix).
    """

    num_stages: int
    num_slots: int
    resolution: int = 0
    width: int = 1

    @classmethod
    def of(cls, space: SearchSpace) -> "GeneLayout":
        return cls(space.num_stages, space.num_slots)

    @property
    def depths(self) -> slice:
        return slice(2, 2 + self.num_stages)

    @property
    def kernels(self) -> slice:
        return slice(self.depths.stop, self.depths.stop + self.num_slots)

    @property
    def expands(self) -> slice:
        return slice(self.kernels.stop, self.kernels.stop + self.num_slots)

    @property
    def size(self) -> int:
        """Number of gene columns."""
        return self.expands.stop


def gene_sizes(space: SearchSpace) -> np.ndarray:
    """Number of choices per gene column."""
    return _gene_sizes(space).copy()


@lru_cache(maxsize=8)
def _gene_sizes(space: SearchSpace) -> np.ndarray:
    layout = GeneLayout.of(space)
    sizes = np.empty(layout.size, dtype=np.int64)
    sizes[layout.resolution], sizes[layout.width] = len(space.resolutions), len(space.widths)
    sizes[layout.depths], sizes[layout.kernels], sizes[layout.expands] = (
        len(space.depths), len(space.kernels), len(space.expands))
    return sizes


def _index(choices: Sequence[float], value: float) -> int:
    for i, c in enumerate(choices):
        if abs(float(c) - float(value)) < 1e-9:
            return i
    raise ValueError(f"{value} is not one of {list(choices)}")


def to_genes(archs: Iterable[Arch], space: SearchSpace | None = None) -> np.ndarray:
    """(N, genes) int64 matrix of choice indices (columns as :class:`GeneLayout` says)."""
    space = space or SearchSpace()
    layout, archs = GeneLayout.of(space), list(archs)
    genes = np.empty((len(archs), layout.size), dtype=np.int64)
    for row, a in zip(genes, archs):
        row[layout.resolution] = _index(space.resolutions, a.resolution)
        row[layout.width] = _index(space.widths, a.width)
        row[layout.depths] = [_index(space.depths, d) for d in a.depths]
        row[layout.kernels] = [_index(space.kernels, k) for k in a.kernels]
        row[layout.expands] = [_index(space.expands, e) for e in a.expands]
    return genes


def from_genes(genes: np.ndarray, space: SearchSpace | None = None) -> list[Arch]:
    """Inverse of :func:`to_genes`."""
    space = space or SearchSpace()
    layout = GeneLayout.of(space)
    return [Arch(space.resolutions[row[layout.resolution]], space.widths[row[layout.width]],
                 tuple(space.depths[i] for i in row[layout.depths]),
                 tuple(space.kernels[i] for i in row[layout.kernels]),
                 tuple(space.expands[i] for i in row[layout.expands]), space.max_depth)
            for row in np.asarray(genes).tolist()]


def active_mask(genes: np.ndarray, space: SearchSpace) -> np.ndarray:
    """(N, slots) bool: is the block in each slot active (block index < its stage's depth)?"""
    depths = np.asarray(space.depths)[genes[:, GeneLayout.of(space).depths]]        # (N, stages)
    return (np.arange(space.max_depth)[None, None, :] < depths[:, :, None]).reshape(len(genes), space.num_slots)


def canonical(genes: np.ndarray, space: SearchSpace) -> np.ndarray:
    """Genes with inactive slots set to 0, so equal archs have equal rows (for caching and dedup)."""
    g = np.array(genes, copy=True)
    layout = GeneLayout.of(space)
    inactive = ~active_mask(g, space)
    g[:, layout.kernels][inactive] = 0  # basic slices are views: this writes into g
    g[:, layout.expands][inactive] = 0
    return g


# ---- per-slot tables -------------------------------------------------------------------------------------
class Lookup(NamedTuple):
    """Where each row of a gene matrix reads the slot tables (computed once, shared by every metric)."""

    fixed: np.ndarray   # (N,) flat index into a (R, W) table
    block: np.ndarray   # (N, slots) flat index into a (R, W, slots, K, E) table
    active: np.ndarray  # (N, slots) bool


def lookup(genes: np.ndarray, space: SearchSpace) -> Lookup:
    """The table indices of a gene matrix's rows."""
    genes = np.asarray(genes, dtype=np.int64)
    layout = GeneLayout.of(space)
    W, n, K, E = len(space.widths), space.num_slots, len(space.kernels), len(space.expands)
    fixed = genes[:, layout.resolution] * W + genes[:, layout.width]
    block = ((fixed[:, None] * n + np.arange(n)) * K + genes[:, layout.kernels]) * E + genes[:, layout.expands]
    return Lookup(fixed, block, active_mask(genes, space))


@dataclass(frozen=True)
class SlotTable:
    """One metric tabulated per (res, width) for the fixed layers and per (res, width, slot, k, e) per block.

    ``reduce`` is 'sum' (MACs, params, latency) or 'max' (peak memory). :meth:`evaluate` costs a gene matrix.
    """

    space: SearchSpace
    fixed: np.ndarray   # (R, W)
    block: np.ndarray   # (R, W, slots, K, E)
    reduce: str = "sum"

    @classmethod
    def build(cls, space: SearchSpace, layer_value: Callable[[Layer], float], reduce: str = "sum",
              dtype: type = np.int64) -> "SlotTable":
        """Tabulate ``layer_value`` (summed or maxed over a block's layers) for every reachable block."""
        agg = sum if reduce == "sum" else max
        R, W, K, E = (len(space.resolutions), len(space.widths), len(space.kernels), len(space.expands))
        fixed = np.zeros((R, W), dtype=dtype)
        block = np.zeros((R, W, space.num_slots, K, E), dtype=dtype)
        for index, layers in fixed_choices(space):
            fixed[index] = agg(map(layer_value, layers))
        for index, layers in block_choices(space):
            block[index] = agg(map(layer_value, layers))
        return cls(space, fixed, block, reduce)

    def evaluate(self, genes: np.ndarray | Lookup) -> np.ndarray:
        """The metric of every row of a gene matrix (or of its precomputed :class:`Lookup`), (N,)."""
        lk = genes if isinstance(genes, Lookup) else lookup(genes, self.space)
        per = np.where(lk.active, self.block.reshape(-1)[lk.block], 0)                   # (N, slots)
        if self.reduce == "sum":
            return self.fixed.reshape(-1)[lk.fixed] + per.sum(axis=1)
        return np.maximum(self.fixed.reshape(-1)[lk.fixed], per.max(axis=1, initial=0))

    def minimum(self) -> float:
        """Exact smallest value over the whole space (per stage, the cheapest depth and block choices)."""
        sp, m = self.space, self.space.max_depth
        best_blocks = self.block.min(axis=(3, 4)).reshape(*self.fixed.shape, sp.num_stages, m)
        combine = np.add if self.reduce == "sum" else np.maximum
        total = self.fixed.astype(np.float64)
        for s in range(sp.num_stages):
            options = []
            for d in sp.depths:
                acc = best_blocks[:, :, s, 0].astype(np.float64)
                for b in range(1, d):
                    acc = combine(acc, best_blocks[:, :, s, b])
                options.append(acc)
            stage_best = np.min(options, axis=0)
            total = combine(total, stage_best)
        return float(total.min())


@lru_cache(maxsize=8)
def tables(space: SearchSpace) -> dict[str, SlotTable]:
    """The analytic metrics' tables of a space, by metric name (built once, in a few ms), in raw units."""
    return {name: SlotTable.build(space, m.layer_value, m.reduce)
            for name, m in COST_METRICS.items() if m.layer_value is not None}


def costs_genes(genes: np.ndarray, space: SearchSpace | None = None) -> dict[str, np.ndarray]:
    """Vectorised :func:`costs` for a gene matrix: {'macs' (M), 'peak_memory_kb', 'params'} arrays of (N,)."""
    space = space or SearchSpace()
    t, lk = tables(space), lookup(genes, space)
    return {name: COST_METRICS[name].report(table.evaluate(lk)) for name, table in t.items()}


def costs_many(archs: Sequence[Arch], space: SearchSpace | None = None) -> dict[str, np.ndarray]:
    """Vectorised :func:`costs` for a list of archs."""
    space = space or SearchSpace()
    return costs_genes(to_genes(archs, space), space)


def minimum(metric: str, space: SearchSpace | None = None) -> float:
    """Smallest reachable value of an analytic metric over the space (exact), in the reported units."""
    if metric not in METRICS:
        raise KeyError(f"unknown metric {metric!r}; analytic metrics: {list(METRICS)}")
    return COST_METRICS[metric].report(tables(space or SearchSpace())[metric].minimum())
