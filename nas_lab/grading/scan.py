"""Suspicious code in what students wrote: advisory notes for a TA (status ``review``), found by reading
the notebook, never by running it.

Some of it (IPython internals, frames, the input history) could read the running tests: the grader then
leaves the student's own cell outputs out of the feedback, lest they carry hidden values.
"""

from __future__ import annotations

import re

from nbformat import NotebookNode

from nas_lab.grading.cells import is_locked, nbgrader

#: Code in answers that a TA should look at: (pattern, what, whether it can read the running tests, in which
#: case the student's own cell outputs are left out of the feedback, lest they carry hidden values).
SUSPICIOUS = [
    (r"get_ipython|IPython|ipykernel|InteractiveShell|showtraceback|_transformers|events\.register",
     "uses IPython internals", True),
    (r"\bbuiltins\b|__builtins__|sys\.modules|__import__|sys\.meta_path",
     "touches builtins or the import system", True),
    (r"\b(np|numpy|torch|math|nn|F|random|operator|unittest)(\.\w+)+\s*=(?!=)|setattr\(\s*(np|numpy|torch|math)\b",
     "assigns to a library function", False),
    (r"def\s+__(eq|ne|lt|le|gt|ge|bool|float|int|index|abs|sub|rsub|hash|torch_function|array\w*)__",
     "defines comparison or conversion methods", False),
    (r"sys\._getframe|\binspect\.|f_locals|f_globals|f_back|\bgc\.|ctypes|settrace|setprofile",
     "inspects or changes running code", True),
    (r"\b_ih\b|\b_oh\b|\bIn\s*\[|\bOut\s*\[|linecache", "reads the kernel's input history", True),
    (r"os\.kill|\bsignal\.", "signals processes", False),
    (r"subprocess|os\.system|os\.popen|\bsocket\b|urllib|requests\.|multiprocessing|threading",
     "starts processes, threads or network access", False),
    (r"data_dir\(|manifest\.json|NAS_LAB_DATA", "opens the shipped data folder", False),
]


def scan(nb: NotebookNode) -> tuple[list[str], bool]:
    """Notes on suspicious code in the cells students wrote (advisory: status 'review'), and whether any of
    it could read the running tests."""
    found: dict[str, str] = {}
    leaky = False
    for cell in nb.cells:
        if cell.cell_type != "code" or is_locked(cell):
            continue
        for pattern, what, reads_tests in SUSPICIOUS:
            m = re.search(pattern, cell.source)
            if m and what not in found:
                found[what] = f"{what} ({nbgrader(cell).get('grade_id', 'added cell')}: {m.group(0)[:40]!r})"
                leaky = leaky or reads_tests
    return list(found.values()), leaky
