"""Autograding of the labs: ``nas-lab grade`` (docs/grading.md). Public API::

    from nas_lab.grading import grade, Limits, REPO

The modules, in the order a grading run uses them:

* :mod:`~nas_lab.grading.core`: :func:`grade`, in three steps: collect, dispatch, sheet;
* :mod:`~nas_lab.grading.cells`: what a cell is (answer, test, locked, manually graded) and the
  hidden-test / solution markers;
* :mod:`~nas_lab.grading.submissions`: finding, checking and normalising what students handed in;
* :mod:`~nas_lab.grading.scan`: suspicious code in the answers, for a TA to review;
* :mod:`~nas_lab.grading.course`: the temporary nbgrader course, package copy and job folders;
* :mod:`~nas_lab.grading.jobs`: the sandboxed worker processes, ``jobs`` at a time;
* :mod:`~nas_lab.grading.worker`: ``python -m nas_lab.grading.worker JOB.json`` grades one student;
* :mod:`~nas_lab.grading.execute`: the notebook runner (kernel deaths, timeouts, hidden tests, output caps);
* :mod:`~nas_lab.grading.rewrite`: test cells rewritten so that every value passes the guard;
* :mod:`~nas_lab.grading.guard` (in the kernel), made of :mod:`~nas_lab.grading.snapshot` (what student
  code replaced is put back) and :mod:`~nas_lab.grading.checks` (values that could fake a result);
* :mod:`~nas_lab.grading.feedback`: the students' feedback, without the hidden tests;
* :mod:`~nas_lab.grading.outcome`: a finished job's scores, flags and notes;
* :mod:`~nas_lab.grading.status`: the status column; :mod:`~nas_lab.grading.report`: the sheet and summary.

The three public names are loaded on first use: the grading kernel imports :mod:`nas_lab.grading.guard`,
and so this package, before any student code runs, and must get nothing but the standard library with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nas_lab.grading.core import grade
    from nas_lab.grading.course import REPO
    from nas_lab.grading.jobs import Limits

__all__ = ["REPO", "Limits", "grade"]
_HOME = {"grade": "nas_lab.grading.core", "REPO": "nas_lab.grading.course", "Limits": "nas_lab.grading.jobs"}


def __getattr__(name: str) -> object:
    """``grade``, ``Limits`` and ``REPO``, imported from their modules when first asked for."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
