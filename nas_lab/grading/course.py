"""What each student's grading runs on: a private nbgrader course, package and home, laid out on disk.

* :func:`build_course` makes the temporary course (a copy of the repository's nbgrader config and of the
  lab's source folder) and runs ``generate_assignment`` once, which builds the release and gradebook.
* :func:`build_site` makes the master copy of the whole ``nas_lab`` package and of its shipped data.
* :func:`prepare` gives each student a copy of that course, a private home (``HOME``, ``TMPDIR``,
  IPython/Jupyter/matplotlib folders) and a private copy of the site, which the kernel imports first
  (``PYTHONPATH``); the repository is never touched. ``job.json`` tells the worker
  (:mod:`nas_lab.grading.worker`) where everything is.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import nbformat

import nas_lab
from nas_lab.grading.jobs import Job, Limits

PACKAGE = Path(nas_lab.__file__).resolve().parent
REPO = PACKAGE.parent


def _release_module(config: Path):  # noqa: ANN202 - the module object
    spec = importlib.util.spec_from_file_location("nas_lab_release", config.parent / "release.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_course(lab_dir: Path, work: Path, config: Path) -> Path:
    """A temporary nbgrader course for the lab in ``lab_dir`` (``<lab>/<lab>.ipynb``), released."""
    lab = lab_dir.name
    course = work / "course"
    (course / "solutions").mkdir(parents=True)
    shutil.copy(config, course / "nbgrader_config.py")
    shutil.copytree(lab_dir, course / "solutions" / lab,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    _release_module(config).generate(course / "nbgrader_config.py", [lab], quiet=True)
    return course


def build_site(work: Path) -> Path:
    """The master copy of the package (all of it, subpackages such as ``nas_lab.grading`` included) and of its
    shipped data that every kernel imports (world-readable)."""
    site = work / "site"
    shutil.copytree(PACKAGE, site / "nas_lab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    from nas_lab.artifacts import data_dir

    src = data_dir()
    manifest = json.loads((src / "manifest.json").read_text())["files"] if (src / "manifest.json").exists() else {}
    (site / "data").mkdir()
    for name in ["manifest.json", *manifest]:
        if (src / name).is_file():
            (site / "data" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, site / "data" / name)
    for p in [site, *site.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return site


def prepare(job: Job, course: Path, site: Path, lab: str, nb: nbformat.NotebookNode, limits: Limits,
            timestamp: str | None = None, strip_outputs: bool = False) -> None:
    """Lay out ``job.folder``: course copy with the submission, site copy, home, out, job.json."""
    f = job.folder
    (f / "course" / "solutions").mkdir(parents=True)
    shutil.copy(course / "nbgrader_config.py", f / "course")
    shutil.copy(course / "gradebook.db", f / "course")
    for part in ("solutions", "labs"):
        shutil.copytree(course / part / lab, f / "course" / part / lab)
    sub = f / "course" / "submitted" / job.student / lab
    sub.mkdir(parents=True)
    nbformat.write(nb, sub / f"{lab}.ipynb")
    if timestamp:
        (sub / "timestamp.txt").write_text(timestamp)
    shutil.copytree(site, f / "site")
    for d in ("home", "out"):
        (f / d).mkdir()
    spec = {
        "course": str(f / "course"), "lab": lab, "student": job.student, "out": str(f / "out"),
        "cell_timeout": limits.cell_timeout, "grace": limits.grace, "strip_outputs": strip_outputs,
        "report_file": str(f / "out" / "report.json"), "progress_file": str(f / "out" / "progress.jsonl"),
        "memory_mb": limits.memory_mb,
        "protected_dirs": [[str(f / "site" / "nas_lab"), str(site / "nas_lab")],
                           [str(f / "site" / "data"), str(site / "data")]],
    }
    (f / "job.json").write_text(json.dumps(spec, indent=1))
