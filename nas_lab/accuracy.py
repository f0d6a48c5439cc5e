"""Accuracy predictors: one-hot arch encoding, an MLP (OFA-style) and a ridge-regression baseline.

Encoding (:func:`encode_genes`, vectorised over a population): one-hot resolution, one-hot width, then per
block slot a one-hot kernel and a one-hot expand ratio, all zeros for the slots a stage skips (so depth is
implicit). For the default space that is 4 + 3 + 12 x (3 + 3) = 79 features.

Units: predictors take and **return accuracy in percent** (0-100); the MLP is trained on percent targets
with its output bias initialised to the mean training accuracy. (OFA trains on fractions in [0, 1]; on
our data percent targets gave a lower held-out RMSE at the same budget, 0.28 vs 0.36 points on the
synthetic set, because the loss is not squashed by the tiny spread of fractions.) The data set CSV may
hold percent or fractions (detected from its values).

The MLP: ``features -> 400 -> 400 -> 400 -> 1`` with ReLU, MSE loss, Adam (lr 1e-3, cosine decay, 40
epochs), a seeded shuffle and a seeded train / test split; seconds on one CPU core for a few thousand rows. Weights
and a JSON description go into one ``.safetensors`` file.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from nas_lab import artifacts
from nas_lab.efficiency import GeneLayout, active_mask, costs_genes, to_genes
from nas_lab.space import Arch, SearchSpace

PREDICTOR_NAME = "accuracy_predictor.safetensors"
DATASET_NAME = "accuracy_dataset.csv"
ACCURACY_COLUMNS = ("accuracy", "minival_accuracy", "acc", "top1")


# ---- encoding ---------------------------------------------------------------------------------------
def num_features(space: SearchSpace) -> int:
    return len(space.resolutions) + len(space.widths) + space.num_slots * (len(space.kernels) + len(space.expands))


def encode_genes(genes: np.ndarray, space: SearchSpace | None = None) -> np.ndarray:
    """(N, features) float32 one-hot encoding of a gene matrix (see :mod:`nas_lab.efficiency`)."""
    space = space or SearchSpace()
    genes = np.asarray(genes, dtype=np.int64)
    layout = GeneLayout.of(space)
    R, W, K, E = len(space.resolutions), len(space.widths), len(space.kernels), len(space.expands)
    out = np.zeros((len(genes), num_features(space)), dtype=np.float32)
    rows = np.arange(len(genes))
    out[rows, genes[:, layout.resolution]] = 1
    out[rows, R + genes[:, layout.width]] = 1
    active = active_mask(genes, space)                                               # (N, slots)
    base = R + W + np.arange(space.num_slots) * (K + E)                              # (slots,)
    r_idx, slot_idx = np.nonzero(active)
    out[r_idx, base[slot_idx] + genes[:, layout.kernels][r_idx, slot_idx]] = 1
    out[r_idx, base[slot_idx] + K + genes[:, layout.expands][r_idx, slot_idx]] = 1
    return out


def encode(archs: Sequence[Arch], space: SearchSpace | None = None) -> np.ndarray:
    """(N, features) one-hot encoding of a list of archs."""
    space = space or SearchSpace()
    return encode_genes(to_genes(archs, space), space)


# ---- data set ---------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """(arch, accuracy in percent) rows, plus any other numeric columns of the CSV."""

    archs: list[Arch]
    accuracy: np.ndarray                       # percent
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.archs)


def load_dataset(path: str | Path, space: SearchSpace | None = None) -> Dataset:
    """Read a CSV with an ``arch`` column and an accuracy column (one of ``ACCURACY_COLUMNS``)."""
    space = space or SearchSpace()
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no rows")
    cols = list(rows[0])
    acc_col = next((c for c in ACCURACY_COLUMNS if c in cols), None)
    if "arch" not in cols or acc_col is None:
        raise ValueError(f"{path}: needs an 'arch' column and one of {list(ACCURACY_COLUMNS)}; has {cols}")
    archs = [space.parse(r["arch"]) for r in rows]
    acc = np.array([float(r[acc_col]) for r in rows])
    if acc.max() <= 1.0:  # fractions -> percent
        acc = acc * 100
    extra = {}
    for c in cols:
        if c not in ("arch", acc_col):
            try:
                extra[c] = np.array([float(r[c]) for r in rows])
            except ValueError:
                pass
    return Dataset(archs, acc, extra)


def cost_mismatch(data: Dataset, space: SearchSpace | None = None) -> dict[str, float]:
    """Largest |CSV value - analytic value| of each cost column the data set has (macs, params, peak_memory_kb).

    The data set's costs come from counting the built subnets; they must equal the formulas of
    :mod:`nas_lab.efficiency` (up to the CSV's rounding).
    """
    analytic = costs_genes(to_genes(data.archs, space), space)
    return {k: float(np.max(np.abs(data.extra[k] - analytic[k]))) for k in analytic if k in data.extra}


def save_dataset(data: Dataset, path: str | Path, space: SearchSpace | None = None) -> Path:
    """Write ``arch, accuracy (percent), macs, params, peak_memory_kb`` rows (analytic costs added)."""
    c = costs_genes(to_genes(data.archs, space), space)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "accuracy", "macs", "params", "peak_memory_kb"])
        for i, a in enumerate(data.archs):
            w.writerow([str(a), f"{data.accuracy[i]:.4f}", f"{c['macs'][i]:.6f}", int(c["params"][i]),
                        f"{c['peak_memory_kb'][i]:.4f}"])
    return Path(path)


def synthetic_dataset(n: int, seed: int = 0, noise: float = 0.2, space: SearchSpace | None = None) -> Dataset:
    """A stand-in data set: accuracy (percent) = a smooth, known function of the arch + Gaussian noise.

    Saturating in log-MACs, with extra credit for resolution and large kernels; for tests, demos and
    benchmarks before the real data set exists. Not a model of real accuracies.
    """
    import random

    space = space or SearchSpace()
    rng = random.Random(seed)
    archs = [space.sample(rng) for _ in range(n)]
    return Dataset(archs, synthetic_accuracy(archs, space) + np.random.default_rng(seed).normal(0, noise, n))


def synthetic_accuracy(archs: Sequence[Arch], space: SearchSpace | None = None) -> np.ndarray:
    """The noiseless function behind :func:`synthetic_dataset` (percent)."""
    space = space or SearchSpace()
    g = to_genes(archs, space)
    macs = costs_genes(g, space)["macs"]
    layout = GeneLayout.of(space)
    big_kernel = (np.where(active_mask(g, space), g[:, layout.kernels], 0)).sum(1)
    return 94 - 6 * np.exp(-np.log1p(macs)) + 0.4 * g[:, layout.resolution] + 0.05 * big_kernel


# ---- metrics ----------------------------------------------------------------------------------------
def rankdata(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get their average rank (as ``scipy.stats.rankdata``)."""
    _, inverse, counts = np.unique(np.asarray(a), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson correlation of the (tie-averaged) ranks."""
    return float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])


def kendall_tau(x: np.ndarray, y: np.ndarray, chunk: int = 1024) -> float:
    """Kendall's tau-b (tie-corrected), exact, O(n^2) in chunks of rows."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    s = tx = ty = 0.0
    for i in range(0, len(x), chunk):
        dx = np.sign(x[i:i + chunk, None] - x[None, :])
        dy = np.sign(y[i:i + chunk, None] - y[None, :])
        s += float((dx * dy).sum())
        tx += float(np.abs(dx).sum())
        ty += float(np.abs(dy).sum())
    return s / math.sqrt(tx * ty) if tx and ty else float("nan")


def metrics(predicted: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """RMSE and MAE (percentage points), Kendall tau and Spearman rho."""
    p, t = np.asarray(predicted, float), np.asarray(true, float)
    return {"rmse": float(np.sqrt(np.mean((p - t) ** 2))), "mae": float(np.mean(np.abs(p - t))),
            "kendall_tau": kendall_tau(p, t), "spearman": spearman(p, t), "n": len(t)}


def split(n: int, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, test) index split."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


# ---- predictors -------------------------------------------------------------------------------------
class _Predictor:
    """Shared interface: ``predictor(archs) -> percent``, ``predict_genes(genes)``, ``predict_features(X)``."""

    space: SearchSpace

    def predict_features(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_genes(self, genes: np.ndarray) -> np.ndarray:
        return self.predict_features(encode_genes(genes, self.space))

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        return self.predict_features(encode(archs, self.space))


class RidgePredictor(_Predictor):
    """Closed-form ridge regression on the one-hot encoding (the intercept is not penalised)."""

    def __init__(self, space: SearchSpace | None = None, alpha: float = 1.0) -> None:
        self.space, self.alpha = space or SearchSpace(), alpha
        self.coef = np.zeros(num_features(self.space))
        self.intercept = 0.0

    def fit(self, x: np.ndarray, accuracy_pct: np.ndarray) -> "RidgePredictor":
        y = np.asarray(accuracy_pct, float)
        xm, ym = x.mean(0), y.mean()
        xc = x - xm
        self.coef = np.linalg.solve(xc.T @ xc + self.alpha * np.eye(x.shape[1]), xc.T @ (y - ym))
        self.intercept = float(ym - xm @ self.coef)
        return self

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, float) @ self.coef + self.intercept


class MLPPredictor(_Predictor):
    """OFA-style MLP (3 hidden layers of 400, ReLU) on the one-hot encoding; percent in, percent out."""

    def __init__(self, space: SearchSpace | None = None, hidden: Sequence[int] = (400, 400, 400)) -> None:
        self.space, self.hidden = space or SearchSpace(), tuple(hidden)
        sizes = (num_features(self.space), *self.hidden)
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], 1)).eval()
        self.info: dict[str, Any] = {}

    def fit(self, x: np.ndarray, accuracy_pct: np.ndarray, seed: int = 0, epochs: int = 40,
            batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 0.0) -> "MLPPredictor":
        """Train from scratch (seeded: same data and seed -> same weights)."""
        xt = torch.as_tensor(np.asarray(x, np.float32))
        yt = torch.as_tensor(np.asarray(accuracy_pct, np.float32))
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for m in self.net:
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
        with torch.no_grad():
            self.net[-1].bias.fill_(float(yt.mean()))
        steps_per_epoch = max(1, math.ceil(len(xt) / batch_size))
        opt = torch.optim.Adam(self.net.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
        self.net.train()
        for _ in range(epochs):
            perm = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), batch_size):
                idx = perm[i:i + batch_size]
                loss = torch.mean((self.net(xt[idx]).squeeze(1) - yt[idx]) ** 2)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        self.net.eval()
        self.info.update(seed=seed, epochs=epochs, batch_size=batch_size, lr=lr, n_train=len(xt))
        return self

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.net(torch.as_tensor(np.asarray(x, np.float32))).squeeze(1)
        return out.double().numpy()

    # ---- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Weights + a JSON description (space, layer sizes, units, training info) in one safetensors file."""
        from safetensors.torch import save_file

        meta = {"format": "nas-lab-accuracy-mlp/1", "space": json.dumps(self.space.describe()),
                "hidden": json.dumps(self.hidden), "target": "accuracy in percent",
                "info": json.dumps(self.info)}
        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(path), metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "MLPPredictor":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != "nas-lab-accuracy-mlp/1":
            raise ValueError(f"{path} is not a nas-lab accuracy predictor (format {meta.get('format')!r})")
        space = SearchSpace.from_dict(json.loads(meta["space"]))
        model = cls(space, json.loads(meta["hidden"]))
        model.net.load_state_dict(load_file(str(path)))
        model.info = json.loads(meta.get("info", "{}"))
        return model

    @classmethod
    def shipped(cls) -> "MLPPredictor":
        """The trained predictor in ``data/`` (a clear error names the rebuild command if missing)."""
        return artifacts.load(PREDICTOR_NAME)


def train_and_evaluate(data: Dataset, seed: int = 0, test_fraction: float = 0.2, epochs: int = 40,
                       space: SearchSpace | None = None) -> tuple[MLPPredictor, dict[str, dict[str, float]]]:
    """Seeded split; fit the MLP and the ridge baseline on train; held-out metrics of both and a constant."""
    space = space or SearchSpace()
    x = encode(data.archs, space)
    tr, te = split(len(data), test_fraction, seed)
    mlp = MLPPredictor(space).fit(x[tr], data.accuracy[tr], seed=seed, epochs=epochs)
    ridge = RidgePredictor(space).fit(x[tr], data.accuracy[tr])
    const = np.full(len(te), data.accuracy[tr].mean())
    report = {"mlp": metrics(mlp.predict_features(x[te]), data.accuracy[te]),
              "ridge": metrics(ridge.predict_features(x[te]), data.accuracy[te]),
              "constant": {"rmse": float(np.sqrt(np.mean((const - data.accuracy[te]) ** 2))),
                           "mae": float(np.mean(np.abs(const - data.accuracy[te])))}}
    mlp.info.update(test_fraction=test_fraction, n_test=len(te), metrics=report)
    return mlp, report
