"""Test tiers: every test gets exactly one tier marker from its file (see docs/ARCHITECTURE.md, "Tests").

* ``unit``      the library and the CLI: fast, no notebook kernels (``make test-fast``, under 2 minutes)
* ``notebooks`` every lab notebook end to end (solution, release, autograde)
* ``grading``   ``nas-lab grade`` on the adversarial corpus, in real kernels
* ``browser``   JupyterLab driven in Chromium
``slow`` may be added on top of a tier for single tests of minutes.
"""

from __future__ import annotations

import pytest
import torch

TIERS = ("unit", "notebooks", "grading", "browser")
#: test file stem -> tier; a file not listed here is ``unit``
FILE_TIERS = {"test_notebooks": "notebooks", "test_grading": "grading", "test_browser": "browser",
              "test_hub": "browser", "test_exchange": "grading", "test_student_dist": "notebooks"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = FILE_TIERS.get(item.path.stem, "unit")
        item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one torch thread is faster (no OpenMP spinning on a busy 2-core machine); restored after.

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
