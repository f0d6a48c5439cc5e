"""``nas-lab grade``: grade a class's submissions of one lab, fairly, whatever they contain.

:func:`grade` finds the submissions (:mod:`nas_lab.grading_submissions`), builds a temporary nbgrader
course from the lab's source notebook (:mod:`nas_lab.grading_jobs`), autogrades every student in their
own sandboxed process (:mod:`nas_lab.grading_worker`, :mod:`nas_lab.grading_execute`,
:mod:`nas_lab.grading_guard`), and writes the sheet, the feedback and a summary
(:mod:`nas_lab.grading_report`) into OUT:

    OUT/grades.csv                      one row per student: a column per graded cell, total, status, ...
    OUT/grades.previous.csv, history/   the sheets this run replaced
    OUT/manual_grades.csv               TAs type the written answers' scores here (kept across runs)
    OUT/feedback/<student>/<lab>.html   for the student (hidden tests removed)
    OUT/autograded/<student>/<lab>.ipynb  for TAs (everything, hidden tests included)
    OUT/summary.md                      what happened, what changed since the last run
    OUT/.cache/<student>.json           results reused when a submission has not changed

See docs/grading.md for the TA workflow and :data:`STATUSES` for the status column.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import nbformat

from nas_lab.grading_jobs import REPO, Job, Limits, build_course, build_site, prepare, run_all, sandboxed
from nas_lab.grading_report import FIXED_TAIL, changes, fmt, manual_grades, read_csv, summary, write_grades
from nas_lab.grading_submissions import discover, load, normalise

#: The ``status`` column, most severe first; a student gets the first that applies (all are in ``flags``).
STATUSES = {
    "missing": "no notebook found in the submission (0 points)",
    "invalid": "the notebook is empty, not JSON or not a notebook (0 points)",
    "wrong_lab": "a notebook of another lab, or without this lab's cells (0 points)",
    "ambiguous": "several notebooks or submissions for one student; none graded (0 points)",
    "error": "the grader failed on this submission; scores reached before are kept",
    "tampered": "test tools or shipped files were changed while a test ran: that test scores 0; review",
    "timeout": "grading exceeded the per-student time limit; tests not reached score 0",
    "memory_limit": "a cell exceeded the memory limit (MemoryError or killed); the rest was graded",
    "kernel_died": "a cell ended the Python process (os._exit, crash); it was skipped and the rest graded",
    "exited": "the notebook called sys.exit()/exit(); the call was stopped and grading went on",
    "cell_timeout": "a cell exceeded the per-cell time limit and was interrupted (or skipped); the rest was graded",
    "review": "graded, but the grader undid changes to libraries/builtins/files or found suspicious code",
    "restored": "edited, deleted or duplicated test/locked cells were replaced by the originals",
    "output_truncated": "a cell printed too much; its output was truncated",
    "renamed": "graded, but the notebook had another file name than expected",
    "ok": "graded normally",
}
_FLAG_STATUS = {"patched": "review", "files_restored": "review", "suspicious": "review", "threads": "review",
                "test_edited": "restored", "test_deleted": "restored", "locked_edited": "restored",
                "cell_deleted": "restored", "duplicate_cell": "restored", "metadata_edited": "restored"}
#: Code in answers that a TA should look at: (pattern, what, whether it can read the running tests, in which
#: case the student's own cell outputs are left out of the feedback, lest they carry hidden values).
SUSPICIOUS = [
    (r"get_ipython|IPython|ipykernel|InteractiveShell|showtraceback|_transformers|events\.register",
     "uses IPython internals", True),
    (r"\bbuiltins\b|__builtins__|sys\.modules|__import__|sys\.meta_path",
     "touches builtins or the import system", True),
    (r"\b(np|numpy|torch|math|nn|F|random|operator|unittest)(\.\w+)+\s*=(?!=)|setattr\(\s*(np|numpy|torch|math)\b",
     "assigns to a library function", False),
    (r"def\s+__(eq|ne|lt|le|gt|ge|bool|float|int|index|abs|sub|rsub|hash|torch_function|array\w*)__",
     "defines comparison or conversion methods", False),
    (r"sys\._getframe|\binspect\.|f_locals|f_globals|f_back|\bgc\.|ctypes|settrace|setprofile",
     "inspects or changes running code", True),
    (r"\b_ih\b|\b_oh\b|\bIn\s*\[|\bOut\s*\[|linecache", "reads the kernel's input history", True),
    (r"os\.kill|\bsignal\.", "signals processes", False),
    (r"subprocess|os\.system|os\.popen|\bsocket\b|urllib|requests\.|multiprocessing|threading",
     "starts processes, threads or network access", False),
    (r"data_dir\(|manifest\.json|NAS_LAB_DATA", "opens the shipped data folder", False),
]


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


def scan(nb: nbformat.NotebookNode) -> tuple[list[str], bool]:
    """Notes on suspicious code in the cells students wrote (advisory: status 'review'), and whether any of
    it could read the running tests."""
    found: dict[str, str] = {}
    leaky = False
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or (meta.get("locked") and not meta.get("solution")):
            continue
        for pattern, what, reads_tests in SUSPICIOUS:
            m = re.search(pattern, cell.source)
            if m and what not in found:
                found[what] = f"{what} ({meta.get('grade_id', 'added cell')}: {m.group(0)[:40]!r})"
                leaky = leaky or reads_tests
    return list(found.values()), leaky


def _status(flags: list[str]) -> str:
    mapped = {_FLAG_STATUS.get(f, f) for f in flags}
    return next((s for s in STATUSES if s in mapped), "ok")


def _outcome(job: Job, limits: Limits) -> dict:
    """Scores, flags and notes of a finished job, from the worker's files."""
    out = job.folder / "out"
    res = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else None
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    progress = {}
    if (out / "progress.jsonl").exists():
        for line in (out / "progress.jsonl").read_text().splitlines():
            entry = json.loads(line)
            progress[entry["grade_id"]] = entry["score"]
    flags, notes, scores = [], [], dict(progress)
    if job.timed_out:
        flags.append("timeout")
        notes.append(f"grading was stopped after {limits.timeout:g} s; tests not reached score 0")
    elif res is None or not res.get("autograde_ok"):
        flags.append("error")
        why = (res or {}).get("error") or f"the grading process ended with code {job.returncode}"
        notes.append("grader error: " + why.strip().splitlines()[-1][:300])
    else:
        scores = {gid: s["score"] for gid, s in res["scores"].items()}
    for r in report.get("restarts", []):
        memory = "signal 9" in r["reason"] or "signal 6" in r["reason"]
        flags.append("cell_timeout" if "interrupt" in r["reason"] else "memory_limit" if memory else "kernel_died")
        where = r["grade_id"] or f"cell {r['cell']}"
        notes.append(f"{where}: {r['reason']}; skipped")
    for e in report.get("events", []):
        flags.append(e["kind"])
        if e["kind"] != "output_truncated":
            where = e["grade_id"] or f"cell {e['cell']}"
            notes.append(f"{where}: {e['kind']}: {e['detail'][:200]}")
    graded = out / "autograded.ipynb"
    if graded.exists():
        for cell in nbformat.read(graded, as_version=4).cells:
            for o in cell.get("outputs", []):
                if o.output_type != "error":
                    continue
                if o.ename == "MemoryError" or "can't allocate memory" in o.get("evalue", ""):
                    flags.append("memory_limit")
                elif o.ename == "SystemExit":
                    flags.append("exited")
    return {"scores": scores, "flags": list(dict.fromkeys(flags)), "notes": list(dict.fromkeys(notes)),
            "seconds": round(job.seconds, 2)}


def _fingerprint(nb: nbformat.NotebookNode, lab_dir: Path, limits: Limits) -> str:
    h = hashlib.sha256(nbformat.writes(nb).encode())
    h.update((lab_dir / f"{lab_dir.name}.ipynb").read_bytes())
    for p in sorted(Path(__file__).parent.glob("grading*.py")):
        h.update(p.read_bytes())
    h.update(f"{limits.cell_timeout:g}/{limits.memory_mb:g}/{float(limits.timeout):g}".encode())
    return h.hexdigest()


def _plain_page(student: str, lab: str, status: str, notes: list[str], scores: dict[str, float | None]) -> str:
    """Feedback for a submission without nbgrader's page (not gradable, or grading stopped)."""
    e = html.escape
    items = "".join(f"<li>{e(n)}</li>" for n in notes if not n.startswith("suspicious code"))
    rows = "".join(f"<tr><td>{e(g)}</td><td>{fmt(v) or '-'}</td></tr>" for g, v in scores.items())
    table = f"<table><tr><th>question</th><th>score</th></tr>{rows}</table>" if rows else ""
    return (f"<!doctype html><meta charset='utf-8'><title>{e(lab)}: {e(student)}</title><h1>{e(lab)}</h1>"
            f"<p>Status: <b>{e(status)}</b>: {e(STATUSES[status])}.</p><ul>{items}</ul>{table}"
            f"<p>Hand in the notebook <code>{e(lab)}.ipynb</code> from the lab's folder, run from top to bottom.</p>")


def grade(lab: str | Path, submissions: Path, out: Path | None = None, limits: Limits | None = None,
          regrade: bool = False, keep: bool = False, config: Path | None = None, echo=print) -> dict:  # noqa: ANN001
    """Grade every submission in ``submissions``; returns {"rows", "changes", "summary", "out"}."""
    limits = limits or Limits()
    lab_dir = resolve_lab(lab)
    name = lab_dir.name
    out = Path(out or Path("grades") / name).resolve()
    (out / ".cache").mkdir(parents=True, exist_ok=True)
    config = Path(config or REPO / "autograder" / "nbgrader_config.py")
    work = Path(tempfile.mkdtemp(prefix=f"nas-lab-grade-{name}-"))
    work.chmod(0o755)
    problems: list[str] = []
    t0 = time.monotonic()
    try:
        course = build_course(lab_dir, work, config)
        release = nbformat.read(course / "labs" / name / f"{name}.ipynb", as_version=4)
        shipped = REPO / "labs" / name / f"{name}.ipynb"
        if shipped.exists() and [c.source for c in nbformat.read(shipped, as_version=4).cells] != [
                c.source for c in release.cells]:
            problems.append(f"labs/{name} differs from a fresh release of {lab_dir}: students may have another version")
        site = build_site(work)
        cells = [c.metadata["nbgrader"] for c in release.cells if c.metadata.get("nbgrader", {}).get("grade")]
        points = {m["grade_id"]: float(m["points"]) for m in cells}
        manual = {m["grade_id"]: float(m["points"]) for m in cells if m.get("solution")}
        other = {p.stem: nbformat.read(p, as_version=4)
                 for p in sorted((REPO / "labs").glob("*/*.ipynb")) if p.stem == p.parent.name and p.stem != name}
        subs = [load(student, path, name, release, other) for student, path in discover(Path(submissions), out)]
        by_id: dict[str, list] = {}
        for sub in subs:
            by_id.setdefault(sub.student, []).append(sub)
        results: dict[str, dict] = {}
        jobs, reused, graded = [], set(), set()
        (work / "jobs").mkdir(mode=0o755)
        for student, group in sorted(by_id.items()):
            sub = group[0]
            if len(group) > 1:
                sub.status = "ambiguous"
                sub.notes.append("several submissions: " + ", ".join(s.origin for s in group))
            if sub.status:
                results[student] = {"scores": {}, "flags": [sub.status, *sub.flags], "notes": sub.notes,
                                    "notebook": sub.filename, "sha256": sub.sha256, "feedback": False,
                                    "graded_at": time.strftime("%Y-%m-%d %H:%M:%S")}
                (out / "autograded" / student / f"{name}.ipynb").unlink(missing_ok=True)
                graded.add(student)
                continue
            nb, notes, flags = normalise(sub.notebook, release)
            sub.notes += notes
            sub.flags += flags
            suspicious, leaky = scan(nb)
            if suspicious:
                sub.flags.append("suspicious")
                sub.notes += [f"suspicious code: {s}" for s in suspicious]
            key = _fingerprint(nb, lab_dir, limits)
            cache = out / ".cache" / f"{student}.json"
            cached = json.loads(cache.read_text()) if cache.exists() and not regrade else {}
            if cached.get("key") == key and "error" not in cached.get("flags", []):
                results[student] = cached
                reused.add(student)
                continue
            job = Job(student, work / "jobs" / student)
            job.folder.mkdir(mode=0o755)
            prepare(job, course, site, name, nb, limits, sub.timestamp, strip_outputs=leaky)
            job.sub, job.key = sub, key  # type: ignore[attr-defined]
            jobs.append(job)
        if jobs and limits.sandbox_user and hasattr(os, "geteuid") and os.geteuid() == 0 and not sandboxed(limits):
            problems.append("running as root, but an unprivileged uid cannot run this Python (is it under /root?): "
                            "submissions ran as root, protected only by private copies and integrity checks")
        echo(f"grading {len(jobs)} submission(s) of {name} with {limits.jobs} job(s)"
             + (f"; {len(reused)} unchanged, reused" if reused else "")
             + ("; sandboxed (one uid per slot)" if jobs and sandboxed(limits) else ""))
        done = [0]
        t_jobs = time.monotonic()

        def finished(job: Job) -> None:
            res = _outcome(job, limits)
            sub = job.sub  # type: ignore[attr-defined]
            res["flags"] = list(dict.fromkeys(sub.flags + res["flags"]))
            res["notes"] = list(dict.fromkeys(sub.notes + res["notes"]))
            res.update(key=job.key, notebook=sub.filename, sha256=sub.sha256,  # type: ignore[attr-defined]
                       graded_at=time.strftime("%Y-%m-%d %H:%M:%S"))
            for src, dst in (("feedback.html", out / "feedback" / job.student / f"{name}.html"),
                             ("autograded.ipynb", out / "autograded" / job.student / f"{name}.ipynb")):
                dst.unlink(missing_ok=True)  # never leave an older run's file beside this run's grade
                if (job.folder / "out" / src).exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(job.folder / "out" / src, dst)
            res["feedback"] = (job.folder / "out" / "feedback.html").exists()
            (out / ".cache" / f"{job.student}.json").write_text(json.dumps(res, indent=1))
            results[job.student] = res
            graded.add(job.student)
            done[0] += 1
            auto = sum(v or 0 for v in res["scores"].values())
            status = _status(res["flags"])
            echo(f"[{done[0]}/{len(jobs)}] {job.student}: {auto:g} points, {status} ({job.seconds:.1f} s)")
            if not keep:
                shutil.rmtree(job.folder, ignore_errors=True)

        run_all(jobs, limits, finished)
        wall = time.monotonic() - t_jobs
        # ------------------------------------------------------------------------------- the sheet
        order = list(points)
        columns = ["student", *order]
        _, previous = read_csv(out / "grades.csv")
        for student, res in results.items():
            page = out / "feedback" / student / f"{name}.html"
            if student in graded and (not page.exists() or res.get("feedback") is False):
                page.parent.mkdir(parents=True, exist_ok=True)
                page.write_text(_plain_page(student, name, _status(res["flags"]), res["notes"],
                                            {g: res["scores"].get(g) for g in points if g not in manual}))
        manual_scores, manual_problems = manual_grades(out, sorted(set(results) | set(previous)), manual)
        problems += manual_problems
        rows: dict[str, dict] = {}
        for student, res in results.items():
            scores = {g: res["scores"].get(g) for g in order}
            if res["flags"] and _status(res["flags"]) in ("missing", "invalid", "wrong_lab", "ambiguous"):
                scores = {g: (0.0 if g not in manual else None) for g in order}
            for g in order:
                if g not in manual and scores[g] is None and res["scores"] != {}:
                    scores[g] = 0.0
                if g in manual:
                    scores[g] = manual_scores.get(student, {}).get(g)
            rows[student] = {"student": student, **{g: fmt(v) for g, v in scores.items()},
                             "total": fmt(sum(v for v in scores.values() if v is not None)),
                             "max_total": fmt(sum(points.values())), "status": _status(res["flags"]),
                             "flags": ";".join(res["flags"]), "notes": "; ".join(res["notes"]),
                             "notebook": res.get("notebook", ""), "sha256": (res.get("sha256") or "")[:12],
                             "graded_at": res.get("graded_at", "")}
        for student, row in previous.items():  # not in this run: keep the row, with today's manual grades
            if student not in rows:
                rows[student] = row = dict(row)
                for g in manual:
                    row[g] = fmt(manual_scores.get(student, {}).get(g))
                row["total"] = fmt(sum(float(row[g]) for g in order if row.get(g) not in (None, "")))
                if "not in the last run" not in row.get("notes", ""):
                    row["notes"] = (row.get("notes", "") + "; not in the last run").lstrip("; ")
        previous = write_grades(out, [*columns, *[c for c in FIXED_TAIL if c not in columns]], rows)
        delta = changes(previous, rows, graded, reused, order)
        secs = [results[j.student].get("seconds", 0) for j in jobs]
        timing = {"graded": len(jobs), "wall": wall, "jobs": limits.jobs,
                  "mean_job": sum(secs) / len(secs) if secs else 0.0, "total": time.monotonic() - t0}
        text = summary(name, rows, order, points, delta, STATUSES, timing, problems)
        (out / "summary.md").write_text(text)
        echo(text)
        return {"rows": rows, "changes": delta, "summary": text, "out": out, "timing": timing, "work": work}
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
