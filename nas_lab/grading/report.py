"""The grade sheet: ``OUT/grades.csv`` with its history, TA-entered manual grades, changes and summary.

* ``grades.csv`` is rewritten atomically; the sheet it replaces is kept as ``grades.previous.csv`` and
  as ``history/grades-<UTC time>.csv`` (never deleted), so no run loses a grade.
* Students missing from this run keep their previous row (marked in ``notes``): re-grading part of a
  class, or a late submission alone, never drops the others.
* A row holds the student's score per graded cell (0 for a test not reached; every autograded cell 0 for
  a submission that could not be graded), the total, the status and flags (:mod:`nas_lab.grading.status`)
  and notes.
* ``manual_grades.csv`` (created with one row per student and one column per manually graded cell) is
  where TAs type the written-answer scores; a re-run adds new students to it and never changes a value
  typed there. Those scores are merged into ``grades.csv``.
"""

from __future__ import annotations

import csv
import os
import shutil
import statistics
import time
from pathlib import Path

from nas_lab.grading.status import NOT_GRADED, status

FIXED_TAIL = ["total", "max_total", "status", "flags", "notes", "notebook", "sha256", "graded_at"]


def read_csv(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(columns, {student: row}) of a CSV with a ``student`` column; empty when the file is missing."""
    if not path.exists():
        return [], {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = {r["student"]: r for r in reader if r.get("student")}
        return list(reader.fieldnames or []), rows


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    os.replace(tmp, path)


def fmt(x: float | None) -> str:
    """A score as written in the sheet: '' for none, no trailing '.0'."""
    if x is None or x == "":
        return ""
    return f"{float(x):g}"


def manual_grades(out: Path, students: list[str], manual: dict[str, float]) -> tuple[dict, list[str]]:
    """Read (and extend with new students) ``manual_grades.csv``; returns ({student: {id: score}}, problems)."""
    if not manual:
        return {}, []
    path = out / "manual_grades.csv"
    columns, rows = read_csv(path)
    columns = columns or ["student", *manual, "comment"]
    columns += [g for g in manual if g not in columns]
    added = [s for s in students if s not in rows]
    if added or not path.exists() or len(columns) != len(read_csv(path)[0]):
        for s in added:
            rows[s] = {"student": s}
        _write_csv(path, columns, [rows[s] for s in sorted(rows)])
    scores, problems = {}, []
    for student, row in rows.items():
        for gid, points in manual.items():
            value = (row.get(gid) or "").strip()
            if not value:
                continue
            try:
                score = float(value)
            except ValueError:
                problems.append(f"manual_grades.csv: {student}/{gid}: {value!r} is not a number")
                continue
            if not 0 <= score <= points:
                problems.append(f"manual_grades.csv: {student}/{gid}: {score:g} is outside 0..{points:g}")
                continue
            scores.setdefault(student, {})[gid] = score
    return scores, problems


def _row(student: str, res: dict, points: dict[str, float], manual: dict[str, float],
         manual_scores: dict[str, dict[str, float]]) -> dict:
    """The sheet's row of a student graded (or reused) in this run."""
    scores = {g: res["scores"].get(g) for g in points}
    if res["flags"] and status(res["flags"]) in NOT_GRADED:
        scores = {g: (0.0 if g not in manual else None) for g in points}
    for g in points:
        if g not in manual and scores[g] is None and res["scores"] != {}:
            scores[g] = 0.0
        if g in manual:
            scores[g] = manual_scores.get(student, {}).get(g)
    return {"student": student, **{g: fmt(v) for g, v in scores.items()},
            "total": fmt(sum(v for v in scores.values() if v is not None)),
            "max_total": fmt(sum(points.values())), "status": status(res["flags"]),
            "flags": ";".join(res["flags"]), "notes": "; ".join(res["notes"]),
            "notebook": res.get("notebook", ""), "sha256": (res.get("sha256") or "")[:12],
            "graded_at": res.get("graded_at", "")}


def rows_of(results: dict[str, dict], points: dict[str, float], manual: dict[str, float],
            manual_scores: dict[str, dict[str, float]]) -> dict[str, dict]:
    """{student: row} of this run's results ({student: {"scores", "flags", "notes", ...}}); ``points`` are
    the graded cells' points, in order, ``manual`` those a TA grades, ``manual_scores`` what TAs typed."""
    return {student: _row(student, res, points, manual, manual_scores) for student, res in results.items()}


def keep_rows(rows: dict[str, dict], previous: dict[str, dict[str, str]], points: dict[str, float],
              manual: dict[str, float], manual_scores: dict[str, dict[str, float]]) -> None:
    """Add to ``rows`` the previous rows of students not in this run, with today's manual grades."""
    for student, old in previous.items():
        if student in rows:
            continue
        rows[student] = row = dict(old)
        for g in manual:
            row[g] = fmt(manual_scores.get(student, {}).get(g))
        row["total"] = fmt(sum(float(row[g]) for g in points if row.get(g) not in (None, "")))
        if "not in the last run" not in row.get("notes", ""):
            row["notes"] = (row.get("notes", "") + "; not in the last run").lstrip("; ")


def write_grades(out: Path, columns: list[str], rows: dict[str, dict]) -> dict[str, dict[str, str]]:
    """Write ``grades.csv`` (keeping the previous sheet in the history); returns the previous rows."""
    path = out / "grades.csv"
    _, previous = read_csv(path)
    if path.exists():
        (out / "history").mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(path.stat().st_mtime))
        target = out / "history" / f"grades-{stamp}.csv"
        n = 1
        while target.exists():
            target, n = out / "history" / f"grades-{stamp}-{n}.csv", n + 1
        shutil.copy2(path, target)
        shutil.copy2(path, out / "grades.previous.csv")
    _write_csv(path, columns, [rows[s] for s in sorted(rows)])
    return previous


def changes(previous: dict[str, dict[str, str]], rows: dict[str, dict], graded: set[str],
            reused: set[str], score_columns: list[str]) -> dict[str, list[str]]:
    """Students by what happened to their row since the previous sheet: new, changed (a score, the total
    or the status differs; listed with the differences), unchanged (graded again, same result), reused
    (submission unchanged, not graded again) and kept (not in this run, previous row kept)."""
    out: dict[str, list[str]] = {k: [] for k in ("new", "changed", "unchanged", "reused", "kept")}
    for student, row in sorted(rows.items()):
        old = previous.get(student)
        if student not in graded and student not in reused:
            out["kept"].append(student)
            continue
        if old is None:
            out["new"].append(student)
            continue
        diffs = [f"{c} {old.get(c) or '-'}->{(fmt(row.get(c)) if c != 'status' else row.get(c)) or '-'}"
                 for c in [*score_columns, "total", "status"]
                 if (old.get(c) or "") != ((fmt(row.get(c)) if c != "status" else row.get(c)) or "")]
        if diffs:
            out["changed"].append(f"{student} ({', '.join(diffs)})")
        else:
            out["reused" if student in reused else "unchanged"].append(student)
    return out


def summary(lab: str, rows: dict[str, dict], columns: list[str], points: dict[str, float],
            delta: dict[str, list[str]], statuses: dict[str, str], timing: dict[str, float],
            problems: list[str]) -> str:
    """The Markdown summary of a run (also printed)."""
    totals = [float(r["total"]) for r in rows.values() if r.get("total") not in (None, "")]
    max_total = sum(points.values())
    lines = [f"# Grades: {lab}", "", f"{len(rows)} students, generated {time.strftime('%Y-%m-%d %H:%M:%S')}.", ""]
    if totals:
        lines += [f"Total: mean {statistics.mean(totals):.2f}, median {statistics.median(totals):.2f} "
                  f"of {max_total:g} points.", ""]
    counts: dict[str, int] = {}
    for r in rows.values():
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines += ["| status | students | meaning |", "|---|---|---|"]
    lines += [f"| {s} | {n} | {statuses.get(s, '')} |" for s, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    lines += ["", "| question | points | mean | full marks |", "|---|---|---|---|"]
    for gid in columns:
        vals = [float(r[gid]) for r in rows.values() if r.get(gid) not in (None, "")]
        if vals:
            full = sum(v >= points[gid] for v in vals)
            lines.append(f"| {gid} | {points[gid]:g} | {statistics.mean(vals):.2f} | {full}/{len(vals)} |")
        else:
            lines.append(f"| {gid} | {points[gid]:g} | (not graded yet) | |")
    lines += ["", "## Changes since the previous run", ""]
    for key in ("new", "changed", "unchanged", "reused", "kept"):
        if delta.get(key):
            shown = delta[key] if key == "changed" else delta[key][:40]
            more = " ..." if len(shown) < len(delta[key]) else ""
            lines.append(f"* {key} ({len(delta[key])}): " + ", ".join(shown) + more)
    attention = [(s, r) for s, r in sorted(rows.items()) if r["status"] not in ("ok",)]
    if attention:
        lines += ["", "## Needs a look", "", "| student | status | total | notes |", "|---|---|---|---|"]
        lines += [f"| {s} | {r['status']} | {fmt(r.get('total'))} | {str(r.get('notes', '')).replace('|', '/')[:300]} |"
                  for s, r in attention]
    if problems:
        lines += ["", "## Problems", ""] + [f"* {p}" for p in problems]
    if timing.get("graded"):
        lines += ["", f"Graded {timing['graded']:.0f} submissions in {timing['wall']:.1f} s with {timing['jobs']:.0f} "
                  f"job(s): {timing['wall'] / timing['graded']:.1f} s per submission "
                  f"({timing['mean_job']:.1f} s each on average)."]
    return "\n".join(lines) + "\n"
