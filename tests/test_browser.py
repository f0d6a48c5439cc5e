"""The labs as students run them: JupyterLab in a real browser (Debian's Chromium driven by Playwright).

One JupyterLab per session, started here on a free local port with a token, serves a temporary copy of
``solutions/`` and ``labs/``. For each lab (parametrised over ``solutions/<lab>/``):

* the *solution* notebook: Run All from the Run menu, wait for the kernel to go idle, then no error output,
  every code cell (the last included) ran, and every plot is an image that the browser drew;
* the *student* notebook: run the cells above the first answer's test cell, then that test cell, and the
  student sees ``NotImplementedError`` there (the answer is not written yet);
* the subnet explorer (``nas_lab.explorer``) in a notebook of its own: choosing another width and pressing
  a key on the resolution slider change the numbers on the page; a lab notebook that shows an explorer
  after Run All gets the same check.

A screenshot per lab is saved under pytest's temporary folder (``<basetemp>/browser-screenshots/``, printed
at the end) or under ``$NAS_LAB_ARTIFACTS`` when set. Needs ``/usr/bin/chromium`` (or ``$NAS_LAB_CHROMIUM``)
and the ``playwright`` Python package (no browser download): either missing fails these tests with the
commands that install them (``make test`` installs both: the dev extra and target ``test-deps``);
``-m "not browser"`` leaves these tests out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
LABS = sorted(p.name for p in (ROOT / "solutions").iterdir() if (p / f"{p.name}.ipynb").is_file())
STUDENT_FAILURE = "NotImplementedError"  # what an unanswered question shows in its test cell
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"]
INSTALL = ("the browser tests need Debian's Chromium and Playwright for Python (no browser download):\n"
           "    apt-get install -y chromium          # as root; or set NAS_LAB_CHROMIUM=/path/to/chromium\n"
           "    .venv/bin/pip install -e '.[dev]'     # playwright is in the dev extra\n"
           "`make test` does both (the dev extra, target test-deps); skip these tests: pytest -m 'not browser'")
KERNEL_READY_S = 180
RUN_ALL_S = 1200  # a guard against a hang, not a performance check
# JupyterLab settings: every cell in the page (no windowing), no news or update checks (offline).
SETTINGS = {"@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
            "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
                {"fetchNews": "false", "checkForUpdates": False}}

# The open notebook as JupyterLab's models see it (the app is exposed with LabApp.expose_app_in_browser).
STATE_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {kernel: kernel ? kernel.status : null, cells: panel.content.widgets.map(cell => {
    const code = cell.model.type === 'code';
    const imgs = code ? [...cell.node.querySelectorAll('.jp-OutputArea-output img, .jp-OutputArea-output svg')] : [];
    return {type: cell.model.type, count: code ? cell.model.executionCount : null,
            state: code ? cell.model.executionState : null, outputs: code ? cell.model.outputs.toJSON() : [],
            drawn: imgs.filter(i => i.tagName.toLowerCase() === 'svg' || (i.complete && i.naturalWidth > 0)).length,
            text: code ? cell.node.querySelector('.jp-Cell-outputWrapper').innerText : ''};
  })};
}"""
READY_JS = """() => { const p = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = p && p.sessionContext && p.sessionContext.session && p.sessionContext.session.kernel;
  return !!(k && k.status === 'idle' && p.content && p.content.widgets.length); }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_path() -> str:
    """The Chromium to drive: ``$NAS_LAB_CHROMIUM`` or Debian's; a failure saying how to install it."""
    for candidate in (os.environ.get("NAS_LAB_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium",
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail(f"Chromium not found.\n{INSTALL}", pytrace=False)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium under Playwright (a fresh profile; flags for a machine without network)."""
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"the playwright package is not installed.\n{INSTALL}", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = Path(os.environ.get("NAS_LAB_ARTIFACTS") or tmp_path_factory.getbasetemp()) / "browser-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    print(f"\nbrowser screenshots: {folder}")


@dataclass
class Lab:
    """A running JupyterLab: where it is, its token and the folder it serves."""

    url: str
    token: str
    root: Path

    def notebook(self, path: str) -> str:
        """The URL that opens ``path`` in a fresh workspace (``reset``: no tabs left from an earlier test)."""
        return f"{self.url}/lab/tree/{path}?reset&token={self.token}"

    def api(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Stop every kernel (each lab's kernel holds 1-1.5 GB; they would pile up over the tests)."""
        for kernel in self.api("kernels"):
            self.api(f"kernels/{kernel['id']}", "DELETE")


@pytest.fixture(scope="session")
def jupyterlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A JupyterLab serving copies of solutions/ and labs/ (plus explorer.ipynb)."""
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "root"
    for folder in ("solutions", "labs"):
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    nbformat.write(explorer_notebook(), root / "explorer.ipynb")
    for name, value in SETTINGS.items():
        (base / "settings" / name).parent.mkdir(parents=True, exist_ok=True)
        (base / "settings" / name).write_text(json.dumps(value))
    port, token = _free_port(), "nas-lab-browser-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(base / "config"), "JUPYTER_DATA_DIR": str(base / "data"),
           "JUPYTER_RUNTIME_DIR": str(base / "runtime"), "IPYTHONDIR": str(base / "ipython"),
           "JUPYTER_PLATFORM_DIRS": "1"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
           f"--LabApp.user_settings_dir={base / 'settings'}", f"--LabApp.workspaces_dir={base / 'workspaces'}",
           *(["--allow-root"] if os.geteuid() == 0 else [])]
    log = open(base / "jupyterlab.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(base / 'jupyterlab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield Lab(url, token, root)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def explorer_notebook() -> nbformat.NotebookNode:
    """A notebook showing a subnet explorer over a small seeded population (what Lab 4 may show)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        "import random\nfrom nas_lab.explorer import SubnetExplorer\nfrom nas_lab.space import SearchSpace\n"
        "space = SearchSpace()\nrng = random.Random(0)\n"
        "SubnetExplorer(space, population=[space.sample(rng) for _ in range(100)])")]
    return nb


# ---- driving the page ---------------------------------------------------------------------------------
def open_notebook(page: Any, lab: Lab, path: str) -> None:
    """Open ``path`` (relative to the served root) and wait until its kernel is idle."""
    page.goto(lab.notebook(path))
    page.wait_for_function(READY_JS, timeout=KERNEL_READY_S * 1000)


def menu(page: Any, menu_name: str, command: str) -> None:
    """Click ``menu_name`` in the menu bar, then the item that runs ``command``."""
    page.get_by_role("menuitem", name=menu_name, exact=True).click()
    page.locator(f"li.lm-Menu-item[data-command='{command}']").click()


def state(page: Any) -> dict:
    return page.evaluate(STATE_JS)


def wait_until_done(page: Any, timeout_s: float = RUN_ALL_S) -> dict:
    """Wait until something ran and nothing runs or waits any more, twice in a row; the notebook's state."""
    deadline, quiet = time.monotonic() + timeout_s, 0
    while time.monotonic() < deadline:
        s = state(page)
        started = any(c["count"] is not None or c["outputs"] for c in s["cells"])
        busy = s["kernel"] != "idle" or any(c["state"] == "running" for c in s["cells"])
        quiet = quiet + 1 if started and not busy else 0
        if quiet >= 2:
            return s
        page.wait_for_timeout(1000)
    pytest.fail(f"the notebook was still running after {timeout_s} s")


def errors(cells: list[dict]) -> list[str]:
    return [f"cell {i}: {o['ename']}: {o['evalue'][:300]}" for i, c in enumerate(cells)
            for o in c["outputs"] if o["output_type"] == "error"]


def images(cell: dict) -> int:
    return sum(1 for o in cell["outputs"] if any(k.startswith("image/") for k in o.get("data", {})))


def unrendered_figures(cell: dict) -> int:
    """Outputs that are only a matplotlib figure's repr: a plot that did not become an image."""
    return sum(1 for o in cell["outputs"] if set(o.get("data", {})) == {"text/plain"}
               and str(o["data"]["text/plain"]).startswith("<Figure size"))


MACS_JS = "() => document.querySelector(\".nas-lab-explorer-metrics [data-metric='macs']\").innerText"


def check_explorer(page: Any) -> None:
    """If the page shows a subnet explorer (nas_lab.explorer): another width, then the resolution slider moved
    with the keyboard, each change the MACs shown."""
    box = page.locator(".nas-lab-explorer").first
    if not box.count():
        return
    box.locator(".nas-lab-explorer-metrics [data-metric='macs']").wait_for(timeout=60_000)

    def changes(action: Any) -> None:
        before = page.evaluate(MACS_JS)
        action()
        page.wait_for_function(f"(old) => ({MACS_JS})() !== old", arg=before, timeout=60_000)

    width = box.locator(".nas-lab-explorer-width select")
    other = width.evaluate("s => [...s.options].map(o => o.value).find(v => v !== s.value)")
    changes(lambda: width.select_option(value=other))
    handle = box.locator(".nas-lab-explorer-resolution .noUi-handle")
    at_start = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemin")
    handle.focus()
    changes(lambda: handle.press("End" if at_start else "Home"))
    assert re.fullmatch(r"[\d.]+ M", page.evaluate(MACS_JS).strip()), page.evaluate(MACS_JS)
    wait_until_done(page, 300)  # the picture is redrawn last: let it finish before the screenshot


def screenshot(page: Any, folder: Path, name: str) -> None:
    try:
        page.screenshot(path=str(folder / f"{name}.png"))
    except Exception as err:  # noqa: BLE001 - a screenshot is a diagnostic, never the failure itself
        print(f"screenshot {name} failed: {err}")


@pytest.fixture()
def page(browser: Any, jupyterlab: Lab) -> Iterator[Any]:
    """A page in a fresh browser context; afterwards its kernels are stopped."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    p = context.new_page()
    p.set_default_timeout(60_000)
    yield p
    context.close()
    jupyterlab.shutdown_kernels()


# ---- the tests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("lab", LABS)
def test_solution_runs_in_the_browser(lab: str, jupyterlab: Lab, page: Any, screenshots: Path) -> None:
    try:
        open_notebook(page, jupyterlab, f"solutions/{lab}/{lab}.ipynb")
        menu(page, "Run", "runmenu:run-all")
        cells = wait_until_done(page)["cells"]
        assert not errors(cells), f"{lab}: errors after Run All:\n" + "\n".join(errors(cells))
        code = [i for i, c in enumerate(cells) if c["type"] == "code"]
        not_run = [i for i in code if cells[i]["count"] is None]
        assert not not_run, f"{lab}: cells {not_run} did not run (the last code cell is {code[-1]})"
        for i, c in enumerate(cells):
            assert not unrendered_figures(c), f"{lab}: cell {i} shows a figure as text, not as an image"
            assert c["drawn"] >= images(c), f"{lab}: cell {i} has {images(c)} images, {c['drawn']} drawn"
        check_explorer(page)
        page.locator(".jp-NotebookPanel:visible .jp-CodeCell").last.scroll_into_view_if_needed()
    finally:
        screenshot(page, screenshots, f"{lab}-solution")


def first_test_cell(nb: nbformat.NotebookNode) -> int:
    """Index of the test cell of the first answer (the first graded, non-answer code cell after it)."""
    meta = [c.metadata.get("nbgrader", {}) for c in nb.cells]
    first = next(i for i, m in enumerate(meta) if m.get("solution") and nb.cells[i].cell_type == "code")
    return next(i for i in range(first + 1, len(nb.cells)) if meta[i].get("grade") and not meta[i].get("solution"))


@pytest.mark.parametrize("lab", LABS)
def test_student_sees_the_failure_message(lab: str, jupyterlab: Lab, page: Any, screenshots: Path) -> None:
    index = first_test_cell(nbformat.read(jupyterlab.root / "labs" / lab / f"{lab}.ipynb", as_version=4))
    try:
        open_notebook(page, jupyterlab, f"labs/{lab}/{lab}.ipynb")
        cell = page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(index)
        cell.locator(".jp-InputPrompt").click()
        menu(page, "Run", "notebook:run-all-above")
        above = wait_until_done(page)["cells"][:index]
        assert not errors(above), f"{lab}: errors above the first test cell:\n" + "\n".join(errors(above))
        cell.locator(".jp-InputPrompt").click()
        page.keyboard.press("Control+Enter")  # run the selected cell, stay on it
        page.wait_for_function(f"() => window.jupyterapp.shell.currentWidget.content.widgets[{index}]"
                               ".model.executionCount !== null", timeout=RUN_ALL_S * 1000)
        got = wait_until_done(page)["cells"][index]
        enames = [o["ename"] for o in got["outputs"] if o["output_type"] == "error"]
        assert enames == [STUDENT_FAILURE], f"{lab}: test cell {index} raised {enames}, expected {STUDENT_FAILURE}"
        cell.scroll_into_view_if_needed()
        assert STUDENT_FAILURE in cell.locator(".jp-OutputArea").inner_text()
    finally:
        screenshot(page, screenshots, f"{lab}-student")


def test_explorer_numbers_follow_the_widgets(jupyterlab: Lab, page: Any, screenshots: Path) -> None:
    try:
        open_notebook(page, jupyterlab, "explorer.ipynb")
        menu(page, "Run", "runmenu:run-all")
        cells = wait_until_done(page)["cells"]
        assert not errors(cells), "\n".join(errors(cells))
        page.locator(".nas-lab-explorer").wait_for(timeout=60_000)
        check_explorer(page)
    finally:
        screenshot(page, screenshots, "explorer")
