"""Feedback pages of ``nas-lab grade`` laid out for ``nbgrader release_feedback`` (the exchange's way back).

``nbgrader collect`` puts each submission in ``<course>/submitted/<student>/<lab>/`` with ``timestamp.txt``
and ``submission_secret.txt``. ``nbgrader release_feedback`` reads ``<course>/feedback/<student>/<lab>/
<notebook>.html`` and needs both files beside it: the secret names the page in the exchange, so that only
that student's ``fetch_feedback`` finds it. nbgrader's own ``generate_feedback`` would render the
autograded notebook with its hidden tests; :func:`stage_feedback` copies ``nas-lab grade``'s pages instead
(hidden tests removed, docs/grading.md section 6).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

_STUDENT_ID = re.compile(r"[^A-Za-z0-9._@+-]")  # as nas_lab.grading.submissions cleans student ids


def stage_feedback(lab: str, submitted: Path, out: Path, feedback: Path) -> tuple[list[str], list[str]]:
    """Copy ``out/feedback/<student>/<lab>.html`` of every student in ``submitted`` (nbgrader's collect
    layout) to ``feedback/<student>/<lab>/<notebook>.html`` with the submission's timestamp and secret.

    ``<notebook>`` is the name of the notebook the student submitted (nbgrader matches feedback by it).
    Returns (students staged, why others were not)."""
    staged, skipped = [], []
    for folder in sorted(p for p in Path(submitted).iterdir() if p.is_dir() and not p.name.startswith(".")):
        student, sub = folder.name, folder / lab
        page = Path(out) / "feedback" / _STUDENT_ID.sub("_", student)[:100] / f"{lab}.html"
        missing = [str(p) for p in (page, sub / "timestamp.txt", sub / "submission_secret.txt") if not p.is_file()]
        if missing:
            skipped.append(f"{student}: no {', '.join(missing)}")
            continue
        notebooks = sorted(p.stem for p in sub.glob("*.ipynb"))
        dest = Path(feedback) / student / lab
        dest.mkdir(parents=True, exist_ok=True)
        for old in dest.glob("*.html"):  # a page of an earlier run under another notebook name
            old.unlink()
        shutil.copyfile(page, dest / f"{notebooks[0] if len(notebooks) == 1 else lab}.html")
        for name in ("timestamp.txt", "submission_secret.txt"):
            shutil.copyfile(sub / name, dest / name)
        staged.append(student)
    return staged, skipped
