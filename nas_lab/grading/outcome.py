"""What one finished grading job produced: its scores, flags and notes, read from the worker's files.

The worker (:mod:`nas_lab.grading.worker`) leaves in ``<job>/out``: ``result.json`` (the gradebook's
scores, or the error), ``report.json`` (kernel restarts and events of
:class:`~nas_lab.grading.execute.GuardedExecute`), ``progress.jsonl`` (scores as each graded cell
finished: what a job stopped by the wall-clock limit reached) and ``autograded.ipynb``.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat

from nas_lab.grading.jobs import Job, Limits


def _json(path: Path, default: object) -> object:
    return json.loads(path.read_text()) if path.exists() else default


def _progress(out: Path) -> dict[str, float | None]:
    """{grade_id: score} of the graded cells that finished."""
    if not (out / "progress.jsonl").exists():
        return {}
    entries = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    return {entry["grade_id"]: entry["score"] for entry in entries}


def _ending(job: Job, res: dict | None, limits: Limits, flags: list[str], notes: list[str]) -> dict | None:
    """How the worker ended: adds a timeout or error flag and note; the gradebook's scores, or None."""
    if job.timed_out:
        flags.append("timeout")
        notes.append(f"grading was stopped after {limits.timeout:g} s; tests not reached score 0")
    elif res is None or not res.get("autograde_ok"):
        flags.append("error")
        why = (res or {}).get("error") or f"the grading process ended with code {job.returncode}"
        notes.append("grader error: " + why.strip().splitlines()[-1][:300])
    else:
        return {gid: s["score"] for gid, s in res["scores"].items()}
    return None


def _report(report: dict, flags: list[str], notes: list[str]) -> None:
    """Flags and notes of the kernel restarts and events the runner reported."""
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


def _errors(graded: Path, flags: list[str]) -> None:
    """Flags of the errors in the autograded notebook's outputs (memory, exit())."""
    if not graded.exists():
        return
    for cell in nbformat.read(graded, as_version=4).cells:
        for o in cell.get("outputs", []):
            if o.output_type != "error":
                continue
            if o.ename == "MemoryError" or "can't allocate memory" in o.get("evalue", ""):
                flags.append("memory_limit")
            elif o.ename == "SystemExit":
                flags.append("exited")


def outcome(job: Job, limits: Limits) -> dict:
    """Scores, flags and notes of a finished job, from the worker's files."""
    out = job.folder / "out"
    flags: list[str] = []
    notes: list[str] = []
    scores = _ending(job, _json(out / "result.json", None), limits, flags, notes)
    _report(_json(out / "report.json", {}), flags, notes)
    _errors(out / "autograded.ipynb", flags)
    return {"scores": _progress(out) if scores is None else scores, "flags": list(dict.fromkeys(flags)),
            "notes": list(dict.fromkeys(notes)), "seconds": round(job.seconds, 2)}
