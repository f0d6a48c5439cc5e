"""Arch encoding, rank metrics, ridge and MLP predictors on a synthetic data set, persistence, CLI."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from nas_lab import accuracy as acc
from nas_lab.cli import main
from nas_lab.efficiency import to_genes
from nas_lab.space import SearchSpace

torch.set_num_threads(1)
SPACE = SearchSpace()


@pytest.fixture(scope="module")
def data() -> acc.Dataset:
    return acc.synthetic_dataset(900, seed=0, noise=0.2)


@pytest.fixture(scope="module")
def trained(data):
    return acc.train_and_evaluate(data, seed=0, epochs=25)


def test_encoding_shapes_and_one_hot_structure():
    rng = random.Random(0)
    archs = [SPACE.largest(), SPACE.smallest()] + [SPACE.sample(rng) for _ in range(40)]
    x = acc.encode(archs)
    assert x.shape == (len(archs), 4 + 3 + 12 * 6) == (len(archs), acc.num_features(SPACE))
    np.testing.assert_array_equal(x, acc.encode_genes(to_genes(archs)))
    n_blocks = np.array([sum(a.depths) for a in archs])
    np.testing.assert_array_equal(x.sum(1), 2 + 2 * n_blocks)  # res, width, then kernel + expand per block
    # resolution and width one-hots are right; skipped slots are all zeros
    for a, row in zip(archs, x):
        assert row[SPACE.resolutions.index(a.resolution)] == 1
        assert row[4 + SPACE.widths.index(a.width)] == 1
        slots = row[7:].reshape(SPACE.num_stages, SPACE.max_depth, 6)
        for s, d in enumerate(a.depths):
            assert slots[s, d:].sum() == 0 and (slots[s, :d].sum(-1) == 2).all()
            for b in range(d):
                assert slots[s, b, SPACE.kernels.index(a.kernels[s * SPACE.max_depth + b])] == 1
                assert slots[s, b, 3 + SPACE.expands.index(a.expands[s * SPACE.max_depth + b])] == 1


def test_rank_metrics_against_published_scipy_examples():
    # examples from the scipy.stats documentation (kendalltau: tau-b with ties; spearmanr)
    assert acc.kendall_tau([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) == pytest.approx(-0.47140452079103173)
    assert acc.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233)
    np.testing.assert_array_equal(acc.rankdata([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    x = np.arange(50.0)
    assert acc.kendall_tau(x, x) == 1 and acc.kendall_tau(x, -x) == -1
    assert acc.spearman(x, x ** 3) == pytest.approx(1.0)


def test_rank_metrics_against_scipy_if_installed():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 20, 300), rng.normal(size=300).round(1)  # many ties
    y = y + 0.05 * x
    assert acc.kendall_tau(x, y, chunk=37) == pytest.approx(stats.kendalltau(x, y)[0], abs=1e-12)
    assert acc.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


def test_metrics_and_split():
    m = acc.metrics(np.array([1.0, 2.0, 3.0, 5.0]), np.array([1.0, 2.0, 4.0, 4.0]))
    assert m["rmse"] == pytest.approx(np.sqrt(0.5)) and m["mae"] == pytest.approx(0.5)
    tr, te = acc.split(100, 0.2, seed=3)
    assert len(te) == 20 and len(np.intersect1d(tr, te)) == 0 and len(np.union1d(tr, te)) == 100
    np.testing.assert_array_equal(acc.split(100, 0.2, seed=3)[1], te)
    assert not np.array_equal(acc.split(100, 0.2, seed=4)[1], te)


def test_ridge_recovers_an_additive_function(data):
    x = acc.encode(data.archs)
    tr, te = acc.split(len(data), 0.2, 0)
    ridge = acc.RidgePredictor().fit(x[tr], data.accuracy[tr])
    m = acc.metrics(ridge.predict_features(x[te]), data.accuracy[te])
    const_rmse = np.std(data.accuracy[te])
    assert m["rmse"] < 0.5 * const_rmse and m["kendall_tau"] > 0.6
    np.testing.assert_allclose(ridge(data.archs[:5]), ridge.predict_features(x[:5]))


def test_mlp_beats_a_constant_and_ranks_well(trained, data):
    model, report = trained
    assert report["mlp"]["rmse"] < 0.5 * report["constant"]["rmse"]
    assert report["mlp"]["mae"] < 0.5 * report["constant"]["mae"]
    assert report["mlp"]["kendall_tau"] > 0.6 and report["mlp"]["spearman"] > 0.8
    assert report["mlp"]["rmse"] < 1.0  # percentage points; the noise is 0.2
    pred = model(data.archs[:10])
    assert pred.shape == (10,) and np.all((pred > 80) & (pred < 100))  # percent


def test_mlp_training_is_deterministic_and_seeded(trained, data):
    model, _ = trained
    again, _ = acc.train_and_evaluate(data, seed=0, epochs=25)
    other, _ = acc.train_and_evaluate(data, seed=1, epochs=25)
    probe = data.archs[:50]
    np.testing.assert_array_equal(model(probe), again(probe))
    assert not np.allclose(model(probe), other(probe))


def test_output_bias_starts_at_the_mean_accuracy(data):
    x = acc.encode(data.archs[:100])
    model = acc.MLPPredictor().fit(x, data.accuracy[:100], epochs=0)
    assert float(model.net[-1].bias.detach()) == pytest.approx(data.accuracy[:100].mean(), rel=1e-6)


def test_save_and_load_round_trip(trained, tmp_path):
    model, _ = trained
    path = model.save(tmp_path / "p.safetensors")
    loaded = acc.MLPPredictor.load(path)
    probe = [SPACE.largest(), SPACE.smallest()]
    np.testing.assert_array_equal(model(probe), loaded(probe))
    assert loaded.info["seed"] == 0 and "metrics" in loaded.info
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a nas-lab accuracy predictor"):
        acc.MLPPredictor.load(tmp_path / "other.safetensors")


def test_dataset_csv_round_trip_and_units(tmp_path, data):
    small = acc.Dataset(data.archs[:20], data.accuracy[:20])
    path = acc.save_dataset(small, tmp_path / "d.csv")
    back = acc.load_dataset(path)
    assert back.archs == small.archs
    np.testing.assert_allclose(back.accuracy, small.accuracy, atol=1e-4)
    assert set(back.extra) == {"macs", "params", "peak_memory_kb"}
    assert max(acc.cost_mismatch(back).values()) < 1e-3  # the CSV's costs are the analytic ones, rounded
    back.extra["macs"][3] += 0.5
    assert acc.cost_mismatch(back)["macs"] == pytest.approx(0.5, abs=1e-3)
    frac = tmp_path / "f.csv"
    rows = "".join(f"{a},{v / 100}\n" for a, v in zip(small.archs, small.accuracy))
    frac.write_text("arch,minival_accuracy\n" + rows)
    np.testing.assert_allclose(acc.load_dataset(frac).accuracy, small.accuracy, atol=1e-4)  # fractions -> percent
    bad = tmp_path / "b.csv"
    bad.write_text("arch,score\nr16_w0.5_k3e3_k3e3_k3e3_k3e3,0.9\n")
    with pytest.raises(ValueError, match="accuracy"):
        acc.load_dataset(bad)


def test_train_predictor_cli(tmp_path, data, capsys):
    csv_path = acc.save_dataset(acc.Dataset(data.archs[:300], data.accuracy[:300]), tmp_path / "d.csv")
    out = tmp_path / "pred.safetensors"
    code = main(["train-predictor", "--dataset", str(csv_path), "--out", str(out), "--epochs", "5", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 300 and not report["recorded"]
    assert set(report["metrics"]) == {"mlp", "ridge", "constant"}
    assert acc.MLPPredictor.load(out)([SPACE.smallest()]).shape == (1,)


def test_missing_shipped_predictor_names_the_file_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_LAB_DATA", str(tmp_path))
    (tmp_path / "manifest.json").write_text('{"files": {}}')  # a manifest without the predictor
    from nas_lab.artifacts import ArtifactError
    with pytest.raises(ArtifactError, match=r"accuracy_predictor\.safetensors.*nas-lab train-predictor"):
        acc.MLPPredictor.shipped()
