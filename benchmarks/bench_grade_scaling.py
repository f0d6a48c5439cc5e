"""How ``nas-lab grade --jobs`` scales on a grading node: wall time, CPU seconds and memory per submission.

    .venv/bin/python benchmarks/bench_grade_scaling.py [--lab lab1_counting_macs] [--copies 8] [--jobs 1 2 4 8]

Builds ``--copies`` honest submissions of one lab (the solution's answers in a fresh release, as in
tests/test_exchange.py), then grades them once per ``--jobs`` value from scratch (a new ``--out`` each time)
and prints, per run: wall seconds, seconds per submission, CPU seconds per submission (all of the grader's
processes: workers, kernels, nbgrader) and the largest resident memory of any one of its processes (a
student's kernel). On a node with C cores, ``--jobs`` about C gives C / (CPU seconds per submission)
submissions a second while memory allows: docs/hosting.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # nbgrader runs `alembic`


def _cases():  # noqa: ANN202 - the grading corpus's submission builders (tests/grading_corpus/cases.py)
    spec = importlib.util.spec_from_file_location("grading_cases", ROOT / "tests" / "grading_corpus" / "cases.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("grading_cases", module)
    spec.loader.exec_module(module)
    return module


def honest_submissions(lab: str, copies: int, work: Path) -> tuple[Path, Path]:
    """A course with a fresh release of ``lab`` and ``copies`` students who handed in the solution's answers."""
    course = work / "course"
    (course / "solutions").mkdir(parents=True)
    shutil.copy(ROOT / "autograder" / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / lab, course / "solutions" / lab)
    subprocess.run([str(BIN / "nbgrader"), "generate_assignment", lab, "--force"], cwd=course, check=True,
                   capture_output=True, env=ENV)
    release = nbformat.read(course / "labs" / lab / f"{lab}.ipynb", as_version=4)
    solution = nbformat.read(course / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    filled = _cases().filled(release, solution)
    subs = work / "submissions"
    for i in range(copies):
        (subs / f"student{i:03d}").mkdir(parents=True)
        nbformat.write(filled, subs / f"student{i:03d}" / f"{lab}.ipynb")
    return course / "solutions" / lab, subs


def grade_once(source: Path, subs: Path, out: Path, jobs: int) -> dict[str, float]:
    """One ``nas-lab grade`` run; wall seconds, CPU seconds and the peak RSS (MB) of its processes."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run([str(BIN / "nas-lab"), "grade", str(source), str(subs), "--out", str(out), "--jobs", str(jobs)],
                   check=True, capture_output=True, env=ENV)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "peak_mb": after.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="lab1_counting_macs")
    parser.add_argument("--copies", type=int, default=8, help="honest submissions to grade per run")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source, subs = honest_submissions(args.lab, args.copies, Path(tmp))
        print(f"{args.lab}, {args.copies} honest submissions\n\n| --jobs | wall | s per submission | CPU s per "
              f"submission | peak RSS of one process (cumulative) |\n| --- | --- | --- | --- | --- |")
        for jobs in args.jobs:
            r = grade_once(source, subs, Path(tmp) / f"out{jobs}", jobs)
            print(f"| {jobs} | {r['wall']:.0f} s | {r['wall'] / args.copies:.1f} | {r['cpu'] / args.copies:.1f} | "
                  f"{r['peak_mb']:.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
