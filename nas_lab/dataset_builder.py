"""The accuracy data set: (arch, minival accuracy, MACs, params, peak memory) of random subnets.

Archs are sampled with a seed, balanced over every (resolution, width) pair so each gets the same number
of rows; each is extracted from the supernet, BN-recalibrated on the first 2,000 minival images at its own
resolution and evaluated on the other 3,000 (images 2,000-4,999: never the ones that set its statistics).
Rows are appended to a CSV as they are measured, so an interrupted build resumes where it stopped (same seed,
same archs, same order).
"""

from __future__ import annotations

import csv
import itertools
import random
import time
from pathlib import Path

import torch

from nas_lab.progress import bar as progress_bar
from nas_lab.space import Arch, SearchSpace

COLUMNS = ("arch", "resolution", "width", "accuracy", "macs", "params", "peak_memory_kb")


def planned_archs(space: SearchSpace, n: int, seed: int = 0) -> list[Arch]:
    """``n`` distinct random archs, cycling through every (resolution, width) pair in a seeded order."""
    rng = random.Random(seed)
    pairs = list(itertools.product(space.resolutions, space.widths))
    seen: set[Arch] = set()
    out: list[Arch] = []
    for i in itertools.count():
        if len(out) == n:
            return out
        if i > 100 * n:
            raise RuntimeError("could not draw enough distinct archs")  # unreachable for spaces this big
        res, width = pairs[len(out) % len(pairs)]
        a = space.sample(rng)
        a = Arch(res, width, a.depths, a.kernels, a.expands)
        if a not in seen:
            seen.add(a)
            out.append(a)
    return out


def measure_costs(model: torch.nn.Module, resolution: int, in_channels: int = 1) -> dict[str, float]:
    """MACs (millions), params and peak activation memory (KB) of a built model, by counting."""
    from nas_lab.counting import count_model
    from nas_lab.memory import peak_memory

    x = torch.zeros(1, in_channels, resolution, resolution)
    counts = count_model(model, x)
    return {"macs": counts.macs / 1e6, "params": counts.total_params,
            "peak_memory_kb": peak_memory(model, x).peak_kb}


def shard_path(out_csv: Path, index: int, count: int) -> Path:
    """Where shard ``index`` of ``count`` writes its rows (beside the final CSV)."""
    return out_csv.with_name(f"{out_csv.name}.shard{index}of{count}")


def _read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def merge_shards(out_csv: Path, plan: list[Arch]) -> int:
    """Start ``out_csv`` from the rows that shard files already hold, in plan order; returns the row count.

    Only the leading run of planned archs that some shard measured is written; the rest is measured by the
    caller as usual (so merging incomplete shards loses nothing but the rows after the first gap).
    """
    rows: dict[str, list[str]] = {}
    for part in sorted(out_csv.parent.glob(f"{out_csv.name}.shard*of*")):
        for row in _read_rows(part):
            rows[row["arch"]] = [row[c] for c in COLUMNS]
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        count = 0
        for arch in plan:
            if str(arch) not in rows:
                break
            writer.writerow(rows[str(arch)])
            count += 1
    return count


def build(out_csv: Path, n: int = 2000, seed: int = 0, progress: bool = True,
          shard: tuple[int, int] | None = None) -> Path:
    """Measure ``n`` planned archs into ``out_csv`` (resumes: rows already there are kept).

    ``shard=(i, k)`` measures only every k-th planned arch starting at i into ``shard_path(out_csv, i, k)``:
    run k processes (one per core), then once without ``shard`` to merge their rows in plan order.
    """
    from nas_lab.evaluate import CALIB_IMAGES, extract, load_supernet, top1_accuracy

    net = load_supernet()
    plan = planned_archs(net.space, n, seed)
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise ValueError(f"shard {index}/{count}: the index must be in 0..{count - 1}")
        out_csv, plan = shard_path(out_csv, index, count), plan[index::count]
    elif not out_csv.exists():
        merge_shards(out_csv, plan)
    done: list[str] = []
    if out_csv.exists():
        done = [row["arch"] for row in _read_rows(out_csv)]
        if done != [str(a) for a in plan[:len(done)]]:
            raise RuntimeError(f"{out_csv} was built with another plan (seed or space); delete it to rebuild")
    else:
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        out_csv.write_text(",".join(COLUMNS) + "\n")
    t0 = time.time()
    with open(out_csv, "a", newline="") as f:
        writer = csv.writer(f)
        for arch in progress_bar(plan[len(done):], initial=len(done), total=len(plan), enabled=progress,
                                 mininterval=10, desc="accuracy data set", unit="subnet"):
            sub = extract(net, arch)
            acc = top1_accuracy(sub, "minival", arch.resolution, start=CALIB_IMAGES)  # images BN did not see
            costs = measure_costs(sub, arch.resolution, net.space.in_channels)
            writer.writerow([str(arch), arch.resolution, arch.width, f"{acc:.2f}", f"{costs['macs']:.4f}",
                             costs["params"], f"{costs['peak_memory_kb']:.4f}"])
            f.flush()
    if progress:
        print(f"measured {len(plan) - len(done)} subnets in {time.time() - t0:.0f} s -> {out_csv}")
    return out_csv
