"""``nas-lab grade``: adversarial and honest submissions graded in one batch, feedback, re-runs.

The corpus (tests/grading_corpus/cases.py) is built at test time from the released notebooks, so it
follows the labs. Two batches run once per module: the full battery on a tiny fixture lab (seconds per
submission), and a few cases on Lab 1 with its real tests. Unit tests cover the pieces without kernels.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from nas_lab.grading import Limits
from nas_lab.grading.cells import split_hidden, visible_source
from nas_lab.grading.course import build_course, build_site
from nas_lab.grading.feedback import student_view
from nas_lab.grading.guard import Guard
from nas_lab.grading.report import changes, manual_grades, write_grades
from nas_lab.grading.rewrite import rewrite_test, top_level_names
from nas_lab.grading.submissions import load, normalise, read_notebook

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "grading_corpus"
TINY = CORPUS / "tiny_lab"
CONFIG = ROOT / "autograder" / "nbgrader_config.py"
LAB1 = "lab1_counting_macs"

_spec = importlib.util.spec_from_file_location("grading_cases", CORPUS / "cases.py")
cases = importlib.util.module_from_spec(_spec)
sys.modules["grading_cases"] = cases
_spec.loader.exec_module(cases)

pytestmark = pytest.mark.filterwarnings("ignore::Warning")
TINY_LIMITS = Limits(jobs=2, timeout=40, cell_timeout=5, grace=3, memory_mb=1200)
LAB1_LIMITS = Limits(jobs=2, timeout=300, cell_timeout=120, grace=5, memory_mb=4096)
#: What feedback must never contain: hidden test source, names and reference values.
TINY_SECRETS = ["_secret_offset", "_hidden_xs", "_hidden_ref", "2.9166", "0.5, 1.0, 7.25", "rtol=1e-12",
                "BEGIN HIDDEN", "hidden reference", "add(40, 2)"]
LAB1_SECRETS = ["_importlib", "_random.Random", "_ref.", "BEGIN HIDDEN", "_rng"]


def _data_digest() -> str:
    from nas_lab.artifacts import data_dir

    h = hashlib.sha256()
    for p in sorted(data_dir().rglob("*")):
        if p.is_file() and ".shard" not in p.name:  # a local build-scratch-bench may be writing its shards
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def _release(lab_dir: Path, tmp: Path) -> nbformat.NotebookNode:
    course = build_course(lab_dir, tmp, CONFIG)
    return nbformat.read(course / "labs" / lab_dir.name / f"{lab_dir.name}.ipynb", as_version=4)


def _batch(tmp: Path, lab_dir: Path, case_list: list, limits: Limits, other: nbformat.NotebookNode | None) -> dict:
    from nas_lab.grading import grade

    release = _release(lab_dir, tmp / "course")
    solution = nbformat.read(lab_dir / f"{lab_dir.name}.ipynb", as_version=4)
    cases.build(tmp / "submissions", case_list, lab_dir.name, release, solution, other)
    digest = _data_digest()
    result = grade(lab_dir, tmp / "submissions", tmp / "out", limits, echo=lambda s: None)
    result["data_unchanged"] = _data_digest() == digest
    result["release"] = release
    return result


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    other = nbformat.read(ROOT / "labs" / LAB1 / f"{LAB1}.ipynb", as_version=4)
    return _batch(tmp_path_factory.mktemp("tiny"), TINY, cases.tiny_cases(), TINY_LIMITS, other)


@pytest.fixture(scope="module")
def lab1(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _batch(tmp_path_factory.mktemp("lab1"), ROOT / "solutions" / LAB1, cases.lab1_cases(), LAB1_LIMITS, None)


def _check(result: dict, case) -> None:  # noqa: ANN001
    row = result["rows"][case.name]
    assert row["status"] == case.status, f"{case.name}: status {row['status']!r} ({row['flags']}): {row['notes']}"
    got = {k: float(v) for k, v in row.items() if k.endswith("_test") and v != ""}
    auto = sum(got.values())
    if case.total is not None:
        assert auto == case.total, f"{case.name}: {auto} autograded points, expected {case.total}: {got} {row['notes']}"
    for gid, score in case.scores.items():
        assert got.get(gid) == score, f"{case.name}: {gid} = {got.get(gid)}, expected {score}"
    for flag in case.flags:
        assert flag in row["flags"].split(";"), f"{case.name}: flag {flag} missing from {row['flags']}"
    assert row["max_total"] != "" and row["status"]


# ------------------------------------------------------------------------------- the tiny-lab batch


@pytest.mark.parametrize("case", cases.tiny_cases(), ids=lambda c: c.name)
def test_tiny_corpus(tiny: dict, case) -> None:  # noqa: ANN001
    _check(tiny, case)


def test_sheet_and_files(tiny: dict) -> None:
    out = tiny["out"]
    with open(out / "grades.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    for column in ("student", "q1_test", "q2_test", "q3_answer", "total", "max_total", "status"):
        assert column in reader.fieldnames
    assert {r["student"] for r in rows} == {c.name for c in cases.tiny_cases()}
    assert all(r["max_total"] == "6" for r in rows)  # 5 autograded + 1 for the TA
    assert (out / "summary.md").read_text().startswith("# Grades: tiny_lab")
    assert (out / "manual_grades.csv").exists()
    for case in cases.tiny_cases():
        assert (out / "feedback" / case.name / "tiny_lab.html").exists(), case.name
    honest = (out / "autograded" / "honest" / "tiny_lab.ipynb").read_text()
    assert "BEGIN HIDDEN TESTS" in honest, "the TA copy keeps the hidden tests"
    assert tiny["data_unchanged"], "grading changed the repository's data/"


def test_feedback_hides_hidden_tests(tiny: dict) -> None:
    for page in sorted((tiny["out"] / "feedback").glob("*/*.html")):
        text = page.read_text()
        leaked = [s for s in TINY_SECRETS if s in text]
        assert not leaked, f"{page.parent.name}'s feedback shows hidden test content: {leaked}"
    hard = (tiny["out"] / "feedback" / "hardcoded" / "tiny_lab.html").read_text()
    assert "a hidden test of this question failed" in hard
    honest = (tiny["out"] / "feedback" / "honest" / "tiny_lab.html").read_text()
    assert "value: 2.0" in honest, "visible test output is kept"
    blank = (tiny["out"] / "feedback" / "blank" / "tiny_lab.html").read_text()
    assert "not answered yet" in blank


def test_outputs_are_bounded(tiny: dict) -> None:
    graded = tiny["out"] / "autograded" / "huge_output" / "tiny_lab.ipynb"
    assert graded.stat().st_size < 3_000_000
    assert "output truncated by the grader" in graded.read_text()


def test_rerun_is_safe(tiny: dict, tmp_path: Path) -> None:
    """Second run, through the CLI: one fixed submission, one new, one withdrawn, a manual grade typed in."""
    from nas_lab.cli import main

    subs, out = tmp_path / "subs", tmp_path / "out"
    shutil.copytree(tiny["out"], out)
    shutil.copytree(tiny["out"].parent / "submissions", subs)
    first = (out / "grades.csv").read_text()
    shutil.rmtree(subs / "hardcoded")
    shutil.copytree(subs / "honest", subs / "hardcoded")  # the student fixed Q2
    shutil.copytree(subs / "honest", subs / "newcomer")
    shutil.rmtree(subs / "blank")
    with open(out / "manual_grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row["student"] == "honest":
            row["q3_answer"], row["comment"] = "1", "good"
    with open(out / "manual_grades.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code = main(["grade", str(TINY), str(subs), "--out", str(out), "--jobs", "2", "--timeout", "40",
                 "--cell-timeout", "5", "--memory-mb", "1200"])
    assert code == 0
    assert (out / "grades.previous.csv").read_text() == first
    assert len(list((out / "history").glob("grades-*.csv"))) >= 1
    with open(out / "grades.csv", newline="") as f:
        now = {r["student"]: r for r in csv.DictReader(f)}
    assert now["hardcoded"]["total"] == "5" and now["newcomer"]["total"] == "5"
    assert now["honest"]["q3_answer"] == "1" and now["honest"]["total"] == "6"
    assert now["blank"]["total"] == "0" and "not in the last run" in now["blank"]["notes"]
    summary = (out / "summary.md").read_text()
    assert "new (1): newcomer" in summary
    assert "changed (2): hardcoded (q2_test 0->3, total 2->5)" in summary  # and honest: its manual grade
    assert "kept (1): blank" in summary and "reused (" in summary
    manual = (out / "manual_grades.csv").read_text()
    assert "good" in manual and "newcomer" in manual


# ------------------------------------------------------------------------------------ Lab 1 batch


@pytest.mark.parametrize("case", cases.lab1_cases(), ids=lambda c: c.name)
def test_lab1_corpus(lab1: dict, case) -> None:  # noqa: ANN001
    _check(lab1, case)


def test_lab1_feedback_hides_hidden_tests(lab1: dict) -> None:
    for page in sorted((lab1["out"] / "feedback").glob("*/*.html")):
        text = page.read_text()
        leaked = [s for s in LAB1_SECRETS if s in text]
        assert not leaked, f"{page.parent.name}'s feedback shows hidden test content: {leaked}"
    page = (lab1["out"] / "feedback" / "hardcoded" / f"{LAB1}.html").read_text()
    assert "a hidden test of this question failed" in page
    assert lab1["data_unchanged"]


@pytest.mark.slow
@pytest.mark.parametrize("lab", sorted(p.name for p in (ROOT / "solutions").iterdir()
                                       if (p / f"{p.name}.ipynb").exists() and p.name != LAB1))
def test_every_lab_honest_full_marks(lab: str, tmp_path: Path) -> None:
    """The guard never costs an honest student a point, on any lab (the blank release scores 0); a student who
    only calls the library's versions of the answers scores nothing on the questions that ask for their own;
    on Lab 4, broken search operators also cost the search targets that run them (cases.lab4_operator_cases)."""
    solution = nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    own_work = cases.own_work_tests(solution)
    batch = [cases.Case("honest", "ok", None), cases.Case("blank", "ok", 0, base="release")]
    if own_work:
        batch.append(cases.Case("delegating", "ok", None, base="delegating", scores=dict.fromkeys(own_work, 0)))
    extra = cases.lab4_operator_cases() if lab == "lab4_ofa_search" else []
    result = _batch(tmp_path, ROOT / "solutions" / lab, batch + extra, LAB1_LIMITS, None)
    for case in batch[2:] + extra:
        _check(result, case)
    honest = result["rows"]["honest"]
    assert honest["status"] == "ok", honest["notes"]
    release = result["release"]
    auto = sum(float(c.metadata.nbgrader["points"]) for c in release.cells
               if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata.nbgrader.get("solution"))
    assert float(honest["total"]) == auto


# ----------------------------------------------------------------------------- pieces, no kernels


def test_split_hidden_and_visible() -> None:
    src = "a = 1\nassert a == 1\n### BEGIN HIDDEN TESTS\n_x = 2\nassert _x == 2\n### END HIDDEN TESTS\nprint(a)"
    assert split_hidden(src) == [(False, "a = 1\nassert a == 1"), (True, "_x = 2\nassert _x == 2"), (False, "print(a)")]
    assert visible_source(src) == "a = 1\nassert a == 1\nprint(a)"
    nested = "if True:\n    ### BEGIN HIDDEN TESTS\n    x = 1\n    ### END HIDDEN TESTS\n    y = 2"
    assert split_hidden(nested) == [(True, "if True:\n    x = 1\n    y = 2")]  # unsplittable: all hidden
    assert top_level_names("import numpy as np\nfor i in range(3):\n    j = i\ndef f(x):\n    z = 1\n_a, b = 1, 2") == [
        "_a", "b", "f", "i", "j", "np"]


def _run_rewritten(code: str, **ns: object) -> dict:
    guard = Guard("t0", hooks=False)
    scope = {guard.name: guard, **ns}
    exec(compile(rewrite_test(code, guard.name), "<test>", "exec"), scope)  # noqa: S102 - our own test code
    return scope


def test_rewritten_tests_behave_the_same_on_honest_values() -> None:
    import numpy as np
    import torch

    code = ("got = f(3)\nassert got == 9 and 0 < got <= 9 and not got != 9\nassert [got, 2] == [9, 2]\n"
            "assert abs(got - 9.0) < 1e-9 and -got == -9 and got in {9}\nt = torch.arange(3.0)\n"
            "assert torch.equal(t * 2, torch.tensor([0.0, 2.0, 4.0])) and (t >= 0).all()\n"
            "np.testing.assert_allclose(np.array([1.0]) * got, [9.0])\nr = sorted([3, 1, 2], key=lambda v: -v)\n"
            "total = sum(w for w in range(4) if w % 2)")
    scope = _run_rewritten(code, f=lambda x: x * x, torch=torch, np=np)
    assert scope["r"] == [3, 2, 1] and scope["total"] == 4


@pytest.mark.parametrize("fake", ["always_equal", "int_subclass", "tensor_subclass", "object_array", "in_tuple"])
def test_rewritten_tests_refuse_fakes(fake: str) -> None:
    import numpy as np
    import torch

    class AlwaysEqual:
        def __eq__(self, other: object) -> bool:
            return True

    class Sneaky(int):
        __eq__ = int.__ne__

    class Faked(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
            return True

    values = {"always_equal": AlwaysEqual(), "int_subclass": Sneaky(1),
              "tensor_subclass": torch.zeros(2).as_subclass(Faked),
              "object_array": np.array([AlwaysEqual()], dtype=object), "in_tuple": (1, AlwaysEqual())}
    with pytest.raises(TypeError, match="the grader cannot compare"):
        _run_rewritten("assert torch.allclose(f(), torch.ones(2))" if fake == "tensor_subclass"
                       else "assert f() == 12345", f=lambda: values[fake], torch=torch)


def test_rewritten_tests_use_pristine_builtins() -> None:
    scope = _run_rewritten("ok = abs(-3) == 3 and len([1, 2]) == 2", abs=lambda x: 0, len=lambda x: 2)
    assert scope["ok"] is True


def test_site_copies_every_subpackage(tmp_path: Path) -> None:
    """Kernels import nas_lab (the guard in nas_lab/grading/ included) from the site copy: all of it goes."""
    site = build_site(tmp_path)
    package = ROOT / "nas_lab"
    for init in package.rglob("__init__.py"):
        assert (site / "nas_lab" / init.relative_to(package)).is_file(), init
    assert (site / "nas_lab" / "grading" / "guard.py").is_file()


def test_read_notebook_rejects_junk() -> None:
    assert read_notebook(b"")[1] == "the file is empty"
    assert "not valid JSON" in read_notebook(b"{oops")[1]
    assert "no list of cells" in read_notebook(b'{"cells": 3}')[1]
    nb, why = read_notebook(nbformat.writes(nbformat.v4.new_notebook()).encode())
    assert nb is not None and why == ""


def test_normalise_restores_the_release(tmp_path: Path) -> None:
    release = _release(TINY, tmp_path)
    nb = nbformat.from_dict(json.loads(nbformat.writes(release)))
    test = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "q1_test")
    test.source, test.metadata.nbgrader["points"] = "pass", 99
    nb.cells.append(nbformat.from_dict(json.loads(json.dumps(test))))  # a copy at the end
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") not in ("setup", "q2_test")]
    out, notes, flags = normalise(nb, release)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in out.cells]
    assert ids.count("q1_test") == 1 and "setup" in ids and "q2_test" in ids
    assert ids.index("setup") < ids.index("q1_answer") < ids.index("q2_answer") < ids.index("q2_test")
    graded = next(c for c in out.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "q1_test")
    assert graded.metadata.nbgrader["points"] == 2 and graded.source != "pass"
    assert {"duplicate_cell", "test_edited", "test_deleted", "cell_deleted", "metadata_edited"} <= set(flags)
    assert len({c.id for c in out.cells}) == len(out.cells)


def test_load_is_lenient_about_names(tmp_path: Path) -> None:
    release = _release(TINY, tmp_path / "c")
    (tmp_path / "s" / "ann" / "deep").mkdir(parents=True)
    nbformat.write(release, tmp_path / "s" / "ann" / "deep" / "My Notebook.ipynb")
    (tmp_path / "s" / "ann" / ".ipynb_checkpoints").mkdir()
    nbformat.write(release, tmp_path / "s" / "ann" / ".ipynb_checkpoints" / "x-checkpoint.ipynb")
    sub = load("ann", tmp_path / "s" / "ann", "tiny_lab", release, {})
    assert sub.status == "" and "renamed" in sub.flags and sub.filename == "deep/My Notebook.ipynb"
    lab1 = nbformat.read(ROOT / "labs" / LAB1 / f"{LAB1}.ipynb", as_version=4)
    (tmp_path / "s" / "bo").mkdir()
    nbformat.write(lab1, tmp_path / "s" / "bo" / "tiny_lab.ipynb")
    sub = load("bo", tmp_path / "s" / "bo", "tiny_lab", release, {LAB1: lab1})
    assert sub.status == "wrong_lab" and LAB1 in sub.notes[0]


def test_student_view_without_metadata_hides_everything() -> None:
    cell = nbformat.v4.new_code_cell("assert f() == 1\n### BEGIN HIDDEN TESTS\nassert f() == 2, 'expected 2'\n"
                                     "### END HIDDEN TESTS")
    cell.metadata.nbgrader = {"grade": True, "solution": False, "locked": True, "grade_id": "t", "points": 1}
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="secret 2\n"),
                    nbformat.v4.new_output("error", ename="AssertionError", evalue="expected 2", traceback=[])]
    view = student_view(nbformat.v4.new_notebook(cells=[cell]))
    text = nbformat.writes(view)
    assert "secret" not in text and "expected 2" not in text and "hidden test" in text


def test_report_history_changes_and_manual_grades(tmp_path: Path) -> None:
    cols = ["student", "q1", "total", "status"]
    write_grades(tmp_path, cols, {"a": {"student": "a", "q1": "1", "total": "1", "status": "ok"}})
    previous = write_grades(tmp_path, cols, {"a": {"student": "a", "q1": "2", "total": "2", "status": "ok"},
                                             "b": {"student": "b", "q1": "0", "total": "0", "status": "ok"}})
    assert previous["a"]["q1"] == "1" and (tmp_path / "grades.previous.csv").exists()
    delta = changes(previous, {"a": {"q1": 2, "total": 2, "status": "ok"}, "b": {"q1": 0, "total": 0, "status": "ok"}},
                    {"a", "b"}, set(), ["q1"])
    assert delta["new"] == ["b"] and delta["changed"] == ["a (q1 1->2, total 1->2)"]
    scores, problems = manual_grades(tmp_path, ["a", "b"], {"w": 2.0})
    assert scores == {} and problems == []
    text = (tmp_path / "manual_grades.csv").read_text().replace("a,,", "a,1.5,").replace("b,,", "b,7,")
    (tmp_path / "manual_grades.csv").write_text(text)
    scores, problems = manual_grades(tmp_path, ["a", "b", "c"], {"w": 2.0})
    assert scores == {"a": {"w": 1.5}} and "outside" in problems[0]
    text = (tmp_path / "manual_grades.csv").read_text()
    assert "c," in text and "a,1.5," in text


@pytest.mark.parametrize("lab", sorted(p.parent.name for p in (ROOT / "solutions").glob("*/*.ipynb")
                                       if p.stem == p.parent.name))
def test_test_cells_follow_the_grading_pattern(lab: str) -> None:
    """docs/grading.md section 10: one hidden region, at the end, that parses on its own; private names in
    it; no bare expression at the end (nbgrader would read it as partial credit)."""
    import ast

    nb = nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    problems = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
            continue
        gid, lines = meta["grade_id"], cell.source.splitlines()
        begins = [i for i, line in enumerate(lines) if "BEGIN HIDDEN TESTS" in line]
        ends = [i for i, line in enumerate(lines) if "END HIDDEN TESTS" in line]
        if len(begins) > 1 or len(begins) != len(ends):
            problems.append(f"{gid}: expected at most one hidden region")
            continue
        regions = [lines[: begins[0]], lines[begins[0] + 1: ends[0]]] if begins else [lines]
        if begins and any(line.strip() for line in lines[ends[0] + 1:]):
            problems.append(f"{gid}: code after the hidden region")
        for i, region in enumerate(regions):
            try:
                ast.parse("\n".join(region))
            except SyntaxError:
                problems.append(f"{gid}: {'hidden' if i else 'visible'} part is not valid Python on its own")
                continue
            public = [n for n in top_level_names("\n".join(region)) if i and not n.startswith("_")]
            if public:
                problems.append(f"{gid}: hidden part binds public names {public}")
        last = ast.parse("\n".join(regions[-1])).body[-1:] if regions[-1] else []
        if last and isinstance(last[0], ast.Expr) and not isinstance(last[0].value, ast.Call):
            problems.append(f"{gid}: ends with a bare expression")
    assert not problems, f"{lab}: " + "; ".join(problems)
