"""The from-scratch mini benchmark: subnets of the space, each trained alone with one fixed recipe.

Ground truth for ranking methods (the supernet's inherited accuracy, the accuracy predictor, zero-cost
proxies), in the spirit of NAS-Bench-201 but small enough to rebuild on a laptop.

Plan (seeded, :func:`planned_archs`): the largest, the smallest and the middle reference subnet, then
``per_cell`` random archs in every (resolution, width) cell, the cells visited round-robin so that any
prefix of the plan stays stratified. The rest of each arch (depths, kernels, expands) is uniform random.

Recipes (:data:`RECIPES`): ``bench`` (5 epochs over the 55k training split) builds the benchmark;
``full`` (12 epochs, the supernet's own schedule) is the reference the bench recipe is checked against on
:func:`fidelity_archs`. Both use :func:`nas_lab.train.train` with ``arch`` set (one subnet alone, the same
augmentation, SGD, label smoothing and cosine schedule as the supernet), seed ``seed`` for every subnet.
Evaluation is the labs' own: BN recalibrated on minival at the subnet's resolution, then test and minival
accuracy.

Resumable at two levels: a finished subnet is a row in the CSV (skipped on a rerun), an unfinished one
resumes from its per-epoch checkpoint in ``runs/scratch_bench/<recipe>/<arch>/``. ``shard=(i, k)``
trains every k-th planned subnet from i into its own shard file; a plain run merges shards in plan order.
"""

from __future__ import annotations

import csv
import itertools
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nas_lab.progress import bar as progress_bar
from nas_lab.space import Arch, SearchSpace

BENCH_NAME = "scratch_bench.csv"
FULL_NAME = "scratch_bench_full.csv"
MIDDLE_REFERENCE = "r24_w0.75_k5e4-k5e4_k5e4-k5e4_k5e4-k5e4_k5e4-k5e4"  # the middle subnet of earlier baselines
COLUMNS = ("arch", "resolution", "width", "test_accuracy", "minival_accuracy", "macs", "params",
           "peak_memory_kb", "train_seconds", "recipe", "seed")


@dataclass(frozen=True)
class Recipe:
    """How every subnet of a benchmark is trained (fields map onto :class:`nas_lab.train.TrainConfig`)."""

    name: str
    epochs: int
    train_limit: int = 0        # 0 = the whole 55k training split
    batch_size: int = 128
    lr: float = 0.08

    def describe(self) -> str:
        images = self.train_limit or 55000
        return f"{self.name}:{self.epochs}ep,{images}img,bs{self.batch_size},lr{self.lr}"


RECIPES = {"bench": Recipe("bench", epochs=5), "full": Recipe("full", epochs=12)}


def planned_archs(space: SearchSpace, per_cell: int = 5, seed: int = 0) -> list[Arch]:
    """Largest, smallest, the middle reference, then ``per_cell`` random archs per (resolution, width) cell."""
    rng = random.Random(seed)
    cells = list(itertools.product(space.resolutions, space.widths))
    rng.shuffle(cells)
    out = [space.largest(), space.smallest(), space.parse(MIDDLE_REFERENCE)]
    seen = set(out)
    for _ in range(per_cell):
        for res, width in cells:
            while True:  # terminates: each cell holds ~1e11 archs, collisions are vanishingly rare
                a = space.sample(rng)
                a = Arch(res, width, a.depths, a.kernels, a.expands)
                if a not in seen:
                    break
            seen.add(a)
            out.append(a)
    return out


def fidelity_archs(space: SearchSpace, seed: int = 0) -> list[Arch]:
    """Six bench subnets also trained with the ``full`` recipe: the three references plus the random ones
    at the 25th, 50th and 75th percentile of MACs (so the six spread over the accuracy range)."""
    from nas_lab.efficiency import costs

    plan = planned_archs(space, seed=seed)
    fixed, rest = plan[:3], plan[3:]
    rest = sorted(rest, key=lambda a: costs(a, space).macs)
    return fixed + [rest[int(q * (len(rest) - 1))] for q in (0.25, 0.5, 0.75)]


def shard_path(out_csv: Path, index: int, count: int) -> Path:
    return out_csv.with_name(f"{out_csv.name}.shard{index}of{count}")


def _read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _done(out_csv: Path) -> dict[str, dict[str, str]]:
    """Rows already measured, from ``out_csv`` and every shard file beside it, keyed by arch string."""
    rows: dict[str, dict[str, str]] = {}
    for path in [out_csv, *sorted(out_csv.parent.glob(f"{out_csv.name}.shard*of*"))]:
        if path.exists():
            rows.update({r["arch"]: r for r in _read_rows(path)})
    return rows


def train_one(arch: Arch, recipe: Recipe, seed: int, run_dir: Path, threads: int = 0,
              progress: bool = False) -> dict[str, object]:
    """Train ``arch`` alone with ``recipe`` (resuming from ``run_dir``), evaluate it; returns one CSV row."""
    from nas_lab.dataset_builder import measure_costs
    from nas_lab.evaluate import extract, load_checkpoint, top1_accuracy
    from nas_lab.train import TrainConfig, train

    cfg = TrainConfig(epochs=recipe.epochs, warmup_epochs=0, batch_size=recipe.batch_size, lr=recipe.lr,
                      train_limit=recipe.train_limit, seed=seed, threads=threads, arch=str(arch))
    train(cfg, run_dir, resume=True, progress=progress)
    net = load_checkpoint(run_dir / "checkpoint.pt")
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line.strip()]
    sub = extract(net, arch)
    costs = measure_costs(sub, arch.resolution, net.space.in_channels)
    return {"arch": str(arch), "resolution": arch.resolution, "width": arch.width,
            "test_accuracy": f"{top1_accuracy(sub, 'test', arch.resolution):.2f}",
            "minival_accuracy": f"{top1_accuracy(sub, 'minival', arch.resolution):.2f}",
            "macs": f"{costs['macs']:.4f}", "params": costs["params"],
            "peak_memory_kb": f"{costs['peak_memory_kb']:.4f}",
            "train_seconds": f"{sum(e['seconds'] for e in log[-recipe.epochs:]):.1f}",
            "recipe": recipe.describe(), "seed": seed}


def build(out_csv: Path, recipe: Recipe, archs: list[Arch], seed: int = 0, runs: Path = Path("runs/scratch_bench"),
          shard: tuple[int, int] | None = None, threads: int = 0, progress: bool = True,
          merge_only: bool = False) -> Path:
    """Train every arch of ``archs`` not yet in ``out_csv`` (or its shards); write rows as they finish.

    With ``shard=(i, k)`` only ``archs[i::k]`` are trained, into ``shard_path(out_csv, i, k)``; without it,
    the rows of any shards are merged first and ``out_csv`` is rewritten in plan order at the end.
    ``merge_only`` trains nothing: ``out_csv`` gets the finished rows in plan order (a partial bench that can
    ship with a checksum while the rest trains; a later run resumes from it and its shards).
    """
    if merge_only and shard is not None:
        raise ValueError("merge_only writes the merged CSV: it takes no shard")
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise ValueError(f"shard {index}/{count}: the index must be in 0..{count - 1}")
        target, todo = shard_path(out_csv, index, count), archs[index::count]
    else:
        target, todo = out_csv, archs
    done = _done(out_csv)
    for row in done.values():
        if row["recipe"] != recipe.describe() or int(row["seed"]) != seed:
            raise RuntimeError(f"{out_csv} holds rows of another recipe or seed ({row['recipe']}, seed "
                               f"{row['seed']}); delete it (and its shards) to rebuild")
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(",".join(COLUMNS) + "\n")
    t0 = time.time()
    for i, arch in enumerate(progress_bar([] if merge_only else todo, enabled=progress, desc="scratch bench",
                                          unit="subnet")):
        if str(arch) in done:
            continue
        if progress:
            print(f"[{i + 1}/{len(todo)}] {arch} ({recipe.describe()})", flush=True)
        row = train_one(arch, recipe, seed, runs / recipe.name / str(arch), threads)
        with open(target, "a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow(row)
        done[str(arch)] = {k: str(v) for k, v in row.items()}
        if progress:
            print(json.dumps(row), flush=True)
    if shard is None:  # one file in plan order, shards folded in
        with open(out_csv, "w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(done[str(a)] for a in archs if str(a) in done)
    if progress and merge_only:
        print(f"{sum(str(a) in done for a in archs)} of {len(archs)} planned subnets finished -> {target}")
    elif progress:
        print(f"{len(todo)} subnets in {time.time() - t0:.0f} s -> {target}")
    return target


# ---- loading -------------------------------------------------------------------------------------
@dataclass
class ScratchBench:
    """The benchmark as archs plus one numpy array per measured column (row i describes ``archs[i]``)."""

    archs: list[Arch]
    test_accuracy: np.ndarray
    minival_accuracy: np.ndarray
    macs: np.ndarray                # millions
    params: np.ndarray
    peak_memory_kb: np.ndarray
    train_seconds: np.ndarray
    recipe: str
    seed: int

    def __len__(self) -> int:
        return len(self.archs)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["archs"] = [str(a) for a in self.archs]
        return d


def read_bench(path: str | Path, space: SearchSpace | None = None) -> ScratchBench:
    """Parse a benchmark CSV (every arch validated against ``space``)."""
    return _bench(_read_rows(Path(path)), str(path), space)


def _bench(rows: list[dict[str, str]], source: str, space: SearchSpace | None = None) -> ScratchBench:
    """The benchmark of CSV rows (from a file or from several shards); ``source`` names them in errors."""
    space = space or SearchSpace()
    if not rows:
        raise ValueError(f"{source} holds no rows")
    recipes = {r["recipe"] for r in rows}
    if len(recipes) != 1:
        raise ValueError(f"{source} mixes recipes {sorted(recipes)}")

    def col(name: str, dtype: type = float) -> np.ndarray:
        return np.array([dtype(r[name]) for r in rows])

    return ScratchBench([space.parse(r["arch"]) for r in rows], col("test_accuracy"), col("minival_accuracy"),
                        col("macs"), col("params", int), col("peak_memory_kb"), col("train_seconds"),
                        rows[0]["recipe"], int(rows[0]["seed"]))


def load_scratch_bench(recipe: str = "bench") -> ScratchBench:
    """The shipped benchmark (``recipe='bench'``) or its full-recipe fidelity subset (``'full'``), sha256-checked."""
    from nas_lab import artifacts

    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    return artifacts.load(BENCH_NAME if recipe == "bench" else FULL_NAME)


def ground_truth(recipe: str = "bench") -> tuple[ScratchBench, str]:
    """The from-scratch benchmark (or, ``recipe='full'``, its fidelity subset) and where it came from: the CSV in
    ``data/`` (sha256-checked against the manifest: a corrupt or unrecorded file is an error naming its rebuild)
    when it exists, else the finished rows of its shard files (while a local build runs; ``--merge-only`` turns
    them into the shipped CSV)."""
    from nas_lab import artifacts

    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    name = BENCH_NAME if recipe == "bench" else FULL_NAME
    final = artifacts.data_dir() / name
    if final.exists():
        bench = read_bench(artifacts.verified_path(name))
        return bench, f"{name} ({len(bench)} rows)"
    shards = sorted(final.parent.glob(f"{name}.shard*of*"))
    rows = list(_done(final).values())          # the final CSV is absent: the shards' finished rows
    if not rows:
        rebuild = artifacts.SCRATCH_BENCH_REBUILD if recipe == "bench" else artifacts.SCRATCH_BENCH_FULL_REBUILD
        raise FileNotFoundError(f"{final} does not exist and no shard holds a finished row yet; build it with: "
                                f"{rebuild}")
    bench = _bench(rows, f"the shards of {final}")
    return bench, f"finished rows of {len(shards)} shard files ({len(bench)} rows; the final CSV is not there yet)"
