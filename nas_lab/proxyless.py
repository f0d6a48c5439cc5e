"""ProxylessNAS-style gradient search on the pretrained supernet, with a differentiable latency loss.

Architecture parameters: logits ``alpha`` over the (kernel, expand) choices of every block slot (9 per slot in
the default space) and logits ``beta`` over the depth of every stage; resolution and width are fixed per run.
The supernet's weights are frozen (a private copy; the shared one is never modified): only ``alpha`` and
``beta`` learn, from

    loss = cross-entropy on a batch of training images + lambda * E[latency]   (latency in ms)

where E[latency] = fixed layers + sum over slots of P(slot active) * sum_i p_i * F(op_i), with F looked up in
the latency table and P(slot active) = P(its stage's depth > its index) (:func:`expected_latency`, the piece a
student writes). The latency term is an exact expectation, differentiable in every logit.

How a step samples paths: **ProxylessNAS's binarised gates with two sampled paths**, not a hard Gumbel-softmax.
Per slot (and per stage for depth) two distinct choices are drawn from the softmax, and one of them, drawn by
their renormalised probabilities, is the active path. The forward pass runs the active path only (gate 1); the
other candidate's output is computed without autograd (gate 0), just to give its gate a gradient. The gates are
straight-through (forward 1/0, backward the gradient of the two renormalised probabilities), which is the
BinaryConnect-style estimate ProxylessNAS uses: dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i) over the pair.
After the Adam step the pair's logits are shifted together so that their total probability is what it was
before the step: the cross-entropy only compared the two, so the choices not drawn keep their share.

Why not a hard Gumbel-softmax with the straight-through estimator: its backward pass needs dL/dg_j for *every*
choice j, i.e. the output of all 9 ops of every slot (and all depths), about 9 forward passes per step; the
two-path gates need 2 (the second without autograd), which is what makes one lambda fit in well under a
minute on one CPU core. Both estimators are biased (straight-through); ProxylessNAS reports the two-path one
works, and it keeps one path's memory, which is the point of the method.

The derived arch is the argmax of every slot's and every stage's logits. :func:`sweep` runs several lambdas
and measures each derived arch: predicted accuracy (the MLP), test accuracy (extracted from the shipped
supernet, BN recalibrated, on a limited number of images) and table latency.

Measured (``benchmarks/bench_strategies.py``; r28, w1.0, 100 steps of 64 images, seed 0; 7-9 CPU seconds per
lambda): lambda 0 / 0.03 / 0.1 / 0.3 per ms derive archs of 2.29 / 1.40 / 1.01 / 0.80 ms and 91.7 / 91.0 / 90.2
/ 89.7 % test accuracy (2,000 images). Depth reacts first (it carries most of the latency); at lambda 0.3
every stage keeps one block. Evolution over the whole space (resolution and width free) under the same latency
limits predicts 0.4-1.0 points more than the MLP predicts for these archs: fixing resolution and width costs.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas_lab import efficiency as eff
from nas_lab.minitrain import train_batches
from nas_lab.space import Arch, ArchError, SearchSpace

FIXED_KINDS = ("stem", "head", "pool+linear")  # the layers every subnet has, whatever its blocks


# ---- latency lookup and its expectation ---------------------------------------------------------------
@dataclass(frozen=True)
class LatencyLookup:
    """The latency table restricted to one (resolution, width): what :func:`expected_latency` needs."""

    ops: torch.Tensor        # (slots, ops) float64 ms of a block with choice i in each slot (op i = kernel k, expand e)
    fixed: float             # ms of the stem, head and pool + classifier
    depths: tuple[int, ...]  # the depth choices of a stage
    max_depth: int           # block slots per stage


def op_choices(space: SearchSpace) -> list[tuple[int, int]]:
    """The (kernel, expand) pairs of a block slot, in the order of the logits' columns."""
    return [(k, e) for k in space.kernels for e in space.expands]


def latency_lookup(table: Any, resolution: int, width: float, space: SearchSpace | None = None) -> LatencyLookup:
    """Per-slot, per-op block latency (ms) and the fixed layers' latency, summed from a
    :class:`~nas_lab.latency.LatencyTable`'s per-layer entries at one resolution and width."""
    space = space or table.space
    _index(space.resolutions, resolution, "resolution")
    _index(space.widths, width, "width")
    ops = torch.empty(space.num_slots, len(op_choices(space)), dtype=torch.float64)  # (slots, ops), exact sums
    for slot in range(space.num_slots):
        stage, block = divmod(slot, space.max_depth)
        for i, (k, e) in enumerate(op_choices(space)):
            layers = eff.block_layers(space, resolution, width, stage, block, k, e)
            ops[slot, i] = sum(table.layer_ms(layer) for layer in layers)
    any_arch = replace(space.smallest(), resolution=resolution, width=width)
    fixed = sum(table.layer_ms(layer) for layer in eff.arch_layers(any_arch, space) if layer.kind in FIXED_KINDS)
    return LatencyLookup(ops, float(fixed), tuple(space.depths), space.max_depth)


def expected_latency(op_probs: torch.Tensor, depth_probs: torch.Tensor, lookup: LatencyLookup) -> torch.Tensor:
    """E[latency] (ms, scalar tensor) when each slot's op follows ``op_probs`` (slots, ops) and each stage's
    depth follows ``depth_probs`` (stages, depths), all independent: block b of a stage runs when depth > b."""
    b = torch.arange(lookup.max_depth)                                             # (M,)
    runs = (torch.tensor(lookup.depths)[:, None] > b[None, :]).to(depth_probs)     # (D, M): depth d runs block b
    active = (depth_probs @ runs).reshape(-1)                                      # (slots,) P(slot active)
    per_slot = (op_probs * lookup.ops).sum(dim=-1)                                 # (slots,) E[ms | active]
    return lookup.fixed + (active * per_slot).sum()


# ---- gates ---------------------------------------------------------------------------------------------------
def sample_pairs(logits: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """(rows, 2) choice indices per row: two distinct draws from softmax(logits), the active one first (drawn
    between the two by their renormalised probabilities). A row with one choice gets (0, 0)."""
    probs = torch.softmax(logits.detach(), dim=-1)                                 # (R, C)
    if probs.shape[1] < 2:
        return torch.zeros(len(probs), 2, dtype=torch.long)
    pair = torch.multinomial(probs, 2, replacement=False, generator=rng)           # (R, 2)
    p2 = probs.gather(1, pair)                                                     # (R, 2)
    second = torch.rand(len(pair), generator=rng) * p2.sum(1) >= p2[:, 0]          # (R,) second one active?
    return torch.where(second[:, None], pair.flip(1), pair)


def binary_gates(logits: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """(rows, 2) straight-through gates: forward exactly (1, 0), backward the gradient of the pair's
    renormalised probabilities softmax(logits[pair])."""
    p2 = torch.softmax(logits.gather(1, pairs), dim=-1)                           # (R, 2)
    hard = torch.zeros_like(p2)
    hard[:, 0] = 1.0
    return hard + (p2 - p2.detach())  # (p - p) is exactly 0: the forward is exactly (1, 0)


@torch.no_grad()
def rescale_pairs(logits: torch.Tensor, pairs: torch.Tensor, before: torch.Tensor) -> None:
    """Shift each pair's two logits so their logsumexp is ``before`` (R,) again (the others keep their share)."""
    offset = torch.logsumexp(logits.gather(1, pairs), dim=1) - before             # (R,)
    offset = torch.where(pairs[:, 0] != pairs[:, 1], offset, torch.zeros_like(offset))
    logits.scatter_add_(1, pairs, -offset[:, None].expand(-1, 2))


# ---- the gated forward pass ----------------------------------------------------------------------------------
def gated_forward(net: Any, x: torch.Tensor, space: SearchSpace, width: float, op_pairs: torch.Tensor,
                  op_gates: torch.Tensor, depth_pairs: torch.Tensor, depth_gates: torch.Tensor) -> torch.Tensor:
    """Class logits (N, classes) of the supernet on ``x`` (N, 1, r, r) with the binarised gates: each slot runs
    its active op (gate 1) and, without autograd, its other candidate (gate 0); each stage likewise for depth."""
    ops, ch, m = op_choices(space), space.channels(width), space.max_depth
    h = net.stem(x, ch["stem"])
    for s in range(space.num_stages):
        d_on, d_off = (space.depths[int(i)] for i in depth_pairs[s])
        outputs = {}
        for b in range(max(d_on, d_off)):
            slot, block = s * m + b, net.blocks[s * m + b]
            (k_on, e_on), (k_off, e_off) = ops[int(op_pairs[slot, 0])], ops[int(op_pairs[slot, 1])]
            if b < d_on:  # on the active path
                y = block(h, ch["stages"][s], k_on, e_on)
                if op_pairs[slot, 0] != op_pairs[slot, 1]:
                    with torch.no_grad():
                        y_off = block(h, ch["stages"][s], k_off, e_off)
                    y = op_gates[slot, 0] * y + op_gates[slot, 1] * y_off
            else:  # only the depth gate's other candidate needs these blocks: no autograd
                with torch.no_grad():
                    y = block(h.detach(), ch["stages"][s], k_on, e_on)
            outputs[b + 1] = h = y
        h = outputs[d_on]
        if d_on != d_off:
            h = depth_gates[s, 0] * h + depth_gates[s, 1] * outputs[d_off].detach()
    h = net.head(h, ch["head"])
    return net.classifier(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


# ---- the search ------------------------------------------------------------------------------------------------
@dataclass
class ProxylessResult:
    """The derived arch, the final logits and how the search went (per step)."""

    arch: Arch
    lam: float
    op_logits: torch.Tensor      # (slots, ops)
    depth_logits: torch.Tensor   # (stages, depths)
    expected_latency_ms: float   # E[latency] under the final probabilities
    seconds: float               # wall clock
    cpu_seconds: float           # CPU time of this process (= wall on an idle core with one thread)
    history: list[dict[str, float]] = field(default_factory=list)  # per step: ce, expected_latency_ms, loss
    op_probs: np.ndarray = field(default_factory=lambda: np.zeros(0))     # (steps + 1, slots, ops)
    depth_probs: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (steps + 1, stages, depths)


def derive(op_logits: torch.Tensor, depth_logits: torch.Tensor, space: SearchSpace, resolution: int,
           width: float) -> Arch:
    """The discrete arch: the most likely op of every slot and the most likely depth of every stage."""
    ops = op_choices(space)
    chosen = [ops[int(i)] for i in op_logits.detach().argmax(dim=1)]
    depths = tuple(space.depths[int(i)] for i in depth_logits.detach().argmax(dim=1))
    arch = Arch(resolution, width, depths, tuple(k for k, _ in chosen), tuple(e for _, e in chosen),
                space.max_depth)
    return space.validate(arch)


def proxyless_search(lam: float, resolution: int = 28, width: float = 1.0, steps: int = 100, batch_size: int = 64,
                     lr: float = 0.1, seed: int = 0, net: Any = None, table: Any = None,
                     train_images: int = 10_000,
                     latency_fn: Callable[[torch.Tensor, torch.Tensor, LatencyLookup], torch.Tensor]
                     = expected_latency,
                     gate_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = binary_gates) -> ProxylessResult:
    """Learn architecture logits for ``steps`` steps of loss = CE + ``lam`` * E[latency ms] with the supernet
    frozen, at one resolution and width; return the derived arch and the history.

    ``net`` defaults to the shipped supernet (:func:`nas_lab.evaluate.load_supernet`) and ``table`` to the
    shipped latency table; ``latency_fn`` and ``gate_fn`` replace :func:`expected_latency` and
    :func:`binary_gates` (the lab's exercises).
    """
    if lam < 0 or steps < 1 or batch_size < 2:
        raise ValueError(f"need lam >= 0, steps >= 1 and batch_size >= 2; got {lam}, {steps}, {batch_size}")
    start, cpu_start = time.perf_counter(), time.process_time()
    if net is None:
        from nas_lab.evaluate import load_supernet
        net = load_supernet()
    if table is None:
        from nas_lab.latency import LatencyTable
        table = LatencyTable.shipped()
    space = net.space
    lookup = latency_lookup(table, resolution, width, space)
    net = copy.deepcopy(net).train().to(memory_format=torch.channels_last)  # BN on batch statistics
    net.requires_grad_(False)
    op_logits = torch.zeros(space.num_slots, len(op_choices(space)), requires_grad=True)      # (slots, ops)
    depth_logits = torch.zeros(space.num_stages, len(space.depths), requires_grad=True)       # (stages, D)
    opt = torch.optim.Adam([op_logits, depth_logits], lr=lr)
    rng = torch.Generator().manual_seed(seed)
    history, op_hist, depth_hist = [], [_probs(op_logits)], [_probs(depth_logits)]
    batches = train_batches(batch_size, resolution, train_images, seed)
    for step in range(1, steps + 1):
        x, y = next(batches)
        x = x.contiguous(memory_format=torch.channels_last)
        op_pairs, depth_pairs = sample_pairs(op_logits, rng), sample_pairs(depth_logits, rng)
        before = [torch.logsumexp(lg.detach().gather(1, p), 1) for lg, p in
                  ((op_logits, op_pairs), (depth_logits, depth_pairs))]
        out = gated_forward(net, x, space, width, op_pairs, gate_fn(op_logits, op_pairs),
                            depth_pairs, gate_fn(depth_logits, depth_pairs))
        ce = F.cross_entropy(out, y)
        lat = latency_fn(torch.softmax(op_logits, -1), torch.softmax(depth_logits, -1), lookup)
        loss = ce + lam * lat
        opt.zero_grad()
        loss.backward()
        opt.step()
        rescale_pairs(op_logits, op_pairs, before[0])
        rescale_pairs(depth_logits, depth_pairs, before[1])
        history.append({"step": step, "ce": float(ce.detach()), "expected_latency_ms": float(lat.detach()),
                        "loss": float(loss.detach())})
        op_hist.append(_probs(op_logits))
        depth_hist.append(_probs(depth_logits))
    with torch.no_grad():
        final_lat = float(latency_fn(torch.softmax(op_logits, -1), torch.softmax(depth_logits, -1), lookup))
    arch = derive(op_logits, depth_logits, space, resolution, width)
    return ProxylessResult(arch, lam, op_logits.detach(), depth_logits.detach(), final_lat,
                           time.perf_counter() - start, time.process_time() - cpu_start, history,
                           np.stack(op_hist), np.stack(depth_hist))


def _probs(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.detach(), dim=-1).numpy().copy()


def _index(choices: Sequence[float], value: float, name: str) -> int:
    for i, c in enumerate(choices):
        if abs(float(c) - float(value)) < 1e-9:
            return i
    raise ArchError(f"{name} {value} is not in the space; allowed values: {list(choices)}")


# ---- a sweep over lambda --------------------------------------------------------------------------------------
@dataclass
class SweepRow:
    """One lambda's derived arch and its measurements."""

    lam: float
    arch: Arch
    predicted_accuracy: float    # percent (the MLP predictor)
    measured_accuracy: float     # percent: test images, supernet weights, BN recalibrated
    latency_ms: float            # the table's prediction for the derived arch
    expected_latency_ms: float   # E[latency] under the final probabilities
    macs: float                  # millions
    seconds: float               # search time, wall clock
    cpu_seconds: float           # search time, CPU


def sweep(lambdas: Sequence[float], resolution: int = 28, width: float = 1.0, steps: int = 100, seed: int = 0,
          test_images: int = 2000, calib_images: int = 500, net: Any = None, table: Any = None,
          predictor: Any = None, **search_kwargs: Any) -> list[SweepRow]:
    """Run :func:`proxyless_search` for every lambda and measure each derived arch."""
    from nas_lab.efficiency import costs
    from nas_lab.evaluate import evaluate_arch, load_supernet

    if net is None:
        net = load_supernet()
    if table is None:
        from nas_lab.latency import LatencyTable
        table = LatencyTable.shipped()
    if predictor is None:
        from nas_lab.accuracy import MLPPredictor
        predictor = MLPPredictor.shipped()
    rows = []
    for lam in lambdas:
        r = proxyless_search(lam, resolution, width, steps, seed=seed, net=net, table=table, **search_kwargs)
        measured = evaluate_arch(r.arch, "test", net=net, limit=test_images, calib_images=calib_images)
        rows.append(SweepRow(lam, r.arch, float(np.asarray(predictor([r.arch]))[0]), float(measured),
                             float(table.predict(r.arch)), r.expected_latency_ms, costs(r.arch, net.space).macs,
                             r.seconds, r.cpu_seconds))
    return rows
