"""Finding and cleaning up what students handed in, before any of it runs.

Layouts accepted under the SUBMISSIONS folder (the student id is the folder, zip or file name):

    SUBMISSIONS/<student>/<anything>.ipynb         (sub-folders too, e.g. nbgrader's <student>/<lab>/)
    SUBMISSIONS/<student>.zip                      (a zip holding the notebook, at any depth)
    SUBMISSIONS/<student>.ipynb

Nothing here executes student code: notebooks are parsed as JSON, checked against the released lab
(by the nbgrader ``grade_id`` of their cells) and rewritten into a clean notebook that nbgrader can grade
(see :func:`normalise`).
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from nas_lab.grading.cells import grade_id, is_answer, is_graded, is_locked, nbgrader

MAX_NOTEBOOK_BYTES = 50_000_000
MAX_ZIP_BYTES = 200_000_000
_IGNORED = ("__MACOSX", ".ipynb_checkpoints")
_STUDENT_ID = re.compile(r"[^A-Za-z0-9._@+-]")


@dataclass
class Submission:
    """One student's hand-in: where it came from, the notebook picked, and any problem found."""

    student: str
    origin: str
    notebook: NotebookNode | None = None
    filename: str = ""
    sha256: str = ""
    status: str = ""  # "" when it can be graded; else invalid / missing / wrong_lab / ambiguous
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    timestamp: str | None = None


def grade_ids(nb: NotebookNode) -> list[str]:
    """The nbgrader grade_ids of a notebook's cells, in order."""
    return [grade_id(c) for c in nb.cells if grade_id(c)]


def read_notebook(data: bytes) -> tuple[NotebookNode | None, str]:
    """Parse notebook bytes leniently; returns (notebook, "") or (None, why not)."""
    if len(data) > MAX_NOTEBOOK_BYTES:
        return None, f"the file is too large ({len(data) / 1e6:.0f} MB)"
    if not data.strip():
        return None, "the file is empty"
    try:
        raw = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"not a notebook: the file is not valid JSON ({str(err)[:80]})"
    if not isinstance(raw, dict) or not isinstance(raw.get("cells", raw.get("worksheets")), list):
        return None, "not a notebook: no list of cells"
    try:
        nb = nbformat.reads(json.dumps(raw), as_version=4, capture_validation_error={})
    except Exception as err:  # noqa: BLE001 - nbformat raises many kinds
        return None, f"not a readable notebook ({type(err).__name__}: {str(err)[:80]})"
    for cell in nb.cells:
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            return None, "not a readable notebook (a cell without a valid cell_type)"
        cell.setdefault("metadata", {})
        cell.setdefault("source", "")
        if isinstance(cell.source, list):
            cell.source = "".join(cell.source)
        if not isinstance(cell.source, str) or not isinstance(cell.metadata, dict):
            return None, "not a readable notebook (a cell with a malformed source or metadata)"
        if not isinstance(cell.metadata.get("nbgrader", {}), dict):
            cell.metadata.pop("nbgrader")
    return nb, ""


def _candidates(path: Path, origin: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of every notebook in a student folder, zip or single file."""
    if path.is_dir():
        files = [p for p in sorted(path.rglob("*.ipynb")) if p.is_file()
                 and not any(part in _IGNORED or part.startswith(".") for part in p.relative_to(path).parts)]
        return [(str(p.relative_to(path)), p.read_bytes()[: MAX_NOTEBOOK_BYTES + 1]) for p in files]
    if path.suffix.lower() == ".ipynb":
        return [(path.name, path.read_bytes()[: MAX_NOTEBOOK_BYTES + 1])]
    with zipfile.ZipFile(path) as zf:
        members = [m for m in zf.infolist() if not m.is_dir() and m.filename.lower().endswith(".ipynb")
                   and not any(part in _IGNORED or part.startswith(".") for part in Path(m.filename).parts)]
        if sum(m.file_size for m in members) > MAX_ZIP_BYTES:
            raise ValueError(f"{origin}: the notebooks in the zip are too large")
        out = []
        for m in members:
            with zf.open(m) as f:
                out.append((m.filename, f.read(MAX_NOTEBOOK_BYTES + 1)))
        return out


def discover(folder: Path, exclude: Path | None = None) -> list[tuple[str, Path]]:
    """(student id, path) for every entry of the SUBMISSIONS folder, sorted by student id."""
    found = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.name in _IGNORED or (exclude is not None and p.resolve() == exclude.resolve()):
            continue
        if p.is_dir() or p.suffix.lower() in (".zip", ".ipynb"):
            found.append((p.stem if p.is_file() else p.name, p))
    return found


def likeness(nb: NotebookNode, release: NotebookNode) -> float:
    """How much ``nb`` looks like (a copy of) ``release``: locked cells with the same id and source count 1,
    other shared grade_ids 0.01 (labs share ids such as ``setup`` or ``q1_test``; their sources differ)."""
    mine = {grade_id(c): c.source for c in nb.cells if grade_id(c)}
    score = 0.0
    for c in release.cells:
        gid = grade_id(c)
        if gid in mine:
            score += 1.0 if is_locked(c) and mine[gid] == c.source else 0.01
    return score


def load(student: str, path: Path, lab: str, release: NotebookNode,
         other_labs: dict[str, NotebookNode]) -> Submission:
    """Pick this student's notebook for ``lab`` (lenient about its name) and check what it is."""
    sub = Submission(student=student, origin=path.name)
    clean = _STUDENT_ID.sub("_", student)[:100]
    if clean != student:
        sub.notes.append(f"student id {student!r} contains unusual characters; used {clean!r}")
        sub.student = clean
    try:
        cands = _candidates(path, path.name)
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        sub.status, sub.notes = "invalid", sub.notes + [f"{path.name}: cannot open ({err})"]
        return sub
    if not cands:
        sub.status = "missing"
        sub.notes.append(f"no .ipynb file in {path.name}")
        return sub
    parsed, problems, foreign = [], [], []
    for name, data in cands:
        nb, why = read_notebook(data)
        if nb is None:
            problems.append(f"{name}: {why}")
            continue
        mine = likeness(nb, release)
        best, score = max(((k, likeness(nb, v)) for k, v in other_labs.items() if k != lab),
                          key=lambda kv: kv[1], default=("", 0.0))
        if mine > 0 and mine >= score:
            parsed.append((name, nb, data))
        elif score > 0:
            foreign.append(f"{name} is a notebook of {best}, not {lab}")
        else:
            foreign.append(f"{name} has none of the cells of {lab} (a different or rebuilt notebook?)")
    exact = [p for p in parsed if Path(p[0]).name == f"{lab}.ipynb"]
    if len(exact) == 1:
        parsed = exact
    if len(parsed) > 1:
        sub.status = "ambiguous"
        sub.notes.append("several notebooks of this lab: " + ", ".join(p[0] for p in parsed))
        return sub
    if not parsed:
        sub.status = "wrong_lab" if foreign else "invalid"
        sub.notes += foreign + problems
        return sub
    name, nb, data = parsed[0]
    sub.notebook, sub.filename, sub.sha256 = nb, name, hashlib.sha256(data).hexdigest()
    flat = path.is_file() and path.suffix.lower() == ".ipynb"  # SUBMISSIONS/<student>.ipynb: named after the student
    if not flat and Path(name).name != f"{lab}.ipynb":
        sub.flags.append("renamed")
        sub.notes.append(f"submitted as {name} (expected {lab}.ipynb); graded anyway")
    if len(cands) > 1:
        sub.notes.append(f"{len(cands) - 1} other file(s) ignored")
    if path.is_dir():
        stamp = next(iter(sorted(path.rglob("timestamp.txt"))), None)
        if stamp is not None:
            sub.timestamp = stamp.read_text(errors="replace").strip()[:100]
    return sub


def normalise(nb: NotebookNode, release: NotebookNode) -> tuple[NotebookNode, list[str], list[str]]:
    """A clean copy of a submission, cell metadata taken from the release; returns (notebook, notes, flags).

    Cells known to the release get the release's nbgrader metadata and cell type back (a student cannot
    unlock, re-weight or un-grade a cell), locked cells get the release's source (nbgrader then puts the
    hidden tests back from its gradebook), duplicated cells (copy-paste) keep one graded copy (the first
    of a locked cell, the last of an answer) and the others run as ordinary code, and deleted cells of
    the release are put back where they were. Outputs are dropped; cell ids are made unique.
    """
    ref = {grade_id(c): c for c in release.cells if grade_id(c)}
    notes, flags = [], []
    cells: list[NotebookNode] = []
    where: dict[str, int] = {}
    for cell in nb.cells:
        cell = nbformat.from_dict(dict(cell))
        gid = grade_id(cell)
        if gid and gid not in ref:
            cell.metadata.pop("nbgrader", None)
            gid = None
        if gid is None:
            cell.metadata.pop("nbgrader", None)
            cells.append(cell)
            continue
        model = ref[gid]
        answer = is_answer(model)
        if gid in where:  # as nbgrader's DeduplicateIds: the last copy is graded, earlier ones run as plain code
            flags.append("duplicate_cell")
            notes.append(f"cell {gid} appears more than once: the last copy is graded, the others run as plain code")
            cells[where[gid]].metadata.pop("nbgrader", None)
        if {k: v for k, v in nbgrader(cell).items() if k != "checksum"} != {
                k: v for k, v in nbgrader(model).items() if k != "checksum"}:
            flags.append("metadata_edited")
            notes.append(f"cell {gid} had its nbgrader metadata changed; restored")
        if cell.cell_type != model.cell_type:
            cell = nbformat.from_dict({**dict(model), "source": cell.source if answer else model.source})
            flags.append("metadata_edited")
            notes.append(f"cell {gid} had its type changed; restored")
        cell.metadata["nbgrader"] = dict(model.metadata["nbgrader"])
        if not answer and cell.source != model.source:
            flags.append("test_edited" if is_graded(model) else "locked_edited")
            notes.append(f"locked cell {gid} was edited; the original was restored")
            cell.source = model.source
        where[gid] = len(cells)
        cells.append(cell)
    # put back the release cells that are missing, after the release cell that precedes them
    anchor = -1
    for model in release.cells:
        gid = grade_id(model)
        if gid is None:
            continue
        if gid in where:
            anchor = max(anchor, where[gid])
            continue
        restored = nbformat.from_dict(dict(model))
        cells.insert(anchor + 1, restored)
        where = {k: (v + 1 if v > anchor else v) for k, v in where.items()}
        anchor += 1
        where[gid] = anchor
        if is_answer(model):
            notes.append(f"answer cell {gid} was missing; added back empty")
        else:
            flags.append("test_deleted" if is_graded(model) else "cell_deleted")
            notes.append(f"locked cell {gid} was deleted; restored")
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        else:
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
    out = nbformat.v4.new_notebook(cells=cells, metadata=dict(release.metadata))
    out.nbformat_minor = max(5, release.nbformat_minor)
    return out, list(dict.fromkeys(notes)), list(dict.fromkeys(flags))
