"""What a notebook cell is to the grader, and the markers written inside cells.

nbgrader describes a cell in ``metadata.nbgrader``: ``solution`` (students write it), ``grade`` (it scores
points), ``locked`` (students may not change it), ``grade_id`` and ``points``. The grader sees four kinds
(:func:`cell_kind`): *answer* cells (student code, or a written answer a TA grades by hand when it also
scores points), *test* cells (autograded), *locked* instructor cells, and markdown.

Test cells hold hidden tests between :data:`BEGIN_HIDDEN` and :data:`END_HIDDEN` lines, answer cells
the solution between :data:`BEGIN_SOLUTION` and :data:`END_SOLUTION` lines: the delimiters set in
``autograder/nbgrader_config.py``. :func:`split_hidden` cuts a test cell at its hidden-test markers.
"""

from __future__ import annotations

import ast

from nbformat import NotebookNode

BEGIN_HIDDEN = "BEGIN HIDDEN TESTS"
END_HIDDEN = "END HIDDEN TESTS"
BEGIN_SOLUTION = "BEGIN SOLUTION"
END_SOLUTION = "END SOLUTION"


def nbgrader(cell: NotebookNode) -> dict:
    """The cell's nbgrader metadata ({} for a cell nbgrader does not know)."""
    return cell.metadata.get("nbgrader", {})


def grade_id(cell: NotebookNode) -> str | None:
    """The cell's nbgrader ``grade_id``, or None."""
    return nbgrader(cell).get("grade_id")


def is_answer(cell: NotebookNode) -> bool:
    """Students write this cell (code or a written answer)."""
    return bool(nbgrader(cell).get("solution"))


def is_graded(cell: NotebookNode) -> bool:
    """The cell scores points: an autograded test, or a manually graded answer."""
    return bool(nbgrader(cell).get("grade"))


def is_locked(cell: NotebookNode) -> bool:
    """Students may not change the cell: instructor code or a test."""
    return bool(nbgrader(cell).get("locked")) and not is_answer(cell)


def is_test(cell: NotebookNode) -> bool:
    """An autograded test cell."""
    return is_graded(cell) and not is_answer(cell)


def is_manual(cell: NotebookNode) -> bool:
    """An answer that scores points: a TA grades it by hand."""
    return is_graded(cell) and is_answer(cell)


def cell_kind(cell: NotebookNode) -> str:
    """'test' (autograded), 'locked' (instructor code), 'answer' (student code) or 'markdown'."""
    if cell.cell_type != "code":
        return "markdown"
    if is_test(cell):
        return "test"
    if is_locked(cell):
        return "locked"
    return "answer"


def points(nb: NotebookNode, manual: bool = False) -> dict[str, float]:
    """{grade_id: points} of the graded cells, in order (``manual``: only those a TA grades by hand)."""
    return {grade_id(c): float(nbgrader(c)["points"]) for c in nb.cells
            if is_graded(c) and (is_answer(c) or not manual)}


def split_hidden(source: str, begin: str = BEGIN_HIDDEN, end: str = END_HIDDEN) -> list[tuple[bool, str]]:
    """A test cell as ``[(hidden, code), ...]`` in order; the marker lines are dropped."""
    parts: list[tuple[bool, str]] = []
    lines: list[str] = []
    hidden = False
    for line in source.splitlines():
        if begin in line or end in line:
            parts.append((hidden, "\n".join(lines)))
            lines, hidden = [], begin in line
        else:
            lines.append(line)
    parts.append((hidden, "\n".join(lines)))
    parts = [(h, s) for h, s in parts if s.strip()]
    try:
        for _, code in parts:
            ast.parse(code)
    except SyntaxError:  # markers inside a block: run the whole cell at once, treated as hidden
        merged = "\n".join(line for line in source.splitlines() if begin not in line and end not in line)
        return [(any(h for h, _ in parts), merged)]
    return parts


def visible_source(source: str, begin: str = BEGIN_HIDDEN, end: str = END_HIDDEN) -> str:
    """The test cell as students see it (hidden regions removed)."""
    return "\n".join(code for hidden, code in split_hidden(source, begin, end) if not hidden)
