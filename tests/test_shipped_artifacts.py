"""The shipped files: the registry covers the manifest, and what the files claim is what they hold.

Each test of the accuracy data set, the predictor and the latency table recomputes a claimed figure by
another route: the data set's costs by the analytic formulas, its rows by the seeded plan, one of its
accuracies by extracting the subnet again, the predictor's recorded held-out metrics by predicting the
held-out rows, the latency table's coverage from the space.
"""

import math

import numpy as np
import pytest

from nas_lab import accuracy as acc
from nas_lab import artifacts, latency
from nas_lab.dataset_builder import planned_archs
from nas_lab.space import SearchSpace

SPACE = SearchSpace()


@pytest.fixture(scope="module")
def dataset() -> acc.Dataset:
    return artifacts.load(acc.DATASET_NAME)


def test_every_manifest_entry_is_registered_with_the_same_rebuild_command():
    manifest = artifacts.load_manifest()
    assert set(manifest) <= set(artifacts.ARTIFACTS), set(manifest) - set(artifacts.ARTIFACTS)
    for name, entry in manifest.items():
        assert artifacts.ARTIFACTS[name].rebuild == entry["rebuild"], name
    for module_constant in (acc.DATASET_NAME, acc.PREDICTOR_NAME, latency.TABLE_NAME):
        assert module_constant in artifacts.ARTIFACTS


@pytest.mark.parametrize("name", sorted(artifacts.ARTIFACTS))
def test_every_registered_loader_loads_its_file(name):
    entry = artifacts.ARTIFACTS[name]
    assert entry.name == name and entry.rebuild and entry.description
    assert callable(entry.load_function())  # resolvable even before the file is built
    if name not in artifacts.load_manifest() or not (artifacts.data_dir() / name).exists():
        pytest.skip(f"{name} is not built (and recorded in the manifest) yet")
    assert artifacts.load(name) is not None


def test_an_unregistered_name_is_an_error_listing_the_registry():
    with pytest.raises(artifacts.ArtifactError, match="not a shipped artifact.*supernet.safetensors"):
        artifacts.load("nope.csv")


def test_dataset_is_the_seeded_plan_and_spans_every_resolution_and_width(dataset):
    assert len(dataset) >= 2000
    assert dataset.archs == planned_archs(SPACE, len(dataset), seed=0)
    pairs = {(a.resolution, a.width) for a in dataset.archs}
    assert pairs == {(r, w) for r in SPACE.resolutions for w in SPACE.widths}
    assert 70 < dataset.accuracy.min() and dataset.accuracy.max() < 100
    assert dataset.accuracy.std() > 0.3  # a useful range, not a constant


def test_dataset_costs_equal_the_analytic_formulas(dataset):
    mismatch = acc.cost_mismatch(dataset, SPACE)
    assert set(mismatch) == {"macs", "params", "peak_memory_kb"}
    assert mismatch["macs"] < 5.1e-5 and mismatch["params"] == 0 and mismatch["peak_memory_kb"] < 5.1e-5


def test_one_dataset_row_is_reproduced_by_extracting_the_subnet_again(dataset):
    from nas_lab.evaluate import CALIB_IMAGES, evaluate_arch

    i = 7  # any row: extraction, recalibration (minival 0-1,999), the pass over minival 2,000-4,999: deterministic
    got = evaluate_arch(dataset.archs[i], "minival", start=CALIB_IMAGES)
    assert got == pytest.approx(dataset.accuracy[i], abs=0.021)
    # every accuracy is a multiple of 1/30 % (3,000 images; 2 decimals): measured on the images BN did not see
    # (on all 5,000 minival images only multiples of 0.02 % come out, and 4 in 5 of those are no such multiple)
    assert np.all(np.abs(dataset.accuracy * 30 - np.round(dataset.accuracy * 30)) < 0.16)


def test_shipped_predictor_reports_its_true_held_out_metrics(dataset):
    model = acc.MLPPredictor.shipped()
    info = model.info
    _, test = acc.split(len(dataset), info["test_fraction"], info["seed"])
    assert info["n_train"] + info["n_test"] == len(dataset)
    got = acc.metrics(model(list(np.array(dataset.archs, dtype=object)[test])), dataset.accuracy[test])
    recorded = info["metrics"]["mlp"]
    assert got["rmse"] == pytest.approx(recorded["rmse"], abs=1e-5)
    assert got["kendall_tau"] == pytest.approx(recorded["kendall_tau"], abs=1e-6)
    assert got["rmse"] < info["metrics"]["constant"]["rmse"] / 2  # far better than predicting the mean


def test_shipped_predictor_is_vectorised_and_agrees_with_the_per_arch_path(dataset):
    model = acc.MLPPredictor.shipped()
    archs = dataset.archs[:50]
    from nas_lab.efficiency import to_genes

    assert np.allclose(model(archs), model.predict_genes(to_genes(archs, SPACE)), atol=1e-5)


def test_shipped_latency_table_covers_the_space_and_says_where_it_was_measured():
    table = latency.LatencyTable.shipped()
    assert set(table.entries) == set(latency.space_layers(SPACE))
    assert all(v > 0 and math.isfinite(v) for v in table.entries.values())
    for field in ("machine", "torch", "threads", "date", "passes", "calibration", "validation"):
        assert field in table.meta, field
    assert table.meta["validation"]["n"] >= 100
    assert set(table.meta["raw_entries"]) == set(table.entries)
    # the fastest subnet need not be the smallest (a measured 5x5 depthwise can beat a 3x3), but no sample beats it
    samples = SPACE.restrict(depths=(1,), resolutions=(16,), widths=(0.5,))
    import random
    rng = random.Random(0)
    fastest_sampled = min(table.predict(samples.sample(rng)) for _ in range(300))
    assert 0 < table.minimum() <= min(fastest_sampled, table.predict(SPACE.smallest())) + 1e-9


@pytest.mark.parametrize("name", [pytest.param("largest", marks=pytest.mark.slow), "smallest"])
def test_evaluate_cli_reproduces_the_recorded_reference_accuracy(name):
    """`nas-lab evaluate --arch largest|smallest` gives the test accuracy recorded in supernet.json at export."""
    import json
    import subprocess
    import sys

    recorded = artifacts.load("supernet.json")["reference_accuracy"][name]
    proc = subprocess.run([sys.executable, "-m", "nas_lab.cli", "evaluate", "--arch", name, "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["arch"] == recorded["arch"] == str(SPACE.parse(name))
    assert got["accuracy"] == pytest.approx(recorded["test"], abs=0.05)  # a few images may flip across CPUs
