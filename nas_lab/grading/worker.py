"""Grade one submission in this process: ``python -m nas_lab.grading.worker JOB.json``.

Started by :mod:`nas_lab.grading.jobs` once per student, in its own process group, with the memory limit,
environment and (when the grader runs as root) user id of its slot. The job folder holds a private copy
of the nbgrader course (config, source and release of the lab, gradebook, the submission). This process
runs ``nbgrader autograde`` with :class:`~nas_lab.grading.execute.GuardedExecute` in place of
nbgrader's ``Execute``, reads the scores back from its gradebook, writes the student feedback HTML
from :func:`~nas_lab.grading.feedback.student_view`, and leaves ``out/result.json``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import traceback
from pathlib import Path

import nbformat

from nas_lab.grading.cells import BEGIN_HIDDEN, END_HIDDEN


def _config(course: Path, job: dict):  # noqa: ANN202 - a traitlets Config
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (
        AssignLatePenalties,
        CheckCellMetadata,
        IgnorePattern,
        LimitOutput,
        SaveAutoGrades,
    )
    from traitlets.config.loader import PyFileConfigLoader

    from nas_lab.grading.execute import GuardedExecute

    c = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    c.Autograde.autograde_preprocessors = [GuardedExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
                                           SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
    c.OverwriteCells.add_missing_cells = True
    c.Execute.timeout = job["cell_timeout"]
    c.Execute.interrupt_on_timeout = True
    g = c.GuardedExecute
    g.grace = job.get("grace", 10)
    g.report_file = job["report_file"]
    g.progress_file = job["progress_file"]
    g.protected_dirs = job.get("protected_dirs", [])
    g.kernel_memory_mb = job.get("memory_mb", 0)
    if "ClearHiddenTests" in c:
        g.begin_hidden = c.ClearHiddenTests.get("begin_test_delimeter", BEGIN_HIDDEN)
        g.end_hidden = c.ClearHiddenTests.get("end_test_delimeter", END_HIDDEN)
    c.LimitOutput.max_lines = 2000
    return c


def _scores(api, lab: str, student: str) -> dict[str, dict]:  # noqa: ANN001
    from nbgrader.api import Gradebook

    out = {}
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gb:
        nb = gb.find_submission_notebook(lab, lab, student)
        for grade in nb.grades:
            out[grade.name] = {"score": grade.score, "max": grade.max_score, "auto": grade.auto_score,
                               "needs_manual": bool(grade.needs_manual_grade)}
    return out


def run(job: dict) -> dict:
    """Autograde and write feedback for one student; returns the result dictionary."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from nas_lab.grading.feedback import student_view

    course, lab, student = Path(job["course"]), job["lab"], job["student"]
    out = Path(job["out"])
    config = _config(course, job)
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    result: dict = {"student": student, "lab": lab, "started": time.time()}
    res = api.autograde(lab, student, force=True, create=True)
    result["autograde_ok"] = bool(res.get("success"))
    result["log"] = (res.get("log") or "")[-20000:]
    if not res.get("success"):
        result["error"] = (res.get("error") or "")[-5000:]
        return result
    result["scores"] = _scores(api, lab, student)
    graded = Path(api.coursedir.format_path(api.coursedir.autograded_directory, student, lab)) / f"{lab}.ipynb"
    shutil.copy(graded, out / "autograded.ipynb")
    if job.get("feedback", True):
        release = nbformat.read(course / "labs" / lab / f"{lab}.ipynb", as_version=4)
        view = student_view(nbformat.read(graded, as_version=4), release, strip_outputs=job.get("strip_outputs", False))
        nbformat.write(view, graded)
        fb = api.generate_feedback(lab, student, force=True)
        html = Path(api.coursedir.format_path(api.coursedir.feedback_directory, student, lab)) / f"{lab}.html"
        if fb.get("success") and html.exists():
            shutil.copy(html, out / "feedback.html")
        else:
            result["feedback_error"] = (fb.get("error") or fb.get("log") or "")[-3000:]
    return result


def main(argv: list[str] | None = None) -> int:
    job_file = Path((argv or sys.argv[1:])[0])
    job = json.loads(job_file.read_text())
    out = Path(job["out"])
    try:
        result = run(job)
    except BaseException as err:  # noqa: BLE001 - everything goes to the result file
        result = {"student": job.get("student"), "autograde_ok": False,
                  "error": f"{type(err).__name__}: {err}\n{traceback.format_exc()[-5000:]}"}
    result["finished"] = time.time()
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(out / "result.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
