"""Petridish-style forward search: grow a small net by adding the operations a gradient asks for.

A parent :class:`PetriNet` (a :class:`~nas_lab.net2net.ConvNet` whose nodes may also receive grown
branches ``gate * op(node_src)``) is scored against a pool of candidate operations, each a
:class:`Branch` from a node ``src`` to a later node ``dst`` (at most two layers apart, total stride 1 or 2):

1. **Attach without changing anything.** Each candidate is attached as
   ``node_dst += stop_forward(gate * op(stop_gradient(node_src)))``. :class:`StopForward` outputs zeros
   (so the parent's forward pass, and hence its loss and all its gradients, are exactly unchanged) but
   passes the upstream gradient back unchanged; :class:`StopGradient` is the identity forward and blocks
   the gradient, so nothing flows from the candidate into the parent's earlier layers.
2. **Score from a backward pass, with an L1 penalty on the gates.** Gates start at 0. The derivative of
   the loss with respect to a gate is ``E[<dL/d node_dst, op(node_src)>]`` whatever the gate's value: how
   well the candidate's output lines up with the direction that lowers the loss (cascade-correlation,
   gradient boosting). With the penalty ``l1 * |gate|`` a gate at 0 stays at 0 unless ``|dL/dgate| > l1``;
   :func:`score_candidates` takes proximal (soft-threshold) steps, so after one step exactly those
   candidates have a non-zero gate. More steps make a candidate beat the penalty batch after batch (noise
   averages out) and turn its filters towards the loss-lowering direction; the parent stays frozen (eval
   mode, never stepped). Ops end in BN (except skip), so outputs have unit scale and compare fairly.
3. **Add the winners for real** (the largest gate per position, then the ``max_add`` best positions):
   the stop layers go, the branch keeps its small scored gate, so the function changes little; then the
   whole net trains for a few steps.

:func:`grow` repeats this for a few rounds and records every model's (MACs, minival accuracy) and the
Pareto front; ``strategy="random"`` adds random candidates (gate 0) at the same training budget.
:func:`compare_growth` runs both over several seeds and reports means and spreads. Only parallel branches
are grown (no new nodes), MACs count conv/linear layers only (max-pooling is free, see
:mod:`nas_lab.counting`), and the scoring passes are not part of the training budget: their images are
reported apart.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas_lab import evaluate, minitrain, search
from nas_lab.counting import count_model
from nas_lab.net2net import ConvNet, Seed, make_conv

OPS = ("conv3x3", "conv5x5", "sep3x3", "pool1x1", "skip")
STRATEGIES = ("petridish", "random", "none")


# ---- stop layers ------------------------------------------------------------------------------------------
def _layer(name: str, doc: str, forward, backward) -> type[torch.autograd.Function]:
    """A parameter-free autograd layer from its forward and backward rules (``ctx`` unused)."""
    return type(name, (torch.autograd.Function,), {"__doc__": doc, "forward": staticmethod(forward),
                                                   "backward": staticmethod(backward)})


#: Forward: zeros of the input's shape (the candidate changes nothing). Backward: the upstream gradient, unchanged.
StopForward = _layer("StopForward", "Forward: zeros of the input's shape. Backward: the upstream gradient.",
                     lambda ctx, x: torch.zeros_like(x), lambda ctx, grad: grad)
#: Forward: the input. Backward: no gradient (``x.detach()`` spelt out as a layer: the parent is not trained).
StopGradient = _layer("StopGradient", "Forward: the input. Backward: no gradient (as x.detach()).",
                      lambda ctx, x: x.view_as(x), lambda ctx, grad: torch.zeros_like(grad))


# ---- candidate operations and branches --------------------------------------------------------------------
def make_op(name: str, c_in: int, c_out: int, stride: int, gen: torch.Generator) -> nn.Module | None:
    """The candidate operation ``name`` from c_in to c_out channels at ``stride``; None if it cannot fit."""
    if name == "skip":
        return nn.Identity() if c_in == c_out and stride == 1 else None
    if name in ("conv3x3", "conv5x5"):
        k = 3 if name == "conv3x3" else 5
        layers = [make_conv(c_in, c_out, k, stride, gen=gen)]
    elif name == "sep3x3":  # depthwise 3x3 then pointwise 1x1
        layers = [make_conv(c_in, c_in, 3, stride, groups=c_in, gen=gen), make_conv(c_in, c_out, 1, gen=gen)]
    elif name == "pool1x1":
        layers = [nn.MaxPool2d(3, stride, padding=1), make_conv(c_in, c_out, 1, gen=gen)]
    else:
        raise ValueError(f"unknown op {name!r}; choose from {OPS}")
    return nn.Sequential(*layers, nn.BatchNorm2d(c_out))


class Branch(nn.Module):
    """``gate * op(x)`` added to node ``dst`` from node ``src``; a candidate until it is grown for real."""

    def __init__(self, src: int, dst: int, op_name: str, op: nn.Module, gate: float = 0.0) -> None:
        super().__init__()
        self.src, self.dst, self.op_name, self.op = src, dst, op_name, op
        self.gate = nn.Parameter(torch.tensor(float(gate)))

    @property
    def name(self) -> str:
        return f"{self.op_name}:{self.src}->{self.dst}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_src, H, W) -> (N, C_dst, H/s, W/s)
        return self.gate * self.op(x)


class Probe(nn.Module):
    """A branch seen through the stop layers: contributes exactly zero, yet its gate gets a gradient."""

    def __init__(self, branch: Branch, stop_forward: Callable = StopForward.apply,
                 stop_gradient: Callable = StopGradient.apply) -> None:
        super().__init__()
        self.branch, self.src, self.dst = branch, branch.src, branch.dst
        self.stop_forward, self.stop_gradient = stop_forward, stop_gradient  # replaceable (Lab 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_src, H, W) -> zeros (N, C_dst, H/s, W/s)
        gate = self.branch.gate
        unit = 1.0 + gate - gate.detach()  # value 1, d(unit)/d(gate) = 1: see score_candidates
        return self.stop_forward(unit * self.branch.op(self.stop_gradient(x)))


class PetriNet(ConvNet):
    """A :class:`ConvNet` whose node ``j`` is ``layer(node_{j-1}) + sum of the branches into j``."""

    def __init__(self, widths: Sequence[int], strides: Sequence[int] | None = None, kernel: int = 3,
                 in_channels: int = 1, num_classes: int = 10, seed: Seed = 0) -> None:
        super().__init__(widths, strides, kernel, in_channels, num_classes, seed)
        self.branches = nn.ModuleList()

    def nodes(self, x: torch.Tensor, probes: Sequence[nn.Module] = ()) -> list[torch.Tensor]:
        out = [x]
        for j, layer in enumerate(self.layers, 1):
            h = layer(out[-1])  # (N, C_j, H_j, W_j)
            for extra in (*self.branches, *probes):
                if extra.dst == j:
                    h = h + extra(out[extra.src])
            out.append(h)
        return out

    def forward(self, x: torch.Tensor, probes: Sequence[nn.Module] = ()) -> torch.Tensor:
        return self.head(self.nodes(x, probes)[-1].mean((2, 3)))  # (N, classes)

    def describe(self) -> str:
        grown = ", ".join(b.name for b in self.branches) or "none"
        return f"spec {self.spec}; branches: {grown}"


def path_stride(model: ConvNet, src: int, dst: int) -> int:
    """The downsampling factor from node ``src`` to node ``dst``."""
    return math.prod(layer.conv.stride[0] for layer in model.layers[src:dst])


def fresh_copy(model: PetriNet, seed: Seed = 0, gate: float = 1.0) -> PetriNet:
    """The same architecture (layers and grown branches) with fresh weights: the from-scratch baseline."""
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    new = PetriNet([c for c, _ in model.spec], [s for _, s in model.spec], model.layers[0].conv.kernel_size[0],
                   model.in_channels, model.head.out_features, seed=gen)
    for b in model.branches:
        op = make_op(b.op_name, model.node_channels(b.src), model.node_channels(b.dst),
                     path_stride(model, b.src, b.dst), gen)
        new.branches.append(Branch(b.src, b.dst, b.op_name, op, gate))
    return new


def candidates(model: PetriNet, gen: torch.Generator, ops: Sequence[str] = OPS, span: int = 2) -> list[Branch]:
    """Fresh branches (gate 0) for every op, at every (src, dst) up to ``span`` layers apart with total
    stride 1 or 2, except those already grown."""
    grown = {b.name for b in model.branches}
    out = []
    for dst in range(1, len(model.layers) + 1):
        for src in range(max(0, dst - span), dst):
            stride = path_stride(model, src, dst)
            if stride > 2:
                continue
            for name in ops:
                op = make_op(name, model.node_channels(src), model.node_channels(dst), stride, gen)
                if op is not None and f"{name}:{src}->{dst}" not in grown:
                    out.append(Branch(src, dst, name, op))
    return out


# ---- scoring ----------------------------------------------------------------------------------------------
@dataclass
class Scores:
    """Gate gradients at zero (first batch), gates after the proximal steps, and the number of images."""

    gate_grads: torch.Tensor  # (K,)
    gates: torch.Tensor  # (K,)
    images: int


def soft_threshold(z: torch.Tensor, t: float) -> torch.Tensor:
    """The proximal map of ``t * |.|``: shrink towards 0 by ``t``, and to exactly 0 inside ``[-t, t]``."""
    return torch.sign(z) * torch.clamp(z.abs() - t, min=0.0)


def score_candidates(model: PetriNet, branches: Sequence[Branch], batches: Iterable, l1: float = 0.01,
                     steps: int = 1, lr: float = 0.1, op_lr: float = 0.1,
                     probe: Callable[[Branch], nn.Module] = Probe) -> Scores:
    """Score candidate branches through the stop layers: proximal gradient steps on ``CE + l1 * sum|gate|``.

    The gradient of the loss with respect to a gate is ``<dL/d node_dst, op(node_src)>`` whatever the
    gate's value (the loss is linear in it), and the stop-forward discards the branch's output anyway, so
    during scoring the branch is scaled by a unit-valued handle that routes this gradient to the gate while
    the op's filters see ``dL/d node_dst`` at full strength (not multiplied by a gate that starts at 0).
    Each step: soft-threshold the gates (a gate at 0 stays there unless ``|dL/dgate| > l1``), and take an
    SGD step on the ops' filters (BN affine parameters stay at (1, 0), so op outputs keep unit scale: the
    filters can only turn, not grow). The parent is frozen (eval mode, never stepped).
    """
    was_training = model.training
    model.eval()
    probes = [probe(b.train()) for b in branches]
    gates = [b.gate for b in branches]
    filters = [p for b in branches for p in b.op.parameters() if p.dim() > 1]
    first, images = None, 0
    for _, (x, y) in zip(range(steps), batches):
        loss = F.cross_entropy(model(x, probes), y)
        grads = torch.autograd.grad(loss, gates + filters)
        with torch.no_grad():
            g = torch.stack(grads[:len(gates)])  # (K,) gate gradients
            first = g.clone() if first is None else first
            for gate, grad in zip(gates, g):
                gate.copy_(soft_threshold(gate - lr * grad, lr * l1))
            for w, grad in zip(filters, grads[len(gates):]):
                w -= op_lr * grad
        images += len(y)
    model.train(was_training)
    return Scores(first, torch.stack([b.gate.detach().abs() for b in branches]), images)


def choose(branches: Sequence[Branch], strength: torch.Tensor, max_add: int) -> list[int]:
    """Indices of the strongest non-zero candidate per (src, dst) position, then the ``max_add`` best."""
    best: dict[tuple[int, int], int] = {}
    for i, b in enumerate(branches):
        key = (b.src, b.dst)
        if strength[i] > 0 and (key not in best or strength[i] > strength[best[key]]):
            best[key] = i
    ranked = sorted(best.values(), key=lambda i: -float(strength[i]))
    return ranked[:max_add]


# ---- growth -----------------------------------------------------------------------------------------------
@dataclass
class GrowthPoint:
    """One trained model of a growth run."""

    round: int
    macs: int
    params: int
    accuracy: float  # minival top-1, percent
    branches: list[str]
    added: list[str]


@dataclass
class GrowthHistory:
    strategy: str
    seed: int
    points: list[GrowthPoint] = field(default_factory=list)
    train_steps: int = 0
    score_images: int = 0
    seconds: float = 0.0
    model: PetriNet | None = None

    def front(self) -> list[int]:
        """Indices of the points on the (MACs min, accuracy max) Pareto front, cheapest first."""
        obj = np.array([[p.macs, p.accuracy] for p in self.points], dtype=float)
        return search.pareto_front(obj, [False, True]).tolist()


def measure(model: nn.Module, resolution: int, eval_limit: int | None) -> tuple[int, int, float]:
    """(MACs per image, conv/linear weights, minival top-1 %) of ``model``."""
    count = count_model(model, torch.zeros(1, model.in_channels, resolution, resolution))
    return count.macs, count.params, evaluate.top1_accuracy(model, "minival", resolution, eval_limit)


def grow(rounds: int = 4, seed: int = 0, strategy: str = "petridish", widths: Sequence[int] = (8, 16, 16),
         strides: Sequence[int] = (1, 2, 1), resolution: int = 14, train_images: int = 4000,
         first_steps: int = 200, steps_per_round: int = 100, max_add: int = 2, l1: float = 0.05,
         score_steps: int = 4, score_lr: float = 0.1, score_op_lr: float = 0.1, lr: float = 0.05,
         batch_size: int = 64, ops: Sequence[str] = OPS, eval_limit: int | None = None,
         scorer: Callable[[PetriNet, list[Branch], Iterable], torch.Tensor] | None = None,
         chooser: Callable[[Sequence[Branch], torch.Tensor, int], list[int]] | None = None) -> GrowthHistory:
    """Train a seed net, then ``rounds`` times: pick branches (Petridish scoring or at random), add, train.

    ``strategy="none"`` trains the same steps without growing (the control every growth run must beat).
    Every random choice comes from ``seed`` (weights, candidate inits, data order, random picks); the
    history repeats exactly for a seed on the same machine and thread count.

    Hooks for Lab 7 (a student's versions): ``scorer(model, pool, batches)`` returns the candidates'
    strengths (K,) in place of :func:`score_candidates` (its gates; the images it draws from ``batches``
    are counted), and ``chooser(pool, strength, max_add)`` replaces :func:`choose`.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    model = PetriNet(widths, strides, seed=gen)
    hist = GrowthHistory(strategy, seed)

    def train_and_record(r: int, steps: int, added: list[str]) -> None:
        minitrain.fit(model, steps, lr, batch_size, resolution, train_images, seed=seed * 1000 + r)
        hist.train_steps += steps
        macs, params, acc = measure(model, resolution, eval_limit)
        hist.points.append(GrowthPoint(r, macs, params, acc, [b.name for b in model.branches], added))

    train_and_record(0, first_steps, [])
    for r in range(1, rounds + 1):
        pool = candidates(model, gen, ops)
        if not pool:
            break
        if strategy == "petridish":
            batches = minitrain.train_batches(batch_size, resolution, train_images, seed=seed * 1000 + 500 + r)
            if scorer is None:
                scores = score_candidates(model, pool, batches, l1, score_steps, score_lr, score_op_lr)
                hist.score_images += scores.images
                strength = scores.gates
            else:
                seen = [0]
                strength = torch.as_tensor(scorer(model, pool, _counted(batches, seen))).detach().abs()
                hist.score_images += seen[0]
                if strength.shape != (len(pool),):
                    raise ValueError(f"scorer must return one strength per candidate, shape ({len(pool)},); "
                                     f"got {tuple(strength.shape)}")
            picks = list((chooser or choose)(pool, strength, max_add))
        elif strategy == "random":
            picks = torch.randperm(len(pool), generator=gen)[:max_add].tolist()  # gates stay 0
        else:  # "none": the control, same training steps without growing
            picks = []
        for i in picks:
            model.branches.append(pool[i])
        train_and_record(r, steps_per_round, [pool[i].name for i in picks])
    hist.seconds = time.perf_counter() - start
    hist.model = model
    return hist


def _counted(batches: Iterable, seen: list[int]) -> Iterator:
    """``batches``, adding the number of images of each batch drawn to ``seen[0]``."""
    for x, y in batches:
        seen[0] += len(y)
        yield x, y


# ---- several seeds ----------------------------------------------------------------------------------------
def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def compare_growth(seeds: Sequence[int], strategies: Sequence[str] = ("petridish", "random"),
                   **grow_kwargs) -> dict[str, list[GrowthHistory]]:
    """``grow`` for every strategy and seed, with the same budget: ``{strategy: [history per seed]}``."""
    return {s: [grow(seed=seed, strategy=s, **grow_kwargs) for seed in seeds] for s in strategies}


def summary_table(runs: dict[str, list[GrowthHistory]]) -> str:
    """Mean +- sd over seeds of the final and the best accuracy, final MACs and seconds, one row per strategy."""
    head = f"{'strategy':<10} {'seeds':>5} {'final acc %':>14} {'best acc %':>14} {'final MACs':>18} {'s/run':>7}"
    rows = [head, "-" * len(head)]
    for strategy, hists in runs.items():
        final = mean_sd([h.points[-1].accuracy for h in hists])
        best = mean_sd([max(p.accuracy for p in h.points) for h in hists])
        macs = mean_sd([h.points[-1].macs for h in hists])
        secs = mean_sd([h.seconds for h in hists])[0]
        rows.append(f"{strategy:<10} {len(hists):>5} {final[0]:>7.2f} +- {final[1]:<4.2f} "
                    f"{best[0]:>7.2f} +- {best[1]:<4.2f} {macs[0]:>9,.0f} +- {macs[1]:<6,.0f} {secs:>7.1f}")
    return "\n".join(rows)
