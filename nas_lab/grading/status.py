"""The ``status`` column of the grade sheet: one word per student, from the flags its grading raised.

A flag names one thing that happened (``timeout``, ``patched``, ``test_edited`` ...); :data:`STATUSES`
lists the statuses, most severe first, and :func:`status` picks the first that one of the flags maps to.
All flags stay in the sheet's ``flags`` column.
"""

from __future__ import annotations

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
#: Statuses of submissions that were not graded at all: every autograded cell scores 0.
NOT_GRADED = ("missing", "invalid", "wrong_lab", "ambiguous")
#: Flags that are not statuses themselves, and the status they count as.
FLAG_STATUS = {"patched": "review", "files_restored": "review", "suspicious": "review", "threads": "review",
               "test_edited": "restored", "test_deleted": "restored", "locked_edited": "restored",
               "cell_deleted": "restored", "duplicate_cell": "restored", "metadata_edited": "restored"}


def status(flags: list[str]) -> str:
    """The status of a student with these flags ("ok" when none applies)."""
    mapped = {FLAG_STATUS.get(f, f) for f in flags}
    return next((s for s in STATUSES if s in mapped), "ok")
