"""``nas-lab grade``: autograde a class's submissions of one lab (see docs/grading.md)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from nas_lab.cli.base import command, fail


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("lab", help="lab name (solutions/<lab>), or the path of its source folder or notebook")
    p.add_argument("submissions", type=Path,
                   help="folder of SUBMISSIONS/<student>/<notebook>.ipynb, <student>.zip or <student>.ipynb")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: grades/<lab>)")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="students graded in parallel (default: half the cores)")
    p.add_argument("--timeout", type=float, default=900, help="wall-clock seconds per student (default 900)")
    p.add_argument("--cell-timeout", type=int, default=None,
                   help="seconds per cell (default: the nbgrader config's Execute.timeout)")
    p.add_argument("--memory-mb", type=int, default=4096,
                   help="memory limit (RLIMIT_DATA) of each student's kernel, in MB (default 4096)")
    p.add_argument("--regrade", action="store_true", help="grade again submissions that have not changed")
    p.add_argument("--keep", action="store_true", help="keep the temporary course (for debugging)")
    p.add_argument("--no-sandbox-user", action="store_true",
                   help="as root, do not run each slot under its own unprivileged uid")
    p.add_argument("--config", type=Path, default=None, help="nbgrader config (default: autograder/nbgrader_config.py)")


def _cell_timeout(config: Path | None) -> int:
    from traitlets.config.loader import PyFileConfigLoader

    from nas_lab.grading import REPO

    path = Path(config or REPO / "autograder" / "nbgrader_config.py")
    c = PyFileConfigLoader(path.name, path=str(path.parent)).load_config()
    return int(c.Execute.get("timeout", 30))


@command("grade", "autograde a folder of submissions of one lab: grades.csv, feedback, summary",
         configure=_configure)
def grade_submissions(args: argparse.Namespace) -> int:
    from nas_lab.grading import Limits, grade

    if not args.submissions.is_dir():
        return fail(f"{args.submissions} is not a folder")
    limits = Limits(jobs=max(1, args.jobs), timeout=args.timeout,
                    cell_timeout=args.cell_timeout or _cell_timeout(args.config), memory_mb=args.memory_mb,
                    sandbox_user=not args.no_sandbox_user)
    try:
        result = grade(args.lab, args.submissions, args.out, limits, regrade=args.regrade, keep=args.keep,
                       config=args.config)
    except FileNotFoundError as err:
        return fail(str(err))
    print(f"wrote {result['out'] / 'grades.csv'}, {result['out'] / 'summary.md'} and feedback/")
    return 0


def _configure_stage(p: argparse.ArgumentParser) -> None:
    p.add_argument("lab", help="lab name (the nbgrader assignment)")
    p.add_argument("submitted", type=Path, help="what `nbgrader collect` wrote: <course>/submitted")
    p.add_argument("--out", type=Path, default=None, help="the `nas-lab grade --out` folder (default: grades/<lab>)")
    p.add_argument("--feedback", type=Path, default=None,
                   help="nbgrader's feedback folder (default: feedback/ beside SUBMITTED)")


@command("stage-feedback", "put nas-lab grade's feedback pages where `nbgrader release_feedback` takes them",
         configure=_configure_stage)
def stage_feedback(args: argparse.Namespace) -> int:
    from nas_lab.grading.exchange import stage_feedback as stage

    if not args.submitted.is_dir():
        return fail(f"{args.submitted} is not a folder")
    lab = Path(args.lab).name.removesuffix(".ipynb")
    out = args.out or Path("grades") / lab
    feedback = args.feedback or args.submitted.resolve().parent / "feedback"
    staged, skipped = stage(lab, args.submitted, out, feedback)
    for note in skipped:
        print(f"skipped {note}")
    print(f"staged feedback of {len(staged)} students in {feedback}; now: nbgrader release_feedback {lab}")
    return 0 if staged or not skipped else 1
