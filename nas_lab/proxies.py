"""Zero-cost proxies: scoring an architecture at initialisation, without training it (Lab 6).

Every proxy is a plain function with one signature::

    proxy(model: nn.Module, x: Tensor, y: Tensor, seed: int = 0) -> float

``x`` (N, C, r, r) is a batch of images at the model's resolution, ``y`` (N,) their labels, ``seed`` seeds the
proxy's own random draws (only ``zen`` draws any). **Higher = predicted better**, for every proxy, so
correlations with accuracy are reported signed: a proxy that ranks backwards shows a negative value. A
proxy never changes ``model`` or ``x``: it works on a deep copy (weights, BN statistics and gradients of the
caller's model are untouched), and is deterministic for a given (model, x, y, seed).

:data:`PROXIES` is the registry (name -> :class:`ProxyInfo`: the function, a one-line description, whether
it reads the images and the labels). :func:`compute` looks a proxy up by name (an unknown name is a
``ValueError`` listing the registered ones). :func:`score_arch` / :func:`score_archs` build a freshly,
seeded-initialised standalone subnet of an ``Arch`` and score it on a fixed training batch.

Conventions shared by the gradient proxies (as in the reference code): the "weights" are those of every
``nn.Conv2d`` and ``nn.Linear`` (BN affine parameters and biases are left out); the loss is the mean
cross-entropy; the copy runs in train mode, so BatchNorm normalises with the batch's own statistics.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from nas_lab.space import Arch, SearchSpace

Proxy = Callable[..., float]  # (model, x, y, seed=0) -> float


@dataclass(frozen=True)
class ProxyInfo:
    """A registered proxy: its function, what it measures, and what it reads besides the input's shape."""

    name: str
    fn: Proxy
    description: str
    needs_data: bool    # reads the pixel values of x (False: only x's shape)
    needs_labels: bool  # reads y


PROXIES: dict[str, ProxyInfo] = {}


def register(name: str, description: str, needs_data: bool, needs_labels: bool) -> Callable[[Proxy], Proxy]:
    """Decorator: add ``fn`` to :data:`PROXIES` under ``name`` (the function itself is stored, unwrapped)."""
    def add(fn: Proxy) -> Proxy:
        if name in PROXIES:
            raise ValueError(f"proxy {name!r} is registered twice")
        PROXIES[name] = ProxyInfo(name, fn, description, needs_data, needs_labels)
        return fn
    return add


def get_proxy(name: str) -> ProxyInfo:
    """The registry entry of ``name``; ``ValueError`` naming every registered proxy otherwise."""
    try:
        return PROXIES[name]
    except KeyError:
        raise ValueError(f"unknown proxy {name!r}; choose one of: {', '.join(PROXIES)}") from None


def compute(name: str, model: nn.Module, x: Tensor, y: Tensor, seed: int = 0) -> float:
    """Score ``model`` with the proxy called ``name``."""
    return float(get_proxy(name).fn(model, x, y, seed))


# ---- shared helpers ------------------------------------------------------------------------------------
def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The conv and linear layers, in module order: the layers whose weights the proxies score."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _copy(model: nn.Module, train: bool = True) -> nn.Module:
    """A deep copy with no gradients, in train (or eval) mode: all a proxy touches."""
    clone = copy.deepcopy(model).train(train)
    for p in clone.parameters():
        p.grad = None
    return clone


def _loss_backward(model: nn.Module, x: Tensor, y: Tensor) -> nn.Module:
    """A train-mode copy of ``model`` holding the gradients of the mean cross-entropy on (x, y)."""
    clone = _copy(model)
    F.cross_entropy(clone(x.clone()), y).backward()
    return clone


def _grad(layer: nn.Module) -> Tensor:
    """The weight gradient of a layer (zeros for a layer the forward pass did not use)."""
    g = layer.weight.grad
    return torch.zeros_like(layer.weight) if g is None else g


def _replace(model: nn.Module, match: Callable[[nn.Module], bool], make: Callable[[nn.Module], nn.Module]) -> None:
    """Swap every submodule for which ``match`` holds by ``make(submodule)`` (in place)."""
    for name, child in model.named_children():
        if match(child):
            setattr(model, name, make(child))
        else:
            _replace(child, match, make)


# ---- baselines -----------------------------------------------------------------------------------------
@register("params", "number of trainable parameters (baseline)", needs_data=False, needs_labels=False)
def params(model: nn.Module, x: Tensor, y: Tensor, seed: int = 0) -> float:
    """Every trainable parameter (conv and linear weights, BN weight and bias, classifier bias)."""
    return float(sum(p.numel() for p in model.parameters() if p.requires_grad))


@register("macs", "millions of multiply-accumulates per image, conv + linear (baseline)",
          needs_data=False, needs_labels=False)
def macs(model: nn.Module, x: Tensor, y: Tensor, seed: int = 0) -> float:
    """MACs per image (millions) of one forward pass at x's resolution, counted by :mod:`nas_lab.counting`."""
    from nas_lab.counting import count_model

    return count_model(_copy(model, train=False), x[:1].clone()).macs / 1e6


# ---- gradient proxies ----------------------------------------------------------------------------------
@register("grad_norm", "sum over layers of the L2 norm of the loss gradient of the weights",
          needs_data=True, needs_labels=True)
def grad_norm(model: nn.Module, x: Tensor, y: Tensor, seed: int = 0) -> float:
    """sum_l ||dL/dW_l||_2 over conv/linear layers l (a per-layer norm, summed: the foresight definition)."""
    clone = _loss_backward(model, x, y)
    return float(sum(_grad(layer).norm().item() for layer in weight_layers(clone)))


@register("snip", "connection sensitivity: sum |w * dL/dw| over the weights", needs_data=True, needs_labels=True)
def snip(model: nn.Module, x: Tensor, y: Tensor, seed: int = 0) -> float:
    """sum |W * dL/dW| over every conv/linear weight (SNIP's saliency, summed over the network)."""
    clone = _loss_backward(model, x, y)
    return float(sum((layer.weight * _grad(layer)).abs().sum().item() for layer in weight_layers(clone)))


@register("synflow", "synaptic flow: sum |w * dR/dw|, R = sum of the output of the |weights| net on ones (float64)",
          needs_data=False, needs_labels=False)
def synflow(model: nn.Module, x: Tensor, y: Tensor, seed: int = 0) -> float:
    """SynFlow on a linearised float64 copy: every parameter and buffer replaced by its absolute value,
    BatchNorm removed (identity: the zero-cost-proxies code builds the net without BN), ReLU6 replaced by ReLU
    (on non-negative activations ReLU is the identity, so the copy is the linear network the paper scores;
    ReLU6 would cap the growing positive activations at 6 and zero the gradient behind them). Input: one
    all-ones image of x's shape; R = sum of the output; score = sum over conv/linear weights of |w * dR/dw|.
    """
    clone = _copy(model, train=False)
    _replace(clone, lambda m: isinstance(m, nn.modules.batchnorm._BatchNorm), lambda m: nn.Identity())
    _replace(clone, lambda m: isinstance(m, nn.ReLU6), lambda m: nn.ReLU())
    clone = clone.double()
    with torch.no_grad():
        for t in clone.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)  # (1, C, r, r)
    clone(ones).sum().backward()
    return float(sum((layer.weight * _grad(layer)).abs().sum().item() for layer in weight_layers(clone)))


def gradsign_from_grads(signs_or_grads: Tensor) -> float:
    """sum_k |sum_i sign(g[i, k])| of per-sample gradients g of shape (n samples, k parameters).

    Each parameter contributes n when all n samples push it the same way and 0 when they cancel.
    """
    return float(torch.sign(signs_or_grads).sum(dim=0).abs().sum().item())


@register("gradsign", "GradSign: sum over weights of |sum over samples of sign(per-sample gradient)|",
          needs_data=True, needs_labels=True)
def gradsign(model: nn.Module, x: Tensor, y: Tensor, seed: int = 0) -> float:
    """GradSign (Algorithm 1) at the model's current initialisation.

    For each sample i alone (batch of one, BN on that sample's own statistics, as the reference code runs
    it), the gradient of l(f(x_i), y_i) w.r.t. every conv/linear weight; the signs are summed over samples
    (a running sum: memory of one gradient, not n); score = sum over weights of |sum of signs|, between 0
    and n x (number of weights).
    """
    clone = _copy(model)
    layers = weight_layers(clone)
    total: Tensor | None = None  # (k,) running sum of signs
    for i in range(len(x)):
        clone.zero_grad(set_to_none=True)
        F.cross_entropy(clone(x[i:i + 1].clone()), y[i:i + 1]).backward()
        signs = torch.cat([torch.sign(_grad(layer)).flatten() for layer in layers])  # (k,)
        total = signs if total is None else total + signs
    return 0.0 if total is None else float(total.abs().sum().item())


# ---- activation proxies --------------------------------------------------------------------------------
def naswot_kernel(codes: Tensor) -> Tensor:
    """K[i, j] = units on which the binary codes of samples i and j agree (= units - Hamming distance).

    ``codes`` (n, units) of 0/1; returns (n, n) float64: c c^T + (1 - c)(1 - c)^T.
    """
    c = codes.reshape(len(codes), -1).to(torch.float64)
    return c @ c.T + (1 - c) @ (1 - c).T


def naswot_score(codes: Tensor) -> float:
    """log |det K| of :func:`naswot_kernel` (-inf when two samples share the same code)."""
    return float(torch.linalg.slogdet(naswot_kernel(codes)).logabsdet.item())


@register("naswot", "NASWOT: log-determinant of the kernel of binary ReLU activation codes over the batch",
          needs_data=True, needs_labels=False)
def naswot(model: nn.Module, x: Tensor, y: Tensor, seed: int = 0) -> float:
    """NASWOT: each sample's code is 1 where a ReLU/ReLU6 unit is on (output > 0), over all such modules;
    K counts agreeing units per pair of samples; score = log |det K|. ReLU6's upper cap is not part of the
    code (the ReLU definition: on/off). Distinct, far-apart codes = a net that separates the inputs at init.
    """
    clone = _copy(model)
    kernel = torch.zeros(len(x), len(x), dtype=torch.float64)  # (n, n)

    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        nonlocal kernel
        kernel = kernel + naswot_kernel((output.detach() > 0).reshape(len(output), -1))

    handles = [m.register_forward_hook(hook) for m in clone.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    if not handles:
        raise ValueError("naswot needs nn.ReLU or nn.ReLU6 modules to read activation codes from")
    try:
        with torch.no_grad():
            clone(x.clone())
    finally:
        for h in handles:
            h.remove()
    return float(torch.linalg.slogdet(kernel).logabsdet.item())


def _gaussian_init(model: nn.Module, gen: torch.Generator) -> None:
    """ZenNAS's init: conv/linear weights N(0, 1), biases 0, BN weight 1 and bias 0."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.normal_(0.0, 1.0, generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()


@register("zen", "Zen-score: log E|f(x) - f(x + 0.01 x')| of pre-pooling features at Gaussian init and inputs, "
          "+ sum of log BN std", needs_data=False, needs_labels=False)
def zen(model: nn.Module, x: Tensor, y: Tensor, seed: int = 0, repeats: int = 4, gamma: float = 1e-2) -> float:
    """Zen-score, averaged over ``repeats`` draws of (weights, x, x') from a generator seeded by ``seed``.

    Per draw: weights Gaussian (:func:`_gaussian_init`), x and x' standard normal of x's shape; f = the
    features entering the last global pooling layer (the model's output if it has none); Delta = mean over
    the batch of sum |f(x) - f(x + gamma x')|; score = log Delta + sum over BN layers of log sqrt(mean over
    channels of the batch variance of the BN's input in the f(x) pass). The BN term restores the scale that
    train-mode BN divides out. (The reference code reads ``running_var`` after two momentum-0.1 updates,
    which mixes in its initial value 1; we use the batch variance the paper's definition names.)
    """
    clone = _copy(model)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    pools = [m for m in clone.modules() if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AvgPool2d))]
    bns = [m for m in clone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    features: list[Tensor] = []
    log_std: list[float] = []
    record_bn = False

    def keep_features(module: nn.Module, inputs: tuple) -> None:
        features.append(inputs[0])

    def keep_bn_var(module: nn.Module, inputs: tuple) -> None:
        if record_bn:
            v = inputs[0].transpose(0, 1).reshape(inputs[0].shape[1], -1).var(dim=1, unbiased=False)  # (C,)
            log_std.append(0.5 * math.log(max(v.mean().item(), 1e-300)))

    handles = [pools[-1].register_forward_pre_hook(keep_features)] if pools else []
    handles += [bn.register_forward_pre_hook(keep_bn_var) for bn in bns]
    scores = []
    try:
        with torch.no_grad():
            for _ in range(repeats):
                _gaussian_init(clone, gen)
                x0 = torch.randn(x.shape, generator=gen, device=x.device)              # (N, C, r, r)
                x1 = torch.randn(x.shape, generator=gen, device=x.device)
                features.clear()
                log_std.clear()
                record_bn = True
                out0 = clone(x0)
                record_bn = False
                out1 = clone(x0 + gamma * x1)
                f0, f1 = (features[0], features[1]) if pools else (out0, out1)      # (N, C', h, w)
                delta = (f0 - f1).abs().reshape(len(x0), -1).sum(dim=1).mean().item()
                scores.append((math.log(delta) if delta > 0 else -math.inf) + sum(log_std))
    finally:
        for h in handles:
            h.remove()
    return float(np.mean(scores))


# ---- scoring archs -------------------------------------------------------------------------------------
INITS = ("own", "supernet")


def build_model(arch: Arch, seed: int = 0, space: SearchSpace | None = None, init: str = "own") -> nn.Module:
    """A standalone :class:`~nas_lab.subnet.Subnet` of ``arch``, freshly initialised from ``seed``.

    ``init="own"`` (default): the supernet's init rules applied to the subnet's *own* shapes (conv weights
    Kaiming-normal with the layer's own fan-out, BN weight 1 / bias 0, classifier N(0, 0.01^2) / 0), so the
    score is a function of the arch alone. ``init="supernet"``: the active slice of a fresh
    ``OFASupernet(space)`` seeded with ``seed``, exactly the init ``nas-lab build-scratch-bench`` trains
    from, whose scales follow the *largest* net's fan-out (a 3x3 kernel is the centre of a 7x7 init).
    The global RNG is left as it was.
    """
    from nas_lab.subnet import Subnet
    from nas_lab.supernet import OFASupernet

    space = space or SearchSpace()
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if init == "supernet":
            net = OFASupernet(space)
            net.set_active_subnet(arch)
            return net.get_active_subnet().train()
        model = Subnet(space.validate(arch), space)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", generator=gen)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()  # weight 1, bias 0, running mean 0, var 1
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01, generator=gen)
                nn.init.zeros_(m.bias)
    return model.train()


@lru_cache(maxsize=16)
def train_batch(resolution: int, batch_size: int = 64, data_seed: int = 0) -> tuple[Tensor, Tensor]:
    """A fixed batch of the training split: images (B, 1, r, r) normalised at ``resolution``, labels (B,).

    The same images for every arch and every initialisation (chosen by ``data_seed``), so score spreads
    measure the initialisation alone. Cached: callers must not modify the tensors (proxies never do).
    """
    from nas_lab import data

    images, labels = data.load_split("train")
    idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(data_seed))[:batch_size]
    return data.normalise(images[idx], resolution), labels[idx]


def resolve(proxy: str | Proxy) -> tuple[str, Proxy]:
    """(name, function) of a registered proxy's name, or of any function with the proxy signature (Lab 6 scores
    the students' own proxies with the same machinery); anything else is a ``ValueError``."""
    if isinstance(proxy, str):
        return proxy, get_proxy(proxy).fn
    if callable(proxy):
        return getattr(proxy, "__name__", type(proxy).__name__), proxy
    raise ValueError(f"a proxy is a registered name or a function (model, x, y, seed) -> float, got {proxy!r}")


def score_arch(name: str | Proxy, arch: Arch, seed: int = 0, batch_size: int = 64, space: SearchSpace | None = None,
               init: str = "own", data_seed: int = 0, device: str | torch.device = "cpu") -> float:
    """The proxy ``name`` (a registered name or a proxy function) of a fresh standalone model of ``arch``
    (init ``seed``) on the fixed training batch."""
    _, fn = resolve(name)
    model = build_model(arch, seed, space, init).to(device)
    x, y = train_batch(arch.resolution, batch_size, data_seed)
    return float(fn(model, x.to(device), y.to(device), seed))


@dataclass
class ProxyScores:
    """Scores of many archs over several initialisations; row i is ``archs[i]``, column j is ``seeds[j]``."""

    name: str
    archs: list[Arch]
    seeds: tuple[int, ...]
    scores: np.ndarray   # (archs, seeds)
    seconds: np.ndarray  # (archs, seeds) wall seconds of one score: build the model + run the proxy

    @property
    def mean(self) -> np.ndarray:
        """(archs,) score averaged over the initialisations."""
        return self.scores.mean(axis=1)

    @property
    def std(self) -> np.ndarray:
        """(archs,) spread (standard deviation) over the initialisations."""
        return self.scores.std(axis=1)

    @property
    def seconds_per_arch(self) -> float:
        """Mean seconds to score one arch once (one initialisation)."""
        return float(self.seconds.mean())

    def correlations(self, truth: Sequence[float]) -> dict[str, Any]:
        """Signed Kendall tau and Spearman rho against ``truth``: per initialisation (mean, std over
        seeds) and of the seed-averaged score. Scores are ranked first, so -inf (NASWOT on identical codes)
        ranks lowest."""
        from nas_lab.accuracy import kendall_tau, spearman

        truth = np.asarray(truth, float)
        if len(truth) < 2:  # nothing to rank
            nan = float("nan")
            return {"n": len(truth), **{k: nan for k in ("kendall_tau", "kendall_tau_std", "spearman", "spearman_std",
                                                          "kendall_tau_of_mean", "spearman_of_mean")}}
        per_seed = [(kendall_tau(_ranks(col), truth), spearman(_ranks(col), truth)) for col in self.scores.T]
        taus, rhos = np.array(per_seed).T
        return {"n": len(truth), "kendall_tau": float(taus.mean()), "kendall_tau_std": float(taus.std()),
                "spearman": float(rhos.mean()), "spearman_std": float(rhos.std()),
                "kendall_tau_of_mean": kendall_tau(_ranks(self.mean), truth),
                "spearman_of_mean": spearman(_ranks(self.mean), truth)}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seeds": list(self.seeds), "seconds_per_arch": self.seconds_per_arch,
                "archs": [{"arch": str(a), "mean": float(m), "std": float(s), "scores": row.tolist()}
                          for a, m, s, row in zip(self.archs, self.mean, self.std, self.scores)]}


def _ranks(values: np.ndarray) -> np.ndarray:
    from nas_lab.accuracy import rankdata

    v = np.asarray(values, float)
    return rankdata(np.where(np.isnan(v), -np.inf, v))


def score_archs(name: str | Proxy, archs: Sequence[Arch], seeds: Sequence[int] = (0, 1, 2), batch_size: int = 64,
                space: SearchSpace | None = None, init: str = "own", data_seed: int = 0,
                device: str | torch.device = "cpu",
                progress: Callable[[int, int], None] | None = None) -> ProxyScores:
    """Score every arch once per seed; ``progress(done, total)`` is called after each arch. ``name`` is a
    registered proxy's name or a proxy function (the result is then named after the function).

    The models are tiny: on a shared laptop ``torch.set_num_threads(1)`` is several times faster than torch's
    default thread count (which contends with other processes).
    """
    label, fn = resolve(name)  # fail before any work
    archs = list(archs)
    scores = np.zeros((len(archs), len(seeds)))
    seconds = np.zeros((len(archs), len(seeds)))
    for i, arch in enumerate(archs):
        train_batch(arch.resolution, batch_size, data_seed)  # load outside the timing
        for j, seed in enumerate(seeds):
            t0 = time.perf_counter()
            scores[i, j] = score_arch(fn, arch, seed, batch_size, space, init, data_seed, device)
            seconds[i, j] = time.perf_counter() - t0
        if progress:
            progress(i + 1, len(archs))
    return ProxyScores(label, archs, tuple(seeds), scores, seconds)
