"""The subnet explorer, driven without a browser: set widget values, read the numbers and the picture back."""

from __future__ import annotations

import random
import re

import pytest

pytest.importorskip("ipywidgets")

from nas_lab import efficiency  # noqa: E402
from nas_lab.explorer import CSS, METRICS, SubnetExplorer  # noqa: E402
from nas_lab.space import Arch, SearchSpace  # noqa: E402

SPACE = SearchSpace()


class FakeLatency:
    """A latency table stand-in: 1 ms per million MACs (the shipped table is tested in test_latency.py)."""

    def predict(self, arch: Arch) -> float:
        return efficiency.costs(arch).macs


def fake_predictor(archs: list[Arch]) -> list[float]:
    """Accuracy that grows with resolution and width: enough to tell the numbers follow the widgets."""
    return [60 + a.resolution + 10 * a.width for a in archs]


@pytest.fixture()
def explorer() -> SubnetExplorer:
    rng = random.Random(0)
    return SubnetExplorer(SPACE, fake_predictor, FakeLatency(), [SPACE.sample(rng) for _ in range(30)])


def shown(ex: SubnetExplorer) -> dict[str, str]:
    """metric -> the text of its table cell."""
    return dict(re.findall(r"data-metric='(\w+)'>(.*?)</td>", ex.metrics.value))


def test_starts_at_the_largest_subnet(explorer: SubnetExplorer) -> None:
    assert explorer.arch == SPACE.largest()
    assert explorer.current == pytest.approx({**efficiency.costs(SPACE.largest()).as_dict(),
                                              "accuracy": 60 + 28 + 10.0, "latency_ms": explorer.current["macs"]})
    assert CSS in explorer.widget._dom_classes
    assert explorer.picture.value[:8] == b"\x89PNG\r\n\x1a\n"


def test_moving_widgets_updates_the_numbers(explorer: SubnetExplorer) -> None:
    before_png = explorer.picture.value
    explorer.resolution.value = 16
    explorer.width.value = 0.5
    explorer.depths[1].value = 1
    explorer.kernels[0].value = 3
    explorer.expands[0].value = 4
    arch = explorer.arch
    assert (arch.resolution, arch.width, arch.depths[1], arch.kernels[0], arch.expands[0]) == (16, 0.5, 1, 3, 4)
    expected = efficiency.costs(arch, SPACE)
    assert explorer.current["macs"] == pytest.approx(expected.macs)
    assert explorer.current["params"] == expected.params
    assert explorer.current["peak_memory_kb"] == pytest.approx(expected.peak_memory_kb)
    assert explorer.current["accuracy"] == pytest.approx(60 + 16 + 5)
    cells = shown(explorer)
    assert cells["macs"] == f"{expected.macs:.3f} M"
    assert cells["params"] == f"{expected.params:,} "
    assert cells["peak_memory_kb"] == f"{expected.peak_memory_kb:.2f} KB"
    assert str(arch) in cells["arch"]
    assert explorer.picture.value != before_png


def test_slots_beyond_a_stage_depth_are_disabled(explorer: SubnetExplorer) -> None:
    m = SPACE.max_depth
    explorer.depths[2].value = 1
    assert [explorer.kernels[2 * m + b].disabled for b in range(m)] == [False] + [True] * (m - 1)
    assert [explorer.expands[2 * m + b].disabled for b in range(m)] == [False] + [True] * (m - 1)
    explorer.kernels[2 * m + 2].value = 3  # an inactive gene: the subnet, and so the numbers, do not change
    assert explorer.current == explorer.values(explorer.arch)


def test_set_arch_round_trips_and_refreshes_once(explorer: SubnetExplorer, monkeypatch: pytest.MonkeyPatch) -> None:
    arch = SPACE.parse("r20_w0.75_k3e4-k5e6_k7e3_k3e3-k5e4-k7e6_k5e4")
    calls = []
    monkeypatch.setattr(explorer, "png", lambda a=None: calls.append(a) or b"")
    explorer.set_arch(arch)
    assert explorer.arch == arch and len(calls) == 1
    assert explorer.current["macs"] == pytest.approx(efficiency.costs(arch).macs)


def test_pareto_axis_choice_redraws(explorer: SubnetExplorer) -> None:
    before = explorer.picture.value
    explorer.pareto_x.value = "peak_memory_kb"
    assert explorer.picture.value != before
    assert set(METRICS) <= set(explorer.current)


def test_shipped_predictor_and_latency_table() -> None:
    from nas_lab.accuracy import MLPPredictor
    from nas_lab.latency import LatencyTable

    ex = SubnetExplorer(population=[])
    ex.resolution.value = 20
    arch = ex.arch
    assert ex.current["accuracy"] == pytest.approx(float(MLPPredictor.shipped()([arch])[0]), abs=1e-4)
    assert ex.current["latency_ms"] == pytest.approx(LatencyTable.shipped().predict(arch))
    assert ex._repr_mimebundle_()["application/vnd.jupyter.widget-view+json"]["model_id"] == ex.widget.model_id
