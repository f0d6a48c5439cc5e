"""Progress bars: a bar in a terminal or a JupyterLab notebook, nothing in pipes, tests or headless kernels."""

from __future__ import annotations

import io
import sys
import types

import numpy as np
import pytest

from nas_lab import progress
from nas_lab.search import evolution_search, random_search


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NAS_LAB_PROGRESS", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)


def fake_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process look like an IPython kernel (an object of class ZMQInteractiveShell)."""
    shell = type("ZMQInteractiveShell", (), {})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


def test_silent_when_nobody_watches() -> None:
    assert not progress.watched()  # pytest captures stderr: not a terminal
    b = progress.bar([1, 2, 3], desc="x")
    assert isinstance(b, progress.Silent) and list(b) == [1, 2, 3]
    with progress.bar(total=5) as b:
        b.update(2)
        b.update(3)
    assert b.n == 5


def test_terminal_gets_a_text_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    err = FakeTTY()
    monkeypatch.setattr(sys, "stderr", err)
    assert progress.watched()
    assert list(progress.bar(range(3), desc="counting", delay=0, file=err)) == [0, 1, 2]
    assert "counting" in err.getvalue() and "3/3" in err.getvalue()


def test_notebook_only_with_a_front_end(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_kernel(monkeypatch)
    assert not progress.watched(), "a headless kernel (nbclient, nbgrader, nas-lab grade) must stay silent"
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/alice/labs/lab4.ipynb")  # set by jupyter_server
    assert progress.watched()


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_LAB_PROGRESS", "1")
    assert progress.watched()
    assert not isinstance(progress.bar([1], delay=0, file=io.StringIO()), progress.Silent)
    monkeypatch.setattr(sys, "stderr", FakeTTY())
    monkeypatch.setenv("NAS_LAB_PROGRESS", "0")
    assert not progress.watched()
    assert isinstance(progress.bar([1], enabled=True), progress.Silent)
    monkeypatch.setenv("NAS_LAB_PROGRESS", "1")
    assert isinstance(progress.bar([1], enabled=False), progress.Silent)  # the caller's own switch wins


def predictor(archs: list) -> np.ndarray:
    return np.array([a.resolution + 10 * a.width for a in archs], dtype=float)


def test_searches_keep_a_given_callback_and_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller's callback still gets every step; with a visible bar instead, the result is the same."""
    ticks: list[int] = []
    quiet = evolution_search(predictor, population=8, generations=5, seed=3, progress=ticks.append)
    assert ticks == [1] * 5
    counted: list[int] = []
    rnd = random_search(predictor, num_samples=300, batch_size=100, seed=3, progress=counted.append)
    assert counted == [100, 100, 100]
    monkeypatch.setenv("NAS_LAB_PROGRESS", "1")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    shown = evolution_search(predictor, population=8, generations=5, seed=3)
    assert shown.history == quiet.history and shown.arch == quiet.arch
    assert random_search(predictor, num_samples=300, batch_size=100, seed=3).history == rnd.history
