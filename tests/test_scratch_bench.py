"""The from-scratch mini benchmark: its plan, resumable and sharded building, and its loader (tiny recipe)."""

from __future__ import annotations

import collections
import csv
from pathlib import Path

import numpy as np
import pytest

from nas_lab import scratch_bench as sb
from nas_lab.space import SearchSpace

SPACE = SearchSpace()
TINY = sb.Recipe("tiny", epochs=1, train_limit=128, batch_size=64)


def test_plan_is_stratified_seeded_and_distinct() -> None:
    plan = sb.planned_archs(SPACE, per_cell=5, seed=0)
    assert plan[:3] == [SPACE.largest(), SPACE.smallest(), SPACE.parse(sb.MIDDLE_REFERENCE)]
    assert len(plan) == 3 + 5 * 12 and len(set(plan)) == len(plan)
    cells = collections.Counter((a.resolution, a.width) for a in plan[3:])
    assert set(cells.values()) == {5} and len(cells) == len(SPACE.resolutions) * len(SPACE.widths)
    first_round = {(a.resolution, a.width) for a in plan[3:3 + 12]}
    assert len(first_round) == 12  # any prefix of whole rounds is stratified
    assert sb.planned_archs(SPACE, 5, seed=0) == plan and sb.planned_archs(SPACE, 5, seed=1) != plan


def test_fidelity_set_spreads_over_macs() -> None:
    from nas_lab.efficiency import costs

    six = sb.fidelity_archs(SPACE)
    assert len(six) == 6 and six[:3] == sb.planned_archs(SPACE)[:3]
    macs = [costs(a).macs for a in six[3:]]
    assert macs == sorted(macs) and macs[0] < macs[-1]
    assert set(six) <= set(sb.planned_archs(SPACE))


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """Three subnets of a tiny recipe, built as two shards and then merged by a plain run."""
    tmp = tmp_path_factory.mktemp("bench")
    archs = [SPACE.smallest(), SPACE.parse("r16_w0.5_k3e4_k5e3_k3e3_k3e3"), SPACE.parse("r20_w0.5_k3e3_k3e3_k3e3_k3e3")]
    out, runs = tmp / "bench.csv", tmp / "runs"
    sb.build(out, TINY, archs, seed=0, runs=runs, shard=(0, 2), threads=1, progress=False)
    sb.build(out, TINY, archs, seed=0, runs=runs, shard=(1, 2), threads=1, progress=False)
    sb.build(out, TINY, archs, seed=0, runs=runs, threads=1, progress=False)
    return out, archs


def test_shards_merge_in_plan_order_with_every_column(built) -> None:
    out, archs = built
    rows = _rows(out)
    assert [r["arch"] for r in rows] == [str(a) for a in archs]
    assert tuple(rows[0]) == sb.COLUMNS
    assert {r["recipe"] for r in rows} == {TINY.describe()} and {r["seed"] for r in rows} == {"0"}
    assert [r["arch"] for r in _rows(sb.shard_path(out, 1, 2))] == [str(archs[1])]


def test_costs_are_the_analytic_ones(built) -> None:
    from nas_lab.efficiency import costs

    bench = sb.read_bench(built[0])
    for i, arch in enumerate(bench.archs):
        c = costs(arch)
        assert bench.params[i] == c.params
        assert bench.macs[i] == pytest.approx(c.macs, abs=1e-4)
        assert bench.peak_memory_kb[i] == pytest.approx(c.peak_memory_kb, abs=1e-4)
    assert np.all((bench.test_accuracy > 0) & (bench.test_accuracy <= 100)) and np.all(bench.train_seconds >= 0)


def test_a_rerun_trains_nothing_and_keeps_the_rows(built, monkeypatch: pytest.MonkeyPatch) -> None:
    out, archs = built
    before = out.read_text()
    monkeypatch.setattr(sb, "train_one", lambda *a, **k: pytest.fail("a finished subnet was trained again"))
    sb.build(out, TINY, archs, seed=0, runs=out.parent / "runs", threads=1, progress=False)
    assert out.read_text() == before


def test_merge_only_ships_the_finished_rows_and_a_later_run_resumes(built, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    src, archs = built
    out = tmp_path / "bench.csv"
    shard = sb.shard_path(out, 0, 2)                 # only shard 0 (archs 0 and 2) has finished
    shard.write_text(sb.shard_path(src, 0, 2).read_text())
    monkeypatch.setattr(sb, "train_one", lambda *a, **k: pytest.fail("merge_only trained a subnet"))
    sb.build(out, TINY, archs, seed=0, runs=tmp_path / "runs", progress=False, merge_only=True)
    assert [r["arch"] for r in _rows(out)] == [str(archs[0]), str(archs[2])]
    with pytest.raises(ValueError, match="no shard"):
        sb.build(out, TINY, archs, seed=0, shard=(1, 2), merge_only=True, progress=False)
    trained = []
    row1 = next(r for r in _rows(src) if r["arch"] == str(archs[1]))
    monkeypatch.setattr(sb, "train_one", lambda arch, *a, **k: trained.append(str(arch)) or row1)
    sb.build(out, TINY, archs, seed=0, runs=tmp_path / "runs", progress=False)
    assert trained == [str(archs[1])]                # resumes with the missing one only
    assert [r["arch"] for r in _rows(out)] == [str(a) for a in archs]


def test_an_interrupted_subnet_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    """Stopped after one of two epochs, the subnet continues there and ends as an uninterrupted run does."""
    from nas_lab.train import TrainConfig, train

    arch = SPACE.smallest()
    two = sb.Recipe("two", epochs=2, train_limit=128, batch_size=64)
    whole = sb.train_one(arch, two, 0, tmp_path / "whole", threads=1)
    cfg = TrainConfig(epochs=2, warmup_epochs=0, batch_size=64, lr=two.lr, train_limit=128, seed=0, threads=1,
                      arch=str(arch), limit_steps=2)  # 2 steps = the first epoch, then stop
    train(cfg, tmp_path / "resumed", progress=False)
    resumed = sb.train_one(arch, two, 0, tmp_path / "resumed", threads=1)
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    assert resumed["minival_accuracy"] == whole["minival_accuracy"]


def test_other_recipe_or_seed_is_refused(built) -> None:
    out, archs = built
    with pytest.raises(RuntimeError, match="another recipe or seed"):
        sb.build(out, TINY, archs, seed=1, runs=out.parent / "runs", progress=False)
    with pytest.raises(ValueError, match="index must be"):
        sb.build(out, TINY, archs, seed=0, shard=(2, 2), progress=False)


def test_loader_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(sb.COLUMNS) + "\n")
    with pytest.raises(ValueError, match="no rows"):
        sb.read_bench(empty)
    with pytest.raises(ValueError, match="unknown recipe"):
        sb.load_scratch_bench("weekly")
