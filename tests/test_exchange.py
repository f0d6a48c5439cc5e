"""nbgrader's exchange end to end, with ``nas-lab grade`` as the autograde step (docs/grading.md section 8).

An instructor and two students on one machine, each with a home folder of their own (their own
``~/.jupyter/nbgrader_config.py`` and nbgrader cache) and one exchange folder in tmp; the students are told
apart by ``CourseDirectory.student_id`` in their config, as separate unix users would be on a hub. The
round trip on the smallest lab (Lab 1): ``release_assignment`` -> ``fetch_assignment`` -> ``submit`` (alice:
the solution's answers in her fetched notebook; bob: the notebook as fetched) -> ``collect`` -> ``nas-lab
grade`` on the collected folder -> ``nas-lab stage-feedback`` -> ``release_feedback`` -> ``fetch_feedback``.
Both students get a feedback page, the scores are right, and no hidden test is in the pages.
"""

from __future__ import annotations

import csv
import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from nas_lab.grading.exchange import stage_feedback

ROOT = Path(__file__).resolve().parents[1]
LAB = "lab1_counting_macs"
BIN = Path(sys.executable).parent
_spec = importlib.util.spec_from_file_location("grading_cases", ROOT / "tests" / "grading_corpus" / "cases.py")
cases = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("grading_cases", cases)
_spec.loader.exec_module(cases)


def run(cmd: list[str], home: Path, cwd: Path) -> str:
    """Run a command as the person whose home is ``home``; its output, or a failure showing it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "NBGRADER"))}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-4000:]}"
    return output


def person(tmp: Path, name: str, exchange: Path, student: bool) -> Path:
    """A home folder with its own nbgrader config: the exchange and the course (and who the student is)."""
    home = tmp / "home" / name
    (home / ".jupyter").mkdir(parents=True)
    lines = [f"c.Exchange.root = {str(exchange)!r}", "c.CourseDirectory.course_id = 'nas-lab'"]
    if student:
        lines.append(f"c.CourseDirectory.student_id = {name!r}")
    (home / ".jupyter" / "nbgrader_config.py").write_text("c = get_config()  # noqa: F821\n" + "\n".join(lines) + "\n")
    return home


def page_text(path: Path) -> str:
    """The text of an HTML page (tags dropped, entities decoded): code survives syntax highlighting."""
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text()))


def hidden_lines(solution: nbformat.NotebookNode) -> set[str]:
    """Distinctive lines of the hidden tests (those that appear nowhere else in the notebook)."""
    inside, hidden, other = False, set(), set()
    for cell in solution.cells:
        for raw in cell.source.splitlines():
            line = raw.strip()
            if "BEGIN HIDDEN TESTS" in line or "END HIDDEN TESTS" in line:
                inside = "BEGIN" in line
            elif len(line) >= 20:
                (hidden if inside else other).add(line)
    return hidden - other


def test_exchange_round_trip(tmp_path: Path) -> None:
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    exchange.chmod(0o1777)  # world-writable with the sticky bit, as nbgrader's docs set it up
    instructor = person(tmp_path, "instructor", exchange, student=False)
    course = tmp_path / "course"  # the course repository's autograder/ and solutions/, as `make release` uses them
    course.mkdir()
    shutil.copy(ROOT / "autograder" / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / LAB, course / "solutions" / LAB)
    solution = nbformat.read(course / "solutions" / LAB / f"{LAB}.ipynb", as_version=4)

    # instructor: release
    run(["nbgrader", "generate_assignment", LAB, "--force"], instructor, course)
    run(["nbgrader", "release_assignment", LAB], instructor, course)
    assert (exchange / "nas-lab" / "outbound" / LAB / f"{LAB}.ipynb").is_file()

    # students: fetch, work, submit
    homes = {name: person(tmp_path, name, exchange, student=True) for name in ("alice", "bob")}
    for name, home in homes.items():
        run(["nbgrader", "fetch_assignment", LAB], home, home)
        fetched = home / LAB / f"{LAB}.ipynb"
        assert fetched.is_file(), f"{name} did not get the lab"
        if name == "alice":
            nbformat.write(cases.filled(nbformat.read(fetched, as_version=4), solution), fetched)
        run(["nbgrader", "submit", LAB], home, home)

    # instructor: collect, grade with nas-lab, hand the feedback back
    run(["nbgrader", "collect", LAB], instructor, course)
    submitted = course / "submitted"
    for name in homes:
        assert (submitted / name / LAB / f"{LAB}.ipynb").is_file()
        assert (submitted / name / LAB / "submission_secret.txt").is_file()
    grades = tmp_path / "grades"
    source = course / "solutions" / LAB  # the lab as released above, even if solutions/ changes meanwhile
    run(["nas-lab", "grade", str(source), str(submitted), "--out", str(grades), "--jobs", "2"], instructor, course)
    rows = {r["student"]: r for r in csv.DictReader(open(grades / "grades.csv"))}
    auto = sum(c.metadata["nbgrader"].get("points", 0) for c in solution.cells
               if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"].get("solution"))
    assert set(rows) == {"alice", "bob"}
    assert rows["alice"]["status"] == "ok" and float(rows["alice"]["total"]) == auto, rows["alice"]
    assert rows["bob"]["status"] == "ok" and float(rows["bob"]["total"]) == 0, rows["bob"]

    run(["nas-lab", "stage-feedback", LAB, str(submitted), "--out", str(grades)], instructor, course)
    run(["nbgrader", "release_feedback", LAB], instructor, course)

    # students: fetch the feedback
    hidden = hidden_lines(solution)
    assert hidden, "Lab 1 has hidden tests: the check below would prove nothing without them"
    for name, home in homes.items():
        run(["nbgrader", "fetch_feedback", LAB], home, home)
        pages = list((home / LAB / "feedback").glob(f"*/{LAB}.html"))
        assert len(pages) == 1, f"{name} got {pages}"
        text = page_text(pages[0])
        assert "HIDDEN TESTS" not in text
        leaked = [line for line in hidden if line in text]
        assert not leaked, f"hidden tests in {name}'s feedback: {leaked[:3]}"
        assert "Q1 tests" in text  # the visible tests are there
    assert "NotImplementedError" in page_text(next((homes["bob"] / LAB / "feedback").glob(f"*/{LAB}.html")))


def test_stage_feedback_layout(tmp_path: Path) -> None:
    """Pages named after the submitted notebook, with timestamp and secret; students without them skipped."""
    lab, out, submitted, feedback = "lab9", tmp_path / "grades", tmp_path / "submitted", tmp_path / "feedback"
    for student, notebook in (("alice", "lab9"), ("bob", "lab9 (2)"), ("carol", "lab9")):
        sub = submitted / student / lab
        sub.mkdir(parents=True)
        (sub / f"{notebook}.ipynb").write_text("{}")
        (sub / "timestamp.txt").write_text(f"2026-01-01 {student}")
        if student != "carol":
            (sub / "submission_secret.txt").write_text(f"secret-{student}")
        (out / "feedback" / student).mkdir(parents=True)
        (out / "feedback" / student / f"{lab}.html").write_text(f"<p>{student}</p>")
    staged, skipped = stage_feedback(lab, submitted, out, feedback)
    assert staged == ["alice", "bob"]
    assert len(skipped) == 1 and skipped[0].startswith("carol: no ") and "submission_secret.txt" in skipped[0]
    assert (feedback / "alice" / lab / "lab9.html").read_text() == "<p>alice</p>"
    assert (feedback / "bob" / lab / "lab9 (2).html").read_text() == "<p>bob</p>"
    assert (feedback / "bob" / lab / "submission_secret.txt").read_text() == "secret-bob"
    assert (feedback / "bob" / lab / "timestamp.txt").read_text() == "2026-01-01 bob"
