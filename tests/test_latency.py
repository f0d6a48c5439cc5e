"""Latency lookup table: keys, sum prediction (scalar and vectorised), measuring with tiny timings, validation."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from nas_lab import latency as lat
from nas_lab.efficiency import Layer, arch_layers, to_genes
from nas_lab.space import SearchSpace

torch.set_num_threads(1)
SPACE = SearchSpace()
TINY = SearchSpace(resolutions=(16,), widths=(0.5,), depths=(1, 2), kernels=(3, 5), expands=(3,),
                   stage_channels=(8, 16), stage_strides=(1, 2))


def _fake_table(space: SearchSpace = SPACE) -> lat.LatencyTable:
    """Made-up but shape-dependent values: 1 us per 1k MACs + 5 us per layer."""
    entries = {k: 0.005 + layer.macs() / 1e6 for k, layer in lat.space_layers(space).items()}
    return lat.LatencyTable(entries, {"threads": 1}, space)


def test_layer_keys():
    assert lat.layer_key(Layer("expand", 16, 96, 1, 1, 14, 14)) == "expand1x1_i16_o96_h14"
    assert lat.layer_key(Layer("depthwise", 96, 96, 7, 1, 14, 14, 3136)) == "dw_k7_c96_h14_s1"
    assert lat.layer_key(Layer("project", 96, 24, 1, 1, 7, 7)) == "project1x1_i96_o24_h7"
    assert lat.layer_key(Layer("stem", 1, 16, 3, 2, 28, 14)) == "stem_i1_o16_h28_s2"
    assert lat.layer_key(Layer("pool+linear", 128, 10, 1, 1, 4, 1)) == "pool+linear_c128_h4_o10"
    with pytest.raises(ValueError):
        lat.layer_key(Layer("conv", 1, 1, 1, 1, 1, 1))


def test_space_layers_cover_every_layer_of_every_subnet():
    keys = lat.space_layers(SPACE)
    rng = random.Random(0)
    for arch in [SPACE.largest(), SPACE.smallest()] + [SPACE.sample(rng) for _ in range(100)]:
        for layer in arch_layers(arch):
            assert keys[lat.layer_key(layer)]._replace(residual=0) == layer._replace(residual=0)
    assert len(keys) < 2000  # measurable in about a minute


def test_prediction_is_the_sum_over_layers_and_vectorises():
    table = _fake_table()
    rng = random.Random(1)
    archs = [SPACE.largest(), SPACE.smallest()] + [SPACE.sample(rng) for _ in range(60)]
    scalar = np.array([table.predict(a) for a in archs])
    manual = [sum(table.entries[lat.layer_key(layer)] for layer in arch_layers(a)) for a in archs]
    np.testing.assert_allclose(scalar, manual, rtol=1e-12)
    np.testing.assert_allclose(table.predict_genes(to_genes(archs)), scalar, rtol=1e-12)
    assert table.minimum() == pytest.approx(table.predict(SPACE.smallest()))  # monotone fake table
    assert table.minimum() <= scalar.min()


def test_missing_key_names_the_rebuild_command():
    table = _fake_table()
    del table.entries[lat.layer_key(arch_layers(SPACE.smallest())[0])]
    with pytest.raises(KeyError, match="nas-lab measure-latency"):
        table.predict(SPACE.smallest())


def test_measure_tiny_table_save_load_and_validate(tmp_path):
    table = lat.measure_table(TINY, threads=1, min_run_time=0.002, progress=False)
    assert set(table.entries) == set(lat.space_layers(TINY))
    assert all(v > 0 for v in table.entries.values())
    for field in ("machine", "torch", "threads", "date", "min_run_time_s"):
        assert field in table.meta
    assert table.meta["torch"] == torch.__version__ and table.meta["threads"] == 1
    path = table.save(tmp_path / "t.json")
    doc = json.loads(path.read_text())
    assert doc["entries"] and doc["space"]["resolutions"] == [16]
    back = lat.LatencyTable.load(path)
    assert back.entries == table.entries and back.space == TINY
    arch = TINY.largest()
    assert back.predict(arch) == pytest.approx(table.predict(arch))
    report = lat.validate(back, n=3, seed=0, min_run_time=0.005, progress=False)
    assert report["n"] == 3 and len(report["rows"]) == 3
    assert 0 <= report["within_10pct"] <= 1 and report["mape_pct"] >= 0
    assert all(r["measured_ms"] > 0 and r["predicted_ms"] > 0 for r in report["rows"])


def test_measuring_only_some_keys_and_thread_count_restored():
    keys = sorted(lat.space_layers(TINY))[:3]
    before = torch.get_num_threads()
    table = lat.measure_table(TINY, threads=1, min_run_time=0.001, keys=keys, progress=False)
    assert sorted(table.entries) == keys and torch.get_num_threads() == before


def test_validation_metrics_by_hand():
    m = lat.validation_metrics([1.0, 2.0, 3.0, 4.2], [1.0, 2.5, 3.0, 4.0])
    assert m["within_10pct"] == 0.75  # 2.0 vs 2.5 is -20%; 4.2 vs 4.0 is +5%
    assert m["mape_pct"] == pytest.approx(100 * (0 + 0.2 + 0 + 0.05) / 4)
    assert m["pearson_r"] == pytest.approx(np.corrcoef([1, 2, 3, 4.2], [1, 2.5, 3, 4])[0, 1])


def test_layer_module_runs_the_layer_shape():
    for layer in list(lat.space_layers(TINY).values())[:20]:
        module, x = lat.layer_module(layer)
        with torch.no_grad():
            y = module(x)
        if layer.kind == "pool+linear":
            assert y.shape == (1, layer.c_out)
        else:
            assert y.shape == (1, layer.c_out, layer.h_out, layer.h_out)


def test_missing_shipped_table_names_the_file_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_LAB_DATA", str(tmp_path))
    (tmp_path / "manifest.json").write_text('{"files": {}}')  # a manifest without the table
    from nas_lab.artifacts import ArtifactError
    with pytest.raises(ArtifactError, match=r"latency_table\.json.*nas-lab measure-latency"):
        lat.LatencyTable.shipped()


def test_passes_keep_the_fastest_measurement(monkeypatch):
    """With passes > 1 each key (and each validated subnet) keeps its minimum over the passes."""
    keys = sorted(lat.space_layers(TINY))[:4]
    times = iter([5.0, 1.0, 3.0, 2.0,  4.0, 2.0, 1.0, 9.0,  6.0, 0.5, 7.0, 3.0])  # 3 passes x 4 keys
    monkeypatch.setattr(lat, "time_ms", lambda *a, **k: next(times))
    table = lat.measure_table(TINY, keys=keys, progress=False, passes=3)
    assert [table.entries[k] for k in keys] == [4.0, 0.5, 1.0, 2.0]
    assert table.meta["passes"] == 3
    subnet_times = iter([3.0, 2.0, 1.0, 4.0])  # 2 passes x 2 subnets
    monkeypatch.setattr(lat, "measure_subnet", lambda *a, **k: next(subnet_times))
    table.entries.update({k: 0.1 for k in lat.space_layers(TINY)})
    report = lat.validate(table, n=2, progress=False, passes=2)
    assert [r["measured_ms"] for r in report["rows"]] == [1.0, 2.0] and report["passes"] == 2


def test_calibration_never_makes_an_entry_negative(monkeypatch):
    """Subnets faster per layer than the sum suggests (a negative least-squares overhead): the overhead is
    clamped to 0, the scale alone is fitted, and every calibrated entry stays positive."""
    table = _fake_table()

    def fake_measure(arch, space=None, threads=1, min_run_time=0.2):
        return 1.5 * table.predict(arch) - 0.004 * len(arch_layers(arch, SPACE))
    monkeypatch.setattr(lat, "measure_subnet", fake_measure)
    cal = lat.calibrate(table, n=12, seed=1, progress=False)
    c = cal.meta["calibration"]
    assert c["per_layer_ms"] == 0.0 and 1.0 < c["scale"] < 1.5
    assert min(cal.entries.values()) > 0


def test_calibration_recovers_scale_and_per_layer_overhead(monkeypatch):
    """If subnets take 1.3 x the layer sum + 0.02 ms per layer, the fit finds exactly that and the
    calibrated table (still a plain sum) predicts them; raw entries are kept."""
    table = _fake_table()
    raw = dict(table.entries)

    def fake_measure(arch, space=None, threads=1, min_run_time=0.2):
        return 1.3 * table.predict(arch) + 0.02 * len(arch_layers(arch, SPACE))
    monkeypatch.setattr(lat, "measure_subnet", fake_measure)
    cal = lat.calibrate(table, n=12, seed=1, progress=False)
    c = cal.meta["calibration"]
    assert c["scale"] == pytest.approx(1.3) and c["per_layer_ms"] == pytest.approx(0.02)
    assert c["fit_within_10pct"] == 1.0 and cal.meta["raw_entries"] == dict(sorted(raw.items()))
    arch = SPACE.sample(random.Random(9))
    assert cal.predict(arch) == pytest.approx(fake_measure(arch))
    assert cal.predict_genes(to_genes([arch], SPACE))[0] == pytest.approx(fake_measure(arch))
