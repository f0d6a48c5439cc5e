"""``nas-lab grade``: grade a class's submissions of one lab, fairly, whatever they contain.

:func:`grade` builds a temporary nbgrader course from the lab's source notebook
(:mod:`nas_lab.grading.course`) and runs three steps:

* :func:`collect` finds the submissions and normalises them (:mod:`nas_lab.grading.submissions`,
  :mod:`nas_lab.grading.scan`), reuses the cached result of each unchanged one, and lays out a job for
  each of the others;
* :func:`dispatch` autogrades every student in their own sandboxed process (:mod:`nas_lab.grading.jobs`,
  :mod:`nas_lab.grading.worker`, :mod:`nas_lab.grading.execute`, :mod:`nas_lab.grading.guard`) and reads
  back what each produced (:mod:`nas_lab.grading.outcome`);
* :func:`sheet` writes the sheet, the feedback and a summary (:mod:`nas_lab.grading.report`) into OUT:

    OUT/grades.csv                      one row per student: a column per graded cell, total, status, ...
    OUT/grades.previous.csv, history/   the sheets this run replaced
    OUT/manual_grades.csv               TAs type the written answers' scores here (kept across runs)
    OUT/feedback/<student>/<lab>.html   for the student (hidden tests removed)
    OUT/autograded/<student>/<lab>.ipynb  for TAs (everything, hidden tests included)
    OUT/summary.md                      what happened, what changed since the last run
    OUT/.cache/<student>.json           results reused when a submission has not changed

See docs/grading.md for the TA workflow and :data:`nas_lab.grading.status.STATUSES` for the status column.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from nas_lab.grading.cells import points as cell_points
from nas_lab.grading.course import REPO, build_course, build_site, prepare
from nas_lab.grading.feedback import plain_page
from nas_lab.grading.jobs import Job, Limits, run_all, sandboxed
from nas_lab.grading.outcome import outcome
from nas_lab.grading.report import (
    FIXED_TAIL,
    changes,
    keep_rows,
    manual_grades,
    read_csv,
    rows_of,
    summary,
    write_grades,
)
from nas_lab.grading.scan import scan
from nas_lab.grading.status import STATUSES, status
from nas_lab.grading.submissions import Submission, discover, load, normalise

Echo = Callable[[str], object]


@dataclass
class Run:
    """One call of :func:`grade`: the lab, its folders and limits, and what the steps found so far."""

    lab_dir: Path
    out: Path
    work: Path
    limits: Limits
    course: Path
    site: Path
    release: NotebookNode
    started: float  # time.monotonic() at the start
    problems: list[str] = field(default_factory=list)  # for the summary's "Problems"
    results: dict[str, dict] = field(default_factory=dict)  # student -> scores, flags, notes, ...
    jobs: list[Job] = field(default_factory=list)
    reused: set[str] = field(default_factory=set)  # unchanged submissions: cached results
    graded: set[str] = field(default_factory=set)  # graded (or found ungradable) in this run
    done: int = 0  # jobs finished
    wall: float = 0.0  # seconds the jobs took

    @property
    def name(self) -> str:
        return self.lab_dir.name


def resolve_lab(lab: str | Path) -> Path:
    """The lab's source folder: a lab name (``solutions/<lab>``), its folder, or its source notebook."""
    p = Path(lab)
    if p.suffix == ".ipynb" and p.is_file():
        p = p.parent
    if not p.is_dir():
        p = REPO / "solutions" / str(lab)
    if not (p / f"{p.name}.ipynb").is_file():
        raise FileNotFoundError(f"no lab {lab!r}: expected solutions/<lab>/<lab>.ipynb (or a path to it)")
    return p.resolve()


def grade(lab: str | Path, submissions: Path, out: Path | None = None, limits: Limits | None = None,
          regrade: bool = False, keep: bool = False, config: Path | None = None, echo: Echo = print) -> dict:
    """Grade every submission in ``submissions``; returns {"rows", "changes", "summary", "out", "timing",
    "work"}. ``keep`` leaves the temporary course and job folders; ``regrade`` ignores the cache."""
    lab_dir = resolve_lab(lab)
    out = Path(out or Path("grades") / lab_dir.name).resolve()
    (out / ".cache").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"nas-lab-grade-{lab_dir.name}-"))
    work.chmod(0o755)
    started = time.monotonic()
    try:
        config = Path(config or REPO / "autograder" / "nbgrader_config.py")
        run = _setup(lab_dir, out, work, limits or Limits(), config, started)
        collect(run, Path(submissions), regrade)
        dispatch(run, keep, echo)
        return sheet(run, echo)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _setup(lab_dir: Path, out: Path, work: Path, limits: Limits, config: Path, started: float) -> Run:
    """The temporary course (released) and the site every kernel imports."""
    course = build_course(lab_dir, work, config)
    release = nbformat.read(course / "labs" / lab_dir.name / f"{lab_dir.name}.ipynb", as_version=4)
    problems = _shipped_differs(lab_dir, release)
    return Run(lab_dir, out, work, limits, course, build_site(work), release, started, problems)


def _shipped_differs(lab_dir: Path, release: NotebookNode) -> list[str]:
    """A problem if the notebook shipped in labs/ is not the fresh release (students got another version)."""
    name = lab_dir.name
    shipped = REPO / "labs" / name / f"{name}.ipynb"
    if shipped.exists() and [c.source for c in nbformat.read(shipped, as_version=4).cells] != [
            c.source for c in release.cells]:
        return [f"labs/{name} differs from a fresh release of {lab_dir}: students may have another version"]
    return []


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------------------------------------- collect


def collect(run: Run, submissions: Path, regrade: bool = False) -> None:
    """Find the submissions and normalise them; reuse the cached result of each unchanged one
    (``run.reused``), record the ungradable ones and lay out a job for each of the others (``run.jobs``)."""
    (run.work / "jobs").mkdir(mode=0o755)
    for student, group in sorted(_by_student(_load_all(run, submissions)).items()):
        sub = _pick(group)
        if sub.status:
            _ungradable(run, student, sub)
            continue
        nb, leaky = _clean(sub, run.release)
        key = _fingerprint(nb, run.lab_dir, run.limits)
        cached = _cached(run.out / ".cache" / f"{student}.json", key, regrade)
        if cached is not None:
            run.results[student] = cached
            run.reused.add(student)
            continue
        job = Job(student, run.work / "jobs" / student, sub, key)
        job.folder.mkdir(mode=0o755)
        prepare(job, run.course, run.site, run.name, nb, run.limits, sub.timestamp, strip_outputs=leaky)
        run.jobs.append(job)


def _load_all(run: Run, submissions: Path) -> list[Submission]:
    """Every entry of the SUBMISSIONS folder, loaded (the other labs' notebooks tell a wrong lab apart)."""
    other = {p.stem: nbformat.read(p, as_version=4)
             for p in sorted((REPO / "labs").glob("*/*.ipynb")) if p.stem == p.parent.name and p.stem != run.name}
    return [load(student, path, run.name, run.release, other) for student, path in discover(submissions, run.out)]


def _by_student(subs: list[Submission]) -> dict[str, list[Submission]]:
    by_id: dict[str, list[Submission]] = {}
    for sub in subs:
        by_id.setdefault(sub.student, []).append(sub)
    return by_id


def _pick(group: list[Submission]) -> Submission:
    """The student's submission; 'ambiguous' when there are several."""
    sub = group[0]
    if len(group) > 1:
        sub.status = "ambiguous"
        sub.notes.append("several submissions: " + ", ".join(s.origin for s in group))
    return sub


def _ungradable(run: Run, student: str, sub: Submission) -> None:
    run.results[student] = {"scores": {}, "flags": [sub.status, *sub.flags], "notes": sub.notes,
                            "notebook": sub.filename, "sha256": sub.sha256, "feedback": False, "graded_at": _now()}
    (run.out / "autograded" / student / f"{run.name}.ipynb").unlink(missing_ok=True)
    run.graded.add(student)


def _clean(sub: Submission, release: NotebookNode) -> tuple[NotebookNode, bool]:
    """The normalised notebook (its notes and flags, suspicious code included, go to ``sub``), and whether
    its code could read the running tests."""
    nb, notes, flags = normalise(sub.notebook, release)
    sub.notes += notes
    sub.flags += flags
    suspicious, leaky = scan(nb)
    if suspicious:
        sub.flags.append("suspicious")
        sub.notes += [f"suspicious code: {s}" for s in suspicious]
    return nb, leaky


def _fingerprint(nb: NotebookNode, lab_dir: Path, limits: Limits) -> str:
    """The cache key: the normalised submission, the lab, the grader's code and the limits."""
    h = hashlib.sha256(nbformat.writes(nb).encode())
    h.update((lab_dir / f"{lab_dir.name}.ipynb").read_bytes())
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.read_bytes())
    h.update(f"{limits.cell_timeout:g}/{limits.memory_mb:g}/{float(limits.timeout):g}".encode())
    return h.hexdigest()


def _cached(path: Path, key: str, regrade: bool) -> dict | None:
    """The cached result, if it is for this key and not a grader error."""
    cached = json.loads(path.read_text()) if path.exists() and not regrade else {}
    if cached.get("key") == key and "error" not in cached.get("flags", []):
        return cached
    return None


# --------------------------------------------------------------------------------------------- dispatch


def dispatch(run: Run, keep: bool = False, echo: Echo = print) -> None:
    """Run the jobs, ``limits.jobs`` at a time; each result is kept, cached and echoed as its job ends."""
    if run.jobs and _root_unsandboxed(run.limits):
        run.problems.append("running as root, but an unprivileged uid cannot run this Python (is it under /root?): "
                            "submissions ran as root, protected only by private copies and integrity checks")
    echo(f"grading {len(run.jobs)} submission(s) of {run.name} with {run.limits.jobs} job(s)"
         + (f"; {len(run.reused)} unchanged, reused" if run.reused else "")
         + ("; sandboxed (one uid per slot)" if run.jobs and sandboxed(run.limits) else ""))
    started = time.monotonic()
    run_all(run.jobs, run.limits, functools.partial(_finished, run, keep, echo))
    run.wall = time.monotonic() - started


def _root_unsandboxed(limits: Limits) -> bool:
    return limits.sandbox_user and hasattr(os, "geteuid") and os.geteuid() == 0 and not sandboxed(limits)


def _finished(run: Run, keep: bool, echo: Echo, job: Job) -> None:
    res = _result(job, run.limits)
    _copy_pages(job, run.out, run.name)
    res["feedback"] = (job.folder / "out" / "feedback.html").exists()
    (run.out / ".cache" / f"{job.student}.json").write_text(json.dumps(res, indent=1))
    run.results[job.student] = res
    run.graded.add(job.student)
    run.done += 1
    auto = sum(v or 0 for v in res["scores"].values())
    echo(f"[{run.done}/{len(run.jobs)}] {job.student}: {auto:g} points, {status(res['flags'])} ({job.seconds:.1f} s)")
    if not keep:
        shutil.rmtree(job.folder, ignore_errors=True)


def _result(job: Job, limits: Limits) -> dict:
    """The job's outcome, with what was found about the submission before it ran."""
    res = outcome(job, limits)
    res["flags"] = list(dict.fromkeys(job.sub.flags + res["flags"]))
    res["notes"] = list(dict.fromkeys(job.sub.notes + res["notes"]))
    res.update(key=job.key, notebook=job.sub.filename, sha256=job.sub.sha256, graded_at=_now())
    return res


def _copy_pages(job: Job, out: Path, lab: str) -> None:
    """The job's feedback page and autograded notebook into OUT (an older run's are removed)."""
    for src, dst in (("feedback.html", out / "feedback" / job.student / f"{lab}.html"),
                     ("autograded.ipynb", out / "autograded" / job.student / f"{lab}.ipynb")):
        dst.unlink(missing_ok=True)  # never leave an older run's file beside this run's grade
        if (job.folder / "out" / src).exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(job.folder / "out" / src, dst)


# ------------------------------------------------------------------------------------------------ sheet


def sheet(run: Run, echo: Echo = print) -> dict:
    """Write grades.csv (manual grades merged, rows of students not in this run kept), the feedback pages
    nbgrader did not write, and summary.md; returns {"rows", "changes", "summary", "out", "timing", "work"}."""
    points, manual = cell_points(run.release), cell_points(run.release, manual=True)
    _, previous = read_csv(run.out / "grades.csv")
    _plain_pages(run, points, manual)
    manual_scores, manual_problems = manual_grades(run.out, sorted(set(run.results) | set(previous)), manual)
    run.problems += manual_problems
    rows = rows_of(run.results, points, manual, manual_scores)
    keep_rows(rows, previous, points, manual, manual_scores)
    columns = ["student", *points]
    previous = write_grades(run.out, [*columns, *[c for c in FIXED_TAIL if c not in columns]], rows)
    delta = changes(previous, rows, run.graded, run.reused, list(points))
    timing = _timing(run)
    text = summary(run.name, rows, list(points), points, delta, STATUSES, timing, run.problems)
    (run.out / "summary.md").write_text(text)
    echo(text)
    return {"rows": rows, "changes": delta, "summary": text, "out": run.out, "timing": timing, "work": run.work}


def _plain_pages(run: Run, points: dict[str, float], manual: dict[str, float]) -> None:
    """A plain feedback page for each student graded in this run without nbgrader's page."""
    for student, res in run.results.items():
        page = run.out / "feedback" / student / f"{run.name}.html"
        if student in run.graded and (not page.exists() or res.get("feedback") is False):
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(plain_page(student, run.name, status(res["flags"]), res["notes"],
                                       {g: res["scores"].get(g) for g in points if g not in manual}))


def _timing(run: Run) -> dict[str, float]:
    secs = [run.results[j.student].get("seconds", 0) for j in run.jobs]
    return {"graded": len(run.jobs), "wall": run.wall, "jobs": run.limits.jobs,
            "mean_job": sum(secs) / len(secs) if secs else 0.0, "total": time.monotonic() - run.started}
