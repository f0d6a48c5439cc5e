"""Every lab notebook, end to end: solution passes, release is clean and fails only in tests, autograde works.

Parametrised over ``solutions/<lab>/<lab>.ipynb``, so a new lab is covered as soon as its solution exists.
Notebooks always run from a temporary folder (as nbgrader does in ``autograded/<student>/<lab>/``), so a
lab that finds its data through a relative path fails here.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
LABS_DIR = ROOT / "labs"
CONFIG = ROOT / "autograder" / "nbgrader_config.py"

_spec = importlib.util.spec_from_file_location("nas_lab_release", ROOT / "autograder" / "release.py")
release = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(release)

LABS = release.find_labs(SOLUTIONS)
TIMEOUT = 300  # seconds per cell, as in the nbgrader config


def _nbgrader(cell: nbformat.NotebookNode) -> dict:
    return cell.metadata.get("nbgrader", {})


def _is_test(cell: nbformat.NotebookNode) -> bool:
    m = _nbgrader(cell)
    return bool(m.get("grade")) and not m.get("solution")


def _is_answer(cell: nbformat.NotebookNode) -> bool:
    return bool(_nbgrader(cell).get("solution"))


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _solution(lab: str) -> Path:
    return SOLUTIONS / lab / f"{lab}.ipynb"


def _released(lab: str) -> Path:
    return LABS_DIR / lab / f"{lab}.ipynb"


def test_labs_found() -> None:
    assert LABS, f"no solutions/<lab>/<lab>.ipynb found under {SOLUTIONS}"
    assert "lab1_counting_macs" in LABS


@pytest.fixture(scope="session")
def course(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throw-away nbgrader course: the repo's config and a copy of solutions/ (labs/ filled by `fresh_release`)."""
    root = tmp_path_factory.mktemp("course")
    shutil.copy(CONFIG, root / "nbgrader_config.py")
    shutil.copytree(SOLUTIONS, root / "solutions")
    return root


_generated: set[str] = set()


def fresh_release(course: Path, lab: str) -> Path:
    """Release ``lab`` in the temporary course (once per session); returns the released notebook."""
    if lab not in _generated:
        release.generate(course / "nbgrader_config.py", [lab], quiet=True)
        _generated.add(lab)
    return course / "labs" / lab / f"{lab}.ipynb"


# --------------------------------------------------------------------------------------------- (a)


@pytest.mark.parametrize("lab", ["lab1_counting_macs"])
def test_solution_passes_validation(lab: str, tmp_path: Path) -> None:
    """nbgrader's Validate (what a student's "Validate" button runs) passes the solution. One lab shows the path
    works; that every lab's solution passes every test, hidden ones included, is proved for all labs by
    ``test_autograde_round_trip`` (full marks) and by ``nas-lab grade`` in tests/test_grading.py."""
    from nbgrader.validator import Validator

    work = tmp_path / "elsewhere"
    shutil.copytree(SOLUTIONS / lab, work)
    results = Validator(config=release.load_config(CONFIG)).validate(str(work / f"{lab}.ipynb"))
    problems = [f"{kind}: {item.get('raw_error') or item.get('source', '')[:300]}"
                for kind, items in results.items() for item in items]
    assert not problems, f"{lab} solution does not validate:\n" + "\n\n".join(problems)


# --------------------------------------------------------------------------------------------- (b)


def _solution_lines(nb: nbformat.NotebookNode) -> set[str]:
    """Lines written between BEGIN/END SOLUTION (long enough to be distinctive), and manual answers."""
    lines, outside = set(), set()
    for cell in nb.cells:
        if _is_answer(cell) and cell.cell_type == "markdown":
            lines.update(line.strip() for line in cell.source.splitlines() if len(line.strip()) >= 20)
            continue
        inside = False
        for raw in cell.source.splitlines():
            line = raw.strip()
            if "BEGIN SOLUTION" in line:
                inside = True
            elif "END SOLUTION" in line:
                inside = False
            elif inside and len(line) >= 16 and not line.startswith("#"):
                lines.add(line)
            else:
                outside.add(line)
    return lines - outside


@pytest.mark.parametrize("lab", LABS)
def test_release_has_no_solutions(lab: str) -> None:
    path = _released(lab)
    assert path.exists(), f"{path} is missing: run `make release`"
    nb, text = _read(path), path.read_text()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text, f"{path} contains {marker!r}: run `make release`"
    leaked = [line for line in _solution_lines(_read(_solution(lab))) if line in text]
    assert not leaked, f"{path} contains solution lines: {leaked[:5]}"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path}: outputs not stripped"
    assert any(_is_test(c) for c in nb.cells), f"{path} has no test cells"


# --------------------------------------------------------------------------------------------- (c)


@pytest.mark.parametrize("lab", LABS)
def test_release_fails_only_in_test_cells(lab: str, tmp_path: Path) -> None:
    from nbclient import NotebookClient

    work = tmp_path / "student"
    shutil.copytree(LABS_DIR / lab, work)
    nb = _read(work / f"{lab}.ipynb")
    NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(work)}}).execute()
    unexpected, passing_tests = [], []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        gid = _nbgrader(cell).get("grade_id", f"cell {i}")
        if _is_test(cell):
            if not errors:
                passing_tests.append(gid)
        elif _is_answer(cell):
            unexpected += [f"{gid}: {e.ename}: {e.evalue}" for e in errors if e.ename != "NotImplementedError"]
        else:
            unexpected += [f"{gid}: {e.ename}: {e.evalue}" for e in errors]
    assert not unexpected, f"blank {lab} errors outside test cells: {unexpected}"
    assert not passing_tests, f"blank {lab}: test cells pass without any answer: {passing_tests}"


# --------------------------------------------------------------------------------------------- (d)


def _comparable(nb: nbformat.NotebookNode) -> list[tuple]:
    return [(c.cell_type, c.source, dict(c.metadata)) for c in nb.cells]


@pytest.mark.parametrize("lab", LABS)
def test_release_up_to_date(lab: str, course: Path) -> None:
    fresh, committed = _read(fresh_release(course, lab)), _read(_released(lab))
    assert _comparable(fresh) == _comparable(committed) and fresh.metadata == committed.metadata, (
        f"labs/{lab} is out of date with solutions/{lab}: run `make release` and commit labs/")
    extra = {p.name for p in (course / "labs" / lab).iterdir()} ^ {p.name for p in (LABS_DIR / lab).iterdir()}
    assert not extra, f"labs/{lab} and a fresh release differ in files: {sorted(extra)}"


def test_no_stale_releases() -> None:
    stale = sorted(p.name for p in LABS_DIR.iterdir() if p.is_dir() and p.name not in LABS)
    assert not stale, f"labs/ has folders without a solution in solutions/: {stale}"


# --------------------------------------------------------------------------------------------- (e)


def _filled_in(released: nbformat.NotebookNode, solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A student's submission: the release with every answer cell replaced by the solution's (markers removed)."""
    answers = {_nbgrader(c)["grade_id"]: c.source for c in solution.cells if _is_answer(c)}
    nb = nbformat.from_dict(released)
    for cell in nb.cells:
        if _is_answer(cell):
            cell.source = re.sub(r"^\s*### (BEGIN|END) SOLUTION\s*\n", "", answers[_nbgrader(cell)["grade_id"]],
                                 flags=re.MULTILINE)
    return nb


def _scores(gb, lab: str, student: str) -> dict[str, float]:
    """grade_id -> score of every graded cell of a student's submission of ``lab``."""
    return {g.name: g.score for g in gb.find_submission_notebook(lab, lab, student).grades}


def _delegating(released: nbformat.NotebookNode, solution: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    """The submission of a student who only calls the library: every answer cell whose solution carries a
    ``nas_lab.delegate`` (cell metadata, stripped on release) gets that source; other answers are the
    solution's. ``None`` when the lab has no delegate."""
    delegates = {_nbgrader(c)["grade_id"]: c.metadata["nas_lab"]["delegate"] for c in solution.cells
                 if "delegate" in c.metadata.get("nas_lab", {})}
    if not delegates:
        return None
    nb = _filled_in(released, solution)
    for cell in nb.cells:
        if _nbgrader(cell).get("grade_id") in delegates:
            cell.source = delegates[_nbgrader(cell)["grade_id"]]
    return nb


def _own_work_tests(nb: nbformat.NotebookNode) -> set[str]:
    """Test cells marked ``nas_lab.own_work``: a delegating submission must score zero on them."""
    return {_nbgrader(c)["grade_id"] for c in nb.cells if _is_test(c) and c.metadata.get("nas_lab", {}).get("own_work")}


@pytest.mark.parametrize("lab", LABS)
def test_delegates_pair_with_own_work_tests(lab: str) -> None:
    """A lab with delegating answers marks the tests they must fail, and vice versa; the release hides them."""
    solution = _read(_solution(lab))
    has_delegates = any("delegate" in c.metadata.get("nas_lab", {}) for c in solution.cells)
    assert has_delegates == bool(_own_work_tests(solution)), (
        f"{lab}: answers with a nas_lab.delegate and test cells marked nas_lab.own_work go together")
    assert "delegate" not in _released(lab).read_text(), f"labs/{lab} shows a delegate: run `make release`"


@pytest.mark.filterwarnings("ignore:Object of type:Warning")  # SQLAlchemy noise from nbgrader's gradebook
@pytest.mark.parametrize("lab", LABS)
def test_autograde_round_trip(lab: str, course: Path) -> None:
    from nbgrader.api import Gradebook

    released = _read(fresh_release(course, lab))
    solution = _read(_solution(lab))
    submissions = {"solution": _filled_in(released, solution), "blank": released}
    delegating = _delegating(released, solution)
    if delegating is not None:
        submissions["delegating"] = delegating
    api = release.make_api(course / "nbgrader_config.py")
    for student, nb in submissions.items():
        folder = course / "submitted" / student / lab
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / f"{lab}.ipynb")
        result = api.autograde(lab, student, force=True, create=True)
        assert result["success"], f"autograde of {student!r} crashed:\n{result.get('log')}\n{result.get('error')}"
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gb:
        scores = {s: gb.find_submission(lab, s) for s in submissions}
        full, blank = scores["solution"], scores["blank"]
        points = sum(float(_nbgrader(c).get("points", 0)) for c in released.cells if _is_test(c))
        assert full.max_code_score == points > 0, (full.max_code_score, points)
        assert full.code_score == full.max_code_score, (
            f"{lab}: the solution gets {full.code_score} of {full.max_code_score} autograded points")
        assert blank.code_score == 0, f"{lab}: the blank release gets {blank.code_score} autograded points"
        if delegating is not None:
            scores = _scores(gb, lab, "delegating")
            scored = {gid: scores[gid] for gid in _own_work_tests(solution) if scores[gid]}
            assert not scored, f"{lab}: answers that only call the library score on {scored}"
        manual = sum(1 for c in released.cells if _nbgrader(c).get("grade") and _is_answer(c))
        assert manual <= 4, f"{lab} has {manual} manually graded answers (at most 4)"
