"""A subnet explorer for JupyterLab: pick a subnet with widgets, see its costs, accuracy and latency at once.

Lab 4 (ungraded) lets students feel the search space before they search it: moving the resolution slider
or a kernel dropdown shows at once what it does to MACs, parameters, peak memory, the predicted accuracy
and latency, the drawn architecture and the subnet's place against a population on a Pareto plot::

    from nas_lab.explorer import SubnetExplorer
    SubnetExplorer(population=archs)          # the last expression of a cell shows it

Numbers are the library's own: :func:`nas_lab.efficiency.costs`, the accuracy predictor and the latency
table (the shipped ones unless others are given). The picture is a PNG in an ``ipywidgets.Image``, so the
explorer works (and is tested) without a kernel or a browser.

For a browser test (tests/test_browser.py): the explorer's box has the CSS class ``nas-lab-explorer``; each
control has ``nas-lab-explorer-<name>`` (``resolution``, ``width``, ``depth-<stage>``,
``kernel-<stage>-<block>``, ``expand-<stage>-<block>``, ``pareto-x``; stages and blocks count from 1), and
the numbers are in ``nas-lab-explorer-metrics``, a table with one ``<td data-metric="macs">``-style cell per
value of :meth:`SubnetExplorer.values`.
"""

from __future__ import annotations

import html
import io
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nas_lab import efficiency
from nas_lab.space import Arch, SearchSpace

CSS = "nas-lab-explorer"
#: value key -> (label, unit, number format) of the metrics table, in order
METRICS = {
    "macs": ("MACs", "M", "{:.3f}"),
    "params": ("parameters", "", "{:,.0f}"),
    "peak_memory_kb": ("peak memory", "KB", "{:.2f}"),
    "accuracy": ("predicted accuracy", "%", "{:.2f}"),
    "latency_ms": ("predicted latency", "ms", "{:.3f}"),
}
#: x axes offered for the Pareto plot (a key of :data:`METRICS`)
PARETO_X = ("macs", "latency_ms", "peak_memory_kb", "params")
Predictor = Callable[[Sequence[Arch]], Sequence[float]]


def _shipped_predictor() -> Predictor:
    from nas_lab.accuracy import MLPPredictor

    return MLPPredictor.shipped()


def _shipped_latency() -> Any:
    from nas_lab.latency import LatencyTable

    return LatencyTable.shipped()


class SubnetExplorer:
    """Widgets for one subnet of ``space``: controls, a metrics table and a picture (arch + Pareto plot).

    ``predictor`` maps archs to accuracy in percent and ``latency_table`` has ``predict(arch) -> ms`` (the
    shipped ones by default); ``population`` is drawn grey on the Pareto plot with its front (default: 300
    random subnets, seeded). ``arch`` is the starting subnet (default: the largest)."""

    def __init__(self, space: SearchSpace | None = None, predictor: Predictor | None = None,
                 latency_table: Any = None, population: Sequence[Arch] | None = None, arch: Arch | None = None,
                 seed: int = 0) -> None:
        import ipywidgets as w

        self.space = space or SearchSpace()
        self.predictor = predictor or _shipped_predictor()
        self.latency_table = latency_table if latency_table is not None else _shipped_latency()
        rng = random.Random(seed)
        self.population = list(population) if population is not None else [self.space.sample(rng) for _ in range(300)]
        self._population_values = self._values_many(self.population) if self.population else {}
        s, m = self.space, self.space.max_depth
        wide, narrow = {"description_width": "initial"}, {"description_width": "20px"}

        def tagged(widget: Any, name: str) -> Any:
            widget.add_class(f"{CSS}-{name}")
            widget.observe(self._changed, names="value")
            return widget

        self.resolution = tagged(w.SelectionSlider(options=list(s.resolutions), description="resolution",
                                                   continuous_update=False, style=wide), "resolution")
        self.width = tagged(w.Dropdown(options=list(s.widths), description="width", style=wide,
                                       layout=w.Layout(width="130px")), "width")
        self.depths = [tagged(w.SelectionSlider(options=list(s.depths), description=f"stage {i + 1} depth",
                                                continuous_update=False, style=wide,
                                                layout=w.Layout(width="260px")), f"depth-{i + 1}")
                       for i in range(s.num_stages)]
        self.kernels = [tagged(w.Dropdown(options=list(s.kernels), description="k", style=narrow,
                                          layout=w.Layout(width="80px")), f"kernel-{i // m + 1}-{i % m + 1}")
                        for i in range(s.num_slots)]
        self.expands = [tagged(w.Dropdown(options=list(s.expands), description="e", style=narrow,
                                          layout=w.Layout(width="80px")), f"expand-{i // m + 1}-{i % m + 1}")
                        for i in range(s.num_slots)]
        self.pareto_x = tagged(w.Dropdown(options=[(METRICS[k][0], k) for k in PARETO_X], value="macs",
                                          description="Pareto plot x axis", style=wide), "pareto-x")
        self.metrics = w.HTML()
        self.metrics.add_class(f"{CSS}-metrics")
        self.picture = w.Image(format="png")
        self.picture.add_class(f"{CSS}-picture")
        stages = [w.HBox([self.depths[i], *[w.HBox([self.kernels[i * m + b], self.expands[i * m + b]],
                                                   layout=w.Layout(margin="0 12px 0 0")) for b in range(m)]])
                  for i in range(s.num_stages)]
        self.widget = w.VBox([w.HBox([self.resolution, self.width, self.pareto_x]), *stages,
                              w.HBox([self.metrics, self.picture])])
        self.widget.add_class(CSS)
        self._quiet = False
        self.set_arch(arch or self.space.largest())

    # ---- the subnet -------------------------------------------------------------------------------
    @property
    def arch(self) -> Arch:
        """The subnet the widgets describe now."""
        return Arch(self.resolution.value, self.width.value, tuple(d.value for d in self.depths),
                    tuple(k.value for k in self.kernels), tuple(e.value for e in self.expands),
                    self.space.max_depth)

    def set_arch(self, arch: Arch) -> None:
        """Show ``arch``: every control at once, then one refresh."""
        arch = self.space.validate(arch)
        self._quiet = True
        try:
            controls = [self.resolution, self.width, *self.depths, *self.kernels, *self.expands]
            values = [arch.resolution, arch.width, *arch.depths, *arch.kernels, *arch.expands]
            for widget, value in zip(controls, values):  # the nearest option: inactive genes may lie outside
                widget.value = min(widget.options, key=lambda option: abs(option - value))
        finally:
            self._quiet = False
        self.refresh()

    def values(self, arch: Arch | None = None) -> dict[str, float]:
        """MACs (M), params, peak memory (KB), predicted accuracy (%) and latency (ms) of ``arch`` (or the shown)."""
        arch = arch or self.arch
        out: dict[str, float] = dict(efficiency.costs(arch, self.space).as_dict())
        out["accuracy"] = float(np.asarray(self.predictor([arch]), dtype=float)[0])
        out["latency_ms"] = float(self.latency_table.predict(arch))
        return out

    def _values_many(self, archs: Sequence[Arch]) -> dict[str, np.ndarray]:
        out = {k: np.asarray(v, dtype=float) for k, v in efficiency.costs_many(archs, self.space).items()}
        out["accuracy"] = np.asarray(self.predictor(archs), dtype=float)
        out["latency_ms"] = np.array([self.latency_table.predict(a) for a in archs], dtype=float)
        return out

    # ---- display ----------------------------------------------------------------------------------
    def _changed(self, _change: dict) -> None:
        if not self._quiet:
            self.refresh()

    def refresh(self) -> None:
        """Recompute the numbers and the picture for the shown subnet (called on every change)."""
        m = self.space.max_depth
        for i, depth in enumerate(self.depths):  # slots beyond a stage's depth do nothing: grey them out
            for b in range(m):
                self.kernels[i * m + b].disabled = self.expands[i * m + b].disabled = b >= depth.value
        arch = self.arch
        self.current = self.values(arch)
        rows = "".join(f"<tr><th style='text-align:left'>{label}</th><td data-metric='{key}'>"
                       f"{fmt.format(self.current[key])} {unit}</td></tr>"
                       for key, (label, unit, fmt) in METRICS.items())
        self.metrics.value = (f"<table>{rows}<tr><th style='text-align:left'>arch</th>"
                              f"<td data-metric='arch'><code>{html.escape(str(arch))}</code></td></tr></table>")
        self.picture.value = self.png(arch)

    def figure(self, arch: Arch | None = None) -> Any:
        """A matplotlib figure: the drawn arch above, the Pareto plot (accuracy vs the chosen cost) below."""
        from matplotlib.figure import Figure

        from nas_lab.draw import draw_arch
        from nas_lab.search import pareto_front

        arch = arch or self.arch
        current = self.values(arch)
        fig = Figure(figsize=(7.5, 5.5))
        top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [1, 1.6]})
        draw_arch(arch, self.space, ax=top, title=str(arch))
        x_key = self.pareto_x.value
        if self._population_values:
            xs, ys = self._population_values[x_key], self._population_values["accuracy"]
            bottom.scatter(xs, ys, s=8, c="#bbbbbb", label="population")
            front = pareto_front(np.column_stack([xs, ys]), [False, True])
            bottom.plot(xs[front], ys[front], "-o", ms=3, c="#555555", label="Pareto front")
        bottom.scatter([current[x_key]], [current["accuracy"]], s=160, marker="*", c="#d62728", zorder=3,
                       label="this subnet")
        label, unit, _ = METRICS[x_key]
        bottom.set_xlabel(f"{label} ({unit})" if unit else label)
        bottom.set_ylabel("predicted accuracy (%)")
        bottom.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        return fig  # a bare Figure, not pyplot's: the inline backend does not show it a second time

    def png(self, arch: Arch | None = None) -> bytes:
        """The picture of :meth:`figure` as PNG bytes."""
        buf = io.BytesIO()
        self.figure(arch).savefig(buf, format="png", dpi=80)
        return buf.getvalue()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
