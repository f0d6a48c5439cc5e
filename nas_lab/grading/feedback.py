"""Student feedback without the hidden tests: what nbgrader's feedback HTML would otherwise show.

nbgrader renders the autograded notebook, whose test cells hold the hidden tests (source, printed
values, assertion messages with reference values). :func:`student_view` returns a copy fit for students:

* a test cell shows the source of the released notebook (the visible part) and a note;
* its outputs are those of the visible part; an error keeps only ``name: message`` (no traceback
  through grader code); a hidden test's failure shows its exception name and a hint, never its message
  (unless the lab author wrote a message that starts with ``hint:``, meant to be shown);
* grader messages (timeout, kernel death, integrity) are kept: they are about the student's own code.

A submission nbgrader could not render (not gradable, or grading stopped) gets :func:`plain_page` instead.
"""

from __future__ import annotations

import copy
import html
import re

from nbformat import NotebookNode
from nbformat.v4 import new_output

from nas_lab.grading.cells import BEGIN_HIDDEN, END_HIDDEN, cell_kind, grade_id, visible_source
from nas_lab.grading.report import fmt
from nas_lab.grading.status import STATUSES

HIDDEN_NOTE = "# (the grader also ran hidden tests here; they are not shown)"
HIDDEN_HINT = ("a hidden test of this question failed ({ename}). Your answer passes the visible checks above but "
               "not the grader's other cases (other inputs, sizes or arguments): re-read the task and try your "
               "code on inputs of your own.")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _plain_error(out: NotebookNode, evalue: str | None = None) -> NotebookNode:
    value = _ANSI.sub("", out.get("evalue", "") if evalue is None else evalue)[:2000]
    ename = out.get("ename", "Error")
    if ename == "NotImplementedError" and not value:
        value = "not answered yet: an answer cell still raises NotImplementedError"
    return new_output("error", ename=ename, evalue=value, traceback=[f"{ename}: {value}"])


def student_view(nb: NotebookNode, release: NotebookNode | None = None, begin: str = BEGIN_HIDDEN,
                 end: str = END_HIDDEN, strip_outputs: bool = False) -> NotebookNode:
    """A copy of the autograded notebook ``nb`` with nothing of the hidden tests left in it.

    ``strip_outputs`` also reduces the outputs of the student's own cells to their errors: for notebooks
    flagged for code that inspects the running tests, whose printed output could carry hidden values."""
    shown = {grade_id(c): c.source for c in (release.cells if release else [])}
    out = copy.deepcopy(nb)
    for cell in out.cells:
        if cell_kind(cell) != "test":
            continue
        gid = grade_id(cell)
        had_hidden = begin in cell.source
        cell.source = shown[gid] if gid in shown else visible_source(cell.source, begin, end)
        if had_hidden:
            cell.source = cell.source.rstrip("\n") + "\n" + HIDDEN_NOTE
        info = cell.metadata.pop("nas_lab", None) or {}
        hidden_from = info.get("hidden_from")
        outputs = list(cell.get("outputs", []))
        if had_hidden and not info:  # not run by GuardedExecute: no way to tell visible from hidden output
            hidden_from = 0
            info = {"failed": "hidden" if any(o.output_type == "error" for o in outputs) else None}
        grader = [o for o in outputs if o.output_type == "error" and o.ename in ("GradingIntegrityError", "KernelDied")]
        visible = outputs if hidden_from is None else outputs[:hidden_from]
        kept = [_plain_error(o) if o.output_type == "error" else o for o in visible if o not in grader]
        if info.get("failed") == "hidden":
            err = next((o for o in outputs[hidden_from:] if o.output_type == "error"), None)
            ename = err.ename if err is not None else "Error"
            message = err.get("evalue", "") if err is not None else ""
            text = message if message.lower().startswith("hint:") else HIDDEN_HINT.format(ename=ename)
            kept.append(new_output("error", ename=ename, evalue=text, traceback=[f"{ename}: {text}"]))
        kept += [_plain_error(o) for o in grader]
        cell.outputs = kept
    for cell in out.cells:
        cell.metadata.pop("nas_lab", None)
        if strip_outputs and cell.cell_type == "code" and cell_kind(cell) == "answer":
            cell.outputs = [_plain_error(o) for o in cell.outputs if o.output_type == "error"]
    return out


def plain_page(student: str, lab: str, status: str, notes: list[str], scores: dict[str, float | None]) -> str:
    """Feedback for a submission without nbgrader's page (not gradable, or grading stopped)."""
    e = html.escape
    items = "".join(f"<li>{e(n)}</li>" for n in notes if not n.startswith("suspicious code"))
    rows = "".join(f"<tr><td>{e(g)}</td><td>{fmt(v) or '-'}</td></tr>" for g, v in scores.items())
    table = f"<table><tr><th>question</th><th>score</th></tr>{rows}</table>" if rows else ""
    return (f"<!doctype html><meta charset='utf-8'><title>{e(lab)}: {e(student)}</title><h1>{e(lab)}</h1>"
            f"<p>Status: <b>{e(status)}</b>: {e(STATUSES[status])}.</p><ul>{items}</ul>{table}"
            f"<p>Hand in the notebook <code>{e(lab)}.ipynb</code> from the lab's folder, run from top to bottom.</p>")
