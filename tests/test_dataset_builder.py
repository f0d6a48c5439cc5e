"""The accuracy data set builder and the evaluate CLI, on the shipped supernet (small, fast cases)."""

import csv
import json
import subprocess
import sys

import pytest

from nas_lab import efficiency
from nas_lab.dataset_builder import build, planned_archs
from nas_lab.space import SearchSpace

SPACE = SearchSpace()


def test_plan_is_balanced_distinct_and_seeded():
    plan = planned_archs(SPACE, 120, seed=0)
    assert len(set(plan)) == 120 and plan == planned_archs(SPACE, 120, seed=0)
    assert plan != planned_archs(SPACE, 120, seed=1)
    pairs = [(a.resolution, a.width) for a in plan]
    assert all(pairs.count(p) == 10 for p in set(pairs)) and len(set(pairs)) == 12  # every width, 1.0 included


def test_build_writes_measured_rows_and_resumes(tmp_path, monkeypatch):
    import nas_lab.dataset_builder as builder
    import nas_lab.evaluate as evaluate

    real_accuracy = evaluate.top1_accuracy
    starts = []
    monkeypatch.setattr(evaluate, "top1_accuracy", lambda m, split, res, limit=None, start=0:
                        starts.append(start) or real_accuracy(m, split, res, 200, start=start))
    out = tmp_path / "acc.csv"
    build(out, n=2, seed=3, progress=False)
    build(out, n=3, seed=3, progress=False)  # resumes: keeps the two rows, adds the third
    with open(out) as f:
        rows = list(csv.DictReader(f))
    plan = planned_archs(SPACE, 3, seed=3)
    assert [r["arch"] for r in rows] == [str(a) for a in plan]
    assert tuple(rows[0]) == builder.COLUMNS
    for row, arch in zip(rows, plan):
        c = efficiency.costs(arch)  # analytic costs agree with the counted ones in the CSV
        assert float(row["macs"]) == pytest.approx(c.macs, abs=1e-4)
        assert int(row["params"]) == c.params
        assert float(row["peak_memory_kb"]) == pytest.approx(c.peak_memory_kb, abs=1e-4)
        assert 0 <= float(row["accuracy"]) <= 100
    assert starts == [evaluate.CALIB_IMAGES] * 3  # accuracy on minival images apart from the BN recalibration's
    with pytest.raises(RuntimeError, match="another plan"):
        build(out, n=3, seed=4, progress=False)


def test_shards_merge_into_the_plan_order(tmp_path, monkeypatch):
    """Two shard processes' rows, merged by a plain run, equal the planned order; a gap is re-measured."""
    import nas_lab.evaluate as evaluate
    from nas_lab.dataset_builder import shard_path

    monkeypatch.setattr(evaluate, "top1_accuracy", lambda m, split, res, limit=None, start=0: 50.0)  # costs only, fast
    out = tmp_path / "acc.csv"
    build(out, n=5, seed=2, progress=False, shard=(0, 2))  # plan rows 0, 2, 4
    build(out, n=3, seed=2, progress=False, shard=(1, 2))  # plan row 1 only: row 3 stays missing
    assert [r["arch"] for r in csv.DictReader(open(shard_path(out, 1, 2)))] == [str(planned_archs(SPACE, 3, 2)[1])]
    build(out, n=5, seed=2, progress=False)  # merges rows 0-2, measures 3 and 4 itself
    rows = list(csv.DictReader(open(out)))
    assert [r["arch"] for r in rows] == [str(a) for a in planned_archs(SPACE, 5, seed=2)]
    with pytest.raises(ValueError, match="index must be"):
        build(out, n=5, seed=2, progress=False, shard=(2, 2))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "nas_lab.cli", *args], capture_output=True, text=True, timeout=300)


def test_evaluate_cli_json():
    proc = _cli("evaluate", "--arch", "smallest", "--split", "minival", "--limit", "300", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {"arch", "accuracy", "macs", "params", "peak_memory_kb"} <= set(result)
    smallest = efficiency.costs(SPACE.smallest())
    assert result["arch"] == str(SPACE.smallest()) and result["params"] == smallest.params
    assert result["macs"] == pytest.approx(smallest.macs, abs=1e-4) and 10 < result["accuracy"] <= 100


@pytest.mark.parametrize("arch, fragment", [("r32_w1.0_k3e3_k3e3_k3e3_k3e3", "allowed values: [16, 20, 24, 28]"),
                                            ("r28_w1.0_k4e3_k3e3_k3e3_k3e3", "allowed values: [3, 5, 7]"),
                                            ("biggest", "malformed")])
def test_evaluate_cli_rejects_archs_outside_the_space(arch, fragment):
    proc = _cli("evaluate", "--arch", arch)
    assert proc.returncode != 0 and fragment in proc.stderr


def test_evaluate_cli_on_a_training_checkpoint(tmp_path):
    from nas_lab.train import TrainConfig, train

    train(TrainConfig(limit_steps=1, batch_size=16, train_limit=64, warmup_epochs=0, num_random=0, threads=1),
          tmp_path, progress=False)
    proc = _cli("evaluate", "--arch", "r20_w0.75_k3e4_k5e3_k7e6_k3e3", "--checkpoint", str(tmp_path / "checkpoint.pt"),
                "--split", "minival", "--limit", "100", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["arch"] == "r20_w0.75_k3e4_k5e3_k7e6_k3e3"
    missing = _cli("evaluate", "--arch", "smallest", "--checkpoint", str(tmp_path / "nope.pt"))
    assert missing.returncode != 0 and "nope.pt" in missing.stderr
