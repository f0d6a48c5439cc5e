"""The student distribution: no solution or hidden test inside, installs in a fresh venv, every lab runs to its
first unanswered question (a NotImplementedError), using the distribution's own copy of the library."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("student_dist", ROOT / "autograder" / "student_dist.py")
student_dist = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(student_dist)
LABS = sorted(p.parent.name for p in (ROOT / "labs").glob("*/*.ipynb") if p.stem == p.parent.name)


@pytest.fixture(scope="module", autouse=True)
def _no_outer_pythonpath():
    """The fresh venv and its kernels must import the distribution's library, never one named by PYTHONPATH."""
    saved = os.environ.pop("PYTHONPATH", None)
    yield
    if saved is not None:
        os.environ["PYTHONPATH"] = saved


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return student_dist.build(tmp_path_factory.mktemp("dist") / "nas-lab-student")


def test_holds_what_students_need_and_nothing_else(dist: Path) -> None:
    assert sorted(p.name for p in dist.iterdir()) == ["Makefile", "README.md", "data", "environment.yml", "labs",
                                                      "nas_lab", "pyproject.toml"]
    assert [p.parent.name for p in sorted(dist.glob("labs/*/*.ipynb"))] == LABS
    assert not (dist / "nas_lab" / "grading").exists()
    manifest = json.loads((dist / "data" / "manifest.json").read_text())["files"]
    assert all((dist / "data" / name).is_file() for name in manifest)


def test_no_solution_or_hidden_test_inside(dist: Path) -> None:
    assert student_dist.leaks(dist) == []
    for path in dist.rglob("*"):
        if path.is_file() and path.suffix in (".ipynb", ".py", ".md", ".json", ".csv", ".toml"):
            text = path.read_text(errors="replace")
            assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, path


def test_the_leak_check_can_fail(dist: Path, tmp_path: Path) -> None:
    """A solution notebook dropped into a copy of the distribution is caught, line by line."""
    copy = tmp_path / "copy"
    shutil.copytree(dist, copy)
    lab = LABS[0]
    nb = nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    for cell in nb.cells:  # strip the markers: the check must find the answer lines themselves
        lines = cell.source.splitlines()
        cell.source = "\n".join(x for x in lines if "### BEGIN" not in x and "### END" not in x)
    nbformat.write(nb, copy / "labs" / lab / "leaked.ipynb")
    found = student_dist.leaks(copy)
    assert any("solution" in f for f in found) and any("hidden tests" in f for f in found), found


@pytest.fixture(scope="module")
def venv_python(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the distribution installed (editable, as its Makefile does); the heavy dependencies
    (torch, jupyter) come from this interpreter's site-packages through a .pth file, not from the network."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)  # pip, setuptools: outer
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "outer_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "-e", str(dist)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    where = subprocess.run([str(python), "-c", "import nas_lab, nas_lab.artifacts as a; print(nas_lab.__file__); "
                            "print(a.data_dir())"], capture_output=True, text=True, cwd=venv.parent)
    lib, data = where.stdout.split()
    assert Path(lib).is_relative_to(dist) and Path(data) == dist / "data", where.stdout + where.stderr
    return python


@pytest.mark.parametrize("lab", LABS)
def test_each_lab_runs_to_its_first_unanswered_question(lab: str, dist: Path, venv_python: Path,
                                                        tmp_path: Path) -> None:
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(dist / "labs" / lab / f"{lab}.ipynb", as_version=4)
    spec = tmp_path / "kernels" / "student"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": [str(venv_python), "-m", "ipykernel_launcher", "-f",
                                                           "{connection_file}"], "language": "python",
                                                  "display_name": "student venv"}))
    km = KernelManager(kernel_name="student",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]))
    client = NotebookClient(nb, km=km, timeout=300, resources={"metadata": {"path": str(tmp_path)}})
    ran = 0
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, index)
                ran += 1
            except CellExecutionError as err:
                assert err.ename == "NotImplementedError", f"{lab} cell {index} failed with {err.ename}: {err}"
                break
        else:
            pytest.fail(f"{lab}: no cell raised NotImplementedError: the release holds an answer?")
        probe = nbformat.v4.new_code_cell("import nas_lab; print(nas_lab.__file__)")
        nb.cells.append(probe)
        client.execute_cell(probe, len(nb.cells) - 1)
    assert ran >= 1
    assert str(dist) in probe.outputs[0]["text"], probe.outputs
