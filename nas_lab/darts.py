"""A tiny, honest DARTS: a softmax-relaxed cell searched by first-order bilevel updates in about a minute.

Search network (Fashion-MNIST resized to 14x14): a 3x3 conv stem (C channels), a cell, a fixed stride-2 conv
(C -> 2C, 7x7), the same cell again (the two share their architecture, as DARTS's normal cells do), global
average pooling and a linear classifier. A cell is a small DAG: node 0 is its input, each intermediate node
``i`` (1..nodes) sums one **mixed op** per earlier node, and the cell's output is the sum of its intermediate
nodes: 3 nodes give 6 edges. A mixed op is the softmax-weighted sum of every candidate op,
``sum_o softmax(alpha_edge)_o * o(x)`` (:func:`mixed_output`), over :data:`OPS`: ``zero``, ``skip``, 3x3 max and
average pooling, a 3x3 conv and a depthwise-separable 3x3 conv (ReLU -> conv -> BN without affine
parameters, as in DARTS's search phase).

Bilevel optimisation, first order (:func:`darts_step`): one Adam step on the architecture logits ``alpha``
(edges, ops) on a *minival* batch with the weights fixed, then one SGD step on the weights on a *training*
batch. (Second-order DARTS would differentiate through one virtual weight step; the paper's first-order
variant is close in accuracy and half the cost.) ``alpha`` is recorded after every step, and the discrete
cell is derived as DARTS does (:func:`derive`): per node, the ``k`` = 2 incoming edges whose strongest
non-``zero`` op weighs most, each with that op.

The step sizes are scaled for a search of a few hundred steps instead of 50 epochs: the alpha learning rate is
1e-2 (DARTS: 3e-4), the weights' 0.05 with cosine decay (DARTS: 0.025), channels 8 (DARTS: 16), batch 32.

What to look for (:func:`parameter_free_share`): the literature reports that DARTS drifts towards
parameter-free ops (skip, pooling; all-skip cells on NAS-Bench-201). Measured here (seed 0, the defaults,
``benchmarks/bench_strategies.py``), it does **not** happen at this scale: over 1,000 steps (about 3 passes over
the 10k training images) the weight on parameter-free ops fell from 0.667 to 0.49; ``conv_3x3`` gained most
(0.167 -> 0.31), ``skip`` and ``avg_pool_3x3`` lost most (-> 0.09 and 0.08), ``zero`` rose to 0.21 and
came back to 0.18, and the derived cell was all convolutions. At the default 300 steps (about 30 CPU seconds),
seeds 0-3 end at a parameter-free share of 0.57 / 0.52 / 0.64 / 0.61, ``conv_3x3`` is the heaviest op in all
four, and the derived cells hold 0-1 pooling edges and never a skip. The published collapse comes after tens of
epochs, once the weights fit the training set; a minute's search is in the early phase, where the tiny
network still needs capacity. Say so when students look for the drift.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas_lab.minitrain import train_batches

OPS = ("zero", "skip", "max_pool_3x3", "avg_pool_3x3", "conv_3x3", "sep_conv_3x3")
PARAMETER_FREE = ("zero", "skip", "max_pool_3x3", "avg_pool_3x3")
RESOLUTION = 14


# ---- candidate ops ---------------------------------------------------------------------------------------
class Zero(nn.Module):
    """The 'no edge' op: zeros of the input's shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def make_op(name: str, channels: int) -> nn.Module:
    """One candidate op (stride 1, ``channels`` in and out, same spatial size)."""
    if name == "zero":
        return Zero()
    if name == "skip":
        return nn.Identity()
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, 1, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    if name == "conv_3x3":
        return nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
                             nn.BatchNorm2d(channels, affine=False))
    if name == "sep_conv_3x3":
        return nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False),
                             nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels, affine=False))
    raise ValueError(f"unknown op {name!r}; choose from {OPS}")


def mixed_output(x: torch.Tensor, ops: Sequence[nn.Module], weights: torch.Tensor) -> torch.Tensor:
    """The mixed op: ``sum_i weights[i] * ops[i](x)``; ``x`` (N, C, H, W), ``weights`` (ops,) -> (N, C, H, W)."""
    return sum(w * op(x) for w, op in zip(weights, ops))


MixedFn = Callable[[torch.Tensor, Sequence[nn.Module], torch.Tensor], torch.Tensor]


class MixedOp(nn.Module):
    """Every candidate op on one edge, combined by ``mixed_fn`` (:func:`mixed_output`) with the given weights."""

    def __init__(self, channels: int, ops: Sequence[str] = OPS, mixed_fn: MixedFn = mixed_output) -> None:
        super().__init__()
        self.ops = nn.ModuleList(make_op(name, channels) for name in ops)
        self.mixed_fn = mixed_fn

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.mixed_fn(x, self.ops, weights)


def edges(nodes: int) -> list[tuple[int, int]]:
    """(source, destination) of every edge of a cell, in the order of alpha's rows: (0,1), (0,2), (1,2), ..."""
    return [(j, i) for i in range(1, nodes + 1) for j in range(i)]


# ---- the search network -----------------------------------------------------------------------------------
class Cell(nn.Module):
    """A DAG of mixed ops: node i = sum over j < i of mixed_op(j -> i)(node j); output = sum of nodes 1..n."""

    def __init__(self, channels: int, nodes: int = 3, ops: Sequence[str] = OPS,
                 mixed_fn: MixedFn = mixed_output) -> None:
        super().__init__()
        self.nodes = nodes
        self.edges = nn.ModuleList(MixedOp(channels, ops, mixed_fn) for _ in edges(nodes))

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # x (N, C, H, W), weights (edges, ops) -> (N, C, H, W)
        states, e = [x], 0
        for i in range(1, self.nodes + 1):
            node = 0
            for j in range(i):
                node = node + self.edges[e](states[j], weights[e])
                e += 1
            states.append(node)
        return sum(states[1:])


class SearchNetwork(nn.Module):
    """Stem -> cell -> stride-2 conv -> cell -> pool -> linear; ``alpha`` (edges, ops) shared by both cells."""

    def __init__(self, channels: int = 8, nodes: int = 3, ops: Sequence[str] = OPS, num_classes: int = 10,
                 mixed_fn: MixedFn = mixed_output) -> None:
        super().__init__()
        self.op_names = tuple(ops)
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))
        self.cell1 = Cell(channels, nodes, ops, mixed_fn)
        self.reduce = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, 2 * channels, 3, 2, 1, bias=False),
                                    nn.BatchNorm2d(2 * channels))
        self.cell2 = Cell(2 * channels, nodes, ops, mixed_fn)
        self.classifier = nn.Linear(2 * channels, num_classes)
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(edges(nodes)), len(ops)))

    def weights(self) -> list[nn.Parameter]:
        """Every parameter except ``alpha`` (what the weight optimiser updates)."""
        return [p for name, p in self.named_parameters() if name != "alpha"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.alpha, dim=-1)                             # (edges, ops)
        h = self.cell1(self.stem(x), w)                                   # (N, C, 14, 14)
        h = self.cell2(self.reduce(h), w)                                 # (N, 2C, 7, 7)
        return self.classifier(F.adaptive_avg_pool2d(h, 1).flatten(1))   # (N, classes)


# ---- bilevel step ----------------------------------------------------------------------------------------------
def darts_step(model: SearchNetwork, w_opt: torch.optim.Optimizer, a_opt: torch.optim.Optimizer,
               train_batch: tuple[torch.Tensor, torch.Tensor],
               val_batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    """First-order DARTS: one ``a_opt`` step on the validation loss (weights fixed), then one ``w_opt`` step on the
    training loss. Returns (training loss, validation loss)."""
    x, y = val_batch
    a_opt.zero_grad()
    val_loss = F.cross_entropy(model(x), y)
    val_loss.backward()
    a_opt.step()
    x, y = train_batch
    w_opt.zero_grad()
    train_loss = F.cross_entropy(model(x), y)
    train_loss.backward()
    w_opt.step()
    return float(train_loss.detach()), float(val_loss.detach())


StepFn = Callable[[SearchNetwork, torch.optim.Optimizer, torch.optim.Optimizer, tuple[torch.Tensor, torch.Tensor],
                   tuple[torch.Tensor, torch.Tensor]], tuple[float, float]]


# ---- the discrete cell -------------------------------------------------------------------------------------------
Genotype = tuple[tuple[int, int, str], ...]  # (source node, destination node, op) per kept edge


def derive(alpha: torch.Tensor, nodes: int = 3, ops: Sequence[str] = OPS, k: int = 2) -> Genotype:
    """DARTS's discretisation: for every node keep the ``k`` incoming edges whose strongest op other than
    ``zero`` weighs most (all of them if fewer), each with that op."""
    w = torch.softmax(alpha.detach(), dim=-1)                                    # (edges, ops)
    usable = torch.tensor([name != "zero" for name in ops])
    best_w, best_op = w.masked_fill(~usable, -1.0).max(dim=-1)                   # (edges,)
    out, all_edges = [], edges(nodes)
    for i in range(1, nodes + 1):
        incoming = [e for e, (_, dst) in enumerate(all_edges) if dst == i]
        kept = sorted(incoming, key=lambda e: -float(best_w[e]))[:k]
        out.extend((all_edges[e][0], i, ops[int(best_op[e])]) for e in sorted(kept))
    return tuple(out)


def parameter_free_share(weights: np.ndarray | torch.Tensor, ops: Sequence[str] = OPS) -> float:
    """Mean over edges of the softmax weight on parameter-free ops (zero, skip, pooling); uniform = 4/6."""
    w = np.asarray(weights.detach() if isinstance(weights, torch.Tensor) else weights)
    free = np.array([name in PARAMETER_FREE for name in ops])
    return float(w[..., free].sum(-1).mean())


class DiscreteCell(nn.Module):
    """The derived cell: node i = sum of its kept edges' ops; output = sum of nodes 1..n."""

    def __init__(self, genotype: Genotype, channels: int, nodes: int = 3) -> None:
        super().__init__()
        self.genotype, self.nodes = genotype, nodes
        self.ops = nn.ModuleList(make_op(op, channels) for _, _, op in genotype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        for i in range(1, self.nodes + 1):
            states.append(sum(op(states[src]) for (src, dst, _), op in zip(self.genotype, self.ops) if dst == i))
        return sum(states[1:])


class DiscreteNetwork(nn.Module):
    """The search network's skeleton with the derived cell, to train from scratch (e.g. ``minitrain.fit``)."""

    def __init__(self, genotype: Genotype, channels: int = 8, nodes: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        check_genotype(genotype, nodes)
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))
        self.cell1 = DiscreteCell(genotype, channels, nodes)
        self.reduce = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, 2 * channels, 3, 2, 1, bias=False),
                                    nn.BatchNorm2d(2 * channels))
        self.cell2 = DiscreteCell(genotype, 2 * channels, nodes)
        self.classifier = nn.Linear(2 * channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.cell2(self.reduce(self.cell1(self.stem(x))))
        return self.classifier(F.adaptive_avg_pool2d(h, 1).flatten(1))


def check_genotype(genotype: Genotype, nodes: int = 3, ops: Sequence[str] = OPS) -> Genotype:
    """Raise ``ValueError`` unless every edge goes forward between existing nodes with a known op and every
    intermediate node has an input."""
    for src, dst, op in genotype:
        if not (0 <= src < dst <= nodes) or op not in ops:
            raise ValueError(f"invalid edge ({src}, {dst}, {op!r}): need 0 <= src < dst <= {nodes}, op in {ops}")
    missing = set(range(1, nodes + 1)) - {dst for _, dst, _ in genotype}
    if missing:
        raise ValueError(f"nodes {sorted(missing)} have no input edge")
    return genotype


# ---- the search -----------------------------------------------------------------------------------------------
@dataclass
class DartsResult:
    """The derived cell, the final alphas and their history (softmax weights after every step)."""

    genotype: Genotype
    alpha: torch.Tensor                      # (edges, ops) logits
    alpha_history: np.ndarray                # (steps + 1, edges, ops) softmax weights
    seconds: float                           # wall clock
    cpu_seconds: float                       # CPU time of this process (= wall on an idle core, one thread)
    history: list[dict[str, float]] = field(default_factory=list)  # per step: losses, parameter-free share
    ops: tuple[str, ...] = OPS


def darts_search(steps: int = 300, channels: int = 8, nodes: int = 3, batch_size: int = 32,
                 train_images: int = 10_000, val_images: int = 2_000, w_lr: float = 0.05,
                 a_lr: float = 1e-2, seed: int = 0, ops: Sequence[str] = OPS, mixed_fn: MixedFn = mixed_output,
                 step_fn: StepFn = darts_step) -> DartsResult:
    """Search a cell with :func:`darts_step` for ``steps`` steps at 14x14 (weights on the first
    ``train_images`` training images, alphas on the first ``val_images`` minival images); seeded.
    ``mixed_fn`` and ``step_fn`` replace :func:`mixed_output` and :func:`darts_step` (the lab's exercises)."""
    if steps < 1 or nodes < 1 or channels < 1:
        raise ValueError(f"need steps, nodes and channels >= 1; got {steps}, {nodes}, {channels}")
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.random.fork_rng():  # seeded initialisation; the caller's random stream is left as it was
        torch.manual_seed(seed)
        model = SearchNetwork(channels, nodes, ops, mixed_fn=mixed_fn)
    model = model.to(memory_format=torch.channels_last)  # pooling and convs are 1.5-3x faster on CPU
    w_opt = torch.optim.SGD(model.weights(), lr=w_lr, momentum=0.9, weight_decay=3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, steps)
    a_opt = torch.optim.Adam([model.alpha], lr=a_lr, betas=(0.5, 0.999), weight_decay=1e-3)
    train = train_batches(batch_size, RESOLUTION, train_images, seed)
    val = _minival_batches(batch_size, val_images, seed)
    alpha_hist, history = [_weights(model)], []
    model.train()
    for step in range(1, steps + 1):
        train_loss, val_loss = step_fn(model, w_opt, a_opt, _channels_last(next(train)), _channels_last(next(val)))
        sched.step()
        alpha_hist.append(_weights(model))
        history.append({"step": step, "train_loss": train_loss, "val_loss": val_loss,
                        "parameter_free": parameter_free_share(alpha_hist[-1], ops)})
    return DartsResult(derive(model.alpha, nodes, ops), model.alpha.detach().clone(), np.stack(alpha_hist),
                       time.perf_counter() - start, time.process_time() - cpu_start, history, tuple(ops))


def _minival_batches(batch_size: int, images: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    return train_batches(batch_size, RESOLUTION, images, seed + 1, split="minival")


def _channels_last(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch[0].contiguous(memory_format=torch.channels_last), batch[1]


def _weights(model: SearchNetwork) -> np.ndarray:
    return torch.softmax(model.alpha.detach(), dim=-1).numpy().copy()
