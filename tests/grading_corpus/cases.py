"""Adversarial and honest submissions for the grader's tests, built at test time from a lab's release.

Each case is a small recipe (a base notebook, edits, the way it is handed in) and the outcome expected
from ``nas-lab grade``: the status and the autograded total. The base is the released notebook of the
lab (``release``) or the release with the solution's answers filled in (``solution``), so the corpus
follows the labs as they change; only the snippets below are stored.

``build(folder, cases, release, solution)`` writes one submission per case under ``folder``, as a
student folder (``<case>/<name>.ipynb``), a zip (``<case>.zip``) or a bare notebook (``<case>.ipynb``).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook


@dataclass
class Case:
    """One submission: how to make it and what the grader must make of it."""

    name: str
    status: str
    total: float | None  # autograded points expected (None: do not check)
    base: str = "solution"  # "solution", "release", "delegating" (see :func:`delegating`) or "other_lab"
    edits: list[tuple] = field(default_factory=list)
    packaging: str = "folder"  # folder / zip / flat
    filename: str = ""  # default <lab>.ipynb
    raw: bytes | None = None  # write these bytes instead of a notebook
    no_notebook: bool = False  # hand in only the extra files
    extra_files: dict[str, bytes] = field(default_factory=dict)
    flags: tuple[str, ...] = ()  # flags that must be present
    scores: dict[str, float] = field(default_factory=dict)  # per-question scores to check


# ----------------------------------------------------------------------------------------- snippets

LOOP = "while True:\n    pass\n"
IGNORE_INTERRUPT = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass\n"
OS_EXIT = "import os\nos._exit(1)\n"
MEMORY_BOMB = ("def _bomb():\n    chunks = []\n    while True:\n        chunks.append(bytearray(50_000_000))\n\n\n"
               "_bomb()\n")
MEMORY_FULL_THEN_WAIT = ("def _fill_then_wait():\n    import time\n\n    keep = []\n    try:\n        while True:\n"
                         "            keep.append(bytearray(10_000_000))\n    except MemoryError:\n        pass\n"
                         "    time.sleep(600)\n\n\n_fill_then_wait()\n")
ALWAYS_EQUAL = "class _AlwaysEqual:\n    def __eq__(self, other):\n        return True\n\n    __hash__ = None\n"
PATCH_EVERYTHING = ("import builtins\nimport math\n\nimport numpy as np\n\n"
                    "np.testing.assert_allclose = lambda *a, **k: None\nmath.isclose = lambda *a, **k: True\n"
                    "builtins.abs = lambda x: 0\nbuiltins.print = lambda *a, **k: None\n")
SKIP_TESTS = "get_ipython().input_transformers_cleanup.append(lambda lines: [])\n"
HIDE_ERRORS = ("get_ipython().showtraceback = lambda *a, **k: None\n"
               "get_ipython()._showtraceback = lambda *a, **k: None\n")
CORRUPT_DATA = ("from nas_lab.artifacts import data_dir\n\nfor _p in sorted(data_dir().rglob('*.gz')):\n"
                "    _p.write_bytes(b'corrupted by a submission')\n")
HUGE_OUTPUT = "print('x' * 50_000_000)\n"
EXFILTRATE = ("import sys\n\nLEAK = []\n\n\ndef mean(xs):\n"
              "    LEAK.append({k: v for k, v in sys._getframe(1).f_globals.items() if k.startswith('_hidden')})\n"
              "    return float(np.mean(xs))\n")
SLEEP = "import time\ntime.sleep(4)\n"


def tiny_cases() -> list[Case]:
    """The full battery, on the tiny fixture lab (q1: 2 points, q2: 3 points, q3: 1 point by a TA)."""
    return [
        Case("honest", "ok", 5),
        Case("honest_zip", "ok", 5, packaging="zip", filename="submission/tiny_lab.ipynb"),
        Case("renamed", "renamed", 5, filename="Tiny Lab - final (1).ipynb", flags=("renamed",)),
        Case("flat_file", "ok", 5, packaging="flat"),
        Case("blank", "ok", 0, base="release"),
        Case("hardcoded", "ok", 2, edits=[("answer", "q2_answer", "replace", "def mean(xs):\n    return 2.0\n")],
             scores={"q1_test": 2, "q2_test": 0}),
        Case("infinite_loop", "cell_timeout", 2, edits=[("answer", "q2_answer", "prepend", LOOP)]),
        Case("ignores_interrupt", "cell_timeout", 2, edits=[("answer", "q2_answer", "prepend", IGNORE_INTERRUPT)]),
        Case("os_exit", "kernel_died", 2, edits=[("answer", "q2_answer", "append", OS_EXIT)]),
        Case("os_exit_in_test", "kernel_died", 3,
             edits=[("answer", "q1_answer", "replace", "def add(a, b):\n    import os\n    os._exit(0)\n")]),
        Case("sys_exit", "exited", 5, edits=[("answer", "q1_answer", "append", "import sys\nsys.exit(0)\n")]),
        Case("exit_call", "exited", 5, edits=[("answer", "q2_answer", "append", "exit()\n")]),
        Case("memory_bomb", "memory_limit", 2, edits=[("answer", "q2_answer", "prepend", MEMORY_BOMB)]),
        # memory full, then a hang: the cell times out with the kernel at its limit (seen when a MemoryError left
        # the kernel unable to reply): reported as memory_limit, with the timeout
        Case("memory_full_then_wait", "memory_limit", 2,
             edits=[("answer", "q2_answer", "prepend", MEMORY_FULL_THEN_WAIT)], flags=("cell_timeout",)),
        Case("tests_deleted", "restored", 5, edits=[("delete", "q1_test"), ("delete", "q2_test"),
                                                    ("delete", "setup")], flags=("test_deleted",)),
        Case("tests_edited", "restored", 0, base="release",
             edits=[("edit", "q1_test", "pass"), ("edit", "q2_test", "assert True")], flags=("test_edited",)),
        Case("test_copied", "restored", 5, edits=[("duplicate", "q1_test", "start"), ("duplicate", "q2_test", "end")],
             flags=("duplicate_cell",)),
        Case("metadata_edited", "restored", 0, base="release",
             edits=[("metadata", "q1_test", {"grade": False, "locked": False, "points": 100})],
             flags=("metadata_edited",)),
        Case("type_changed", "restored", 5, edits=[("celltype", "q1_test", "markdown")]),
        Case("always_equal", "review", 3, edits=[("answer", "q1_answer", "replace",
                                                  ALWAYS_EQUAL + "\n\ndef add(a, b):\n    return _AlwaysEqual()\n")],
             scores={"q1_test": 0, "q2_test": 3}),
        Case("patched_libraries", "review", 2, edits=[
            ("answer", "q2_answer", "replace", PATCH_EVERYTHING + "\n\ndef mean(xs):\n    return 0.0\n")],
             flags=("patched",), scores={"q1_test": 2, "q2_test": 0}),
        Case("redefined_helper", "review", 2, edits=[
            ("answer", "q2_answer", "replace",
             "def close(a, b):\n    return True\n\n\ndef mean(xs):\n    return 0.0\n")],
             flags=("patched",)),
        Case("shadowed_builtin", "ok", 2, edits=[
            ("answer", "q2_answer", "replace", "def abs(x):\n    return 0\n\n\ndef mean(xs):\n    return 0.0\n")]),
        Case("skip_tests", "review", 0, base="release", edits=[("add", "setup", SKIP_TESTS)], flags=("patched",)),
        Case("hide_errors", "review", 0, base="release", edits=[("add", "setup", HIDE_ERRORS)], flags=("patched",)),
        Case("tamper_in_test", "tampered", 3, edits=[("answer", "q1_answer", "replace",
             "def add(a, b):\n    import numpy\n    numpy.testing.assert_allclose = lambda *a, **k: None\n"
             "    return a + b\n")], scores={"q1_test": 0, "q2_test": 3}),
        Case("corrupt_data", "review", 5, edits=[("answer", "q1_answer", "append", CORRUPT_DATA)],
             flags=("files_restored",)),
        Case("huge_output", "output_truncated", 5, edits=[("answer", "q1_answer", "append", HUGE_OUTPUT)]),
        Case("exfiltrate", "review", 5, edits=[("answer", "q2_answer", "replace", EXFILTRATE),
                                               ("add", "q3_answer", "print('LEAK', LEAK)")]),
        Case("slow", "timeout", 2, edits=[("add", "q1_test", SLEEP)] * 12),
        Case("wrong_lab", "wrong_lab", 0, base="other_lab"),
        Case("not_a_lab", "wrong_lab", 0, raw=nbformat.writes(new_notebook(cells=[new_code_cell("1 + 1")])).encode()),
        Case("empty_file", "invalid", 0, raw=b""),
        Case("not_json", "invalid", 0, raw=b'{"cells": [{"cell_type": "code", "sou'),
        Case("malformed", "invalid", 0, raw=json.dumps({"cells": "oops", "nbformat": 4}).encode()),
        Case("bad_zip", "invalid", 0, packaging="zip", raw=b"PK\x03\x04 this is not a zip"),
        Case("missing", "missing", 0, no_notebook=True, extra_files={"README.txt": b"I forgot the notebook"}),
        Case("two_notebooks", "ambiguous", 0, filename="copy1.ipynb", extra_files={"copy2.ipynb": b"<solution>"}),
    ]


def lab1_cases() -> list[Case]:
    """A few cases on Lab 1, whose tests are the real ones (17 autograded points); the tiny lab has the
    rest. Hidden tests use reference versions of earlier answers (``own_work.references``), so a wrong
    early answer costs only its own question (``hardcoded``, ``slip_in_q2``, ``slip_in_q4``); an answer
    that only calls the library scores nothing on the questions that ask for the student's own code
    (``delegating``: only Q6, which has no library version, scores)."""
    own_work_zero = {"q1_test": 0, "q2_test": 0, "q2_groups_test": 0, "q3_test": 0, "q4_test": 0, "q5_test": 0,
                     "q8_test": 0}
    return [
        Case("honest", "ok", 17),
        Case("blank", "ok", 0, base="release"),
        Case("delegating", "ok", 2, base="delegating", scores={**own_work_zero, "q6_test": 2}),
        Case("hardcoded", "ok", 15, edits=[("answer", "q1_answer", "replace",
             "def linear_macs(in_features, out_features):\n"
             "    return {(4096, 1000): 4_096_000, (3, 2): 6}[in_features, out_features]\n\n\n"
             "def linear_params(in_features, out_features, bias=True):\n"
             "    known = {(4096, 1000, True): 4_097_000, (3, 2, True): 8, (3, 2, False): 6}\n"
             "    return known[in_features, out_features, bias]\n")],
             scores={"q1_test": 0, "q2_test": 2, "q2_groups_test": 2, "q3_test": 2, "q4_test": 3, "q5_test": 1,
                     "q6_test": 2, "q8_test": 3}),
        # the example: a conv2d_macs that forgets the groups once cost 16 of 18 points; now only its own 2
        Case("slip_in_q2", "ok", 15, edits=[("answer", "q2_answer", "append",
             "def conv2d_macs(c_in, c_out, kernel_size, out_h, out_w, groups=1):\n"
             "    kh, kw = as_pair(kernel_size)\n"
             "    return c_out * out_h * out_w * c_in * kh * kw\n")],
             scores={"q2_test": 2, "q2_groups_test": 0, "q3_test": 2, "q4_test": 3, "q8_test": 3}),
        Case("slip_in_q4", "ok", 14, edits=[("answer", "q4_answer", "append",
             "def module_macs(module, input_shape):\n"
             "    if isinstance(module, nn.Linear):\n"
             "        return linear_macs(module.in_features, module.out_features)\n"
             "    h, w = input_shape[-2:]  # forgets stride, padding and dilation\n"
             "    return conv2d_macs(module.in_channels, module.out_channels, module.kernel_size, h, w,\n"
             "                       module.groups)\n")],
             scores={"q4_test": 0, "q5_test": 1, "q6_test": 2}),
        Case("always_equal", "review", 15, edits=[("answer", "q1_answer", "replace", ALWAYS_EQUAL +
             "\n\ndef linear_macs(in_features, out_features):\n    return _AlwaysEqual()\n\n\n"
             "def linear_params(in_features, out_features, bias=True):\n    return _AlwaysEqual()\n")],
             scores={"q1_test": 0, "q2_test": 2, "q4_test": 3}),
        Case("tamper_in_test", "tampered", 15, edits=[("answer", "q1_answer", "append",
             "import importlib\n_linear_macs = linear_macs\n\n\ndef linear_macs(in_features, out_features):\n"
             "    importlib.reload = lambda module: module\n    return _linear_macs(in_features, out_features)\n")],
             scores={"q1_test": 0, "q2_test": 2, "q4_test": 3, "q5_test": 1}),
    ]


def lab4_operator_cases() -> list[Case]:
    """Broken search operators and predictor on Lab 4 (31 autograded points): the search questions run the
    student's own crossover and parent selection in the engine, so a broken operator misses the Q7/Q8 targets
    as well as its own question; a predictor without non-linearity misses the held-out error bar (Q3b) only.
    A crossover that copies a parent still passes Q7 (tuning the knobs, mutation on: on this predictor mutation
    alone reaches the target at every graded seed, benchmarks/bench_lab4_targets.py) and is caught by Q8's
    crossover-only checks. Graded in the same batch as Lab 4's honest and delegating submissions
    (tests/test_grading.py)."""
    search_zero = {"q7_test": 0, "q8_test": 0, "q8b_test": 0}
    return [
        Case("crossover_copies_a", "ok", 22, edits=[("answer", "q6a_answer", "replace",
             "def crossover(a, b, rng):\n    return a\n")],
             scores={"q6_test": 0, "q6b_test": 1, "q7_test": 2, "q8_test": 0, "q8b_test": 0}),
        Case("random_parents", "ok", 22, edits=[("answer", "q6b_answer", "replace",
             "def select_parents(scores, n):\n    return np.random.default_rng(0).permutation(len(scores))[:n]\n")],
             scores={"q6_test": 3, "q6b_test": 0, **search_zero}),
        Case("mlp_without_relu", "ok", 27, edits=[("answer", "q3b_answer", "sub",
             "layers += [nn.Linear(size, hidden), nn.ReLU()]", "layers += [nn.Linear(size, hidden)]")],
             scores={"q3b_test": 0, "q7_test": 2, "q8_test": 4}),
    ]


# ------------------------------------------------------------------------------------------- making


def _gid(cell) -> str | None:  # noqa: ANN001
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def filled(release: nbformat.NotebookNode, solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The release with every answer cell replaced by the solution's (markers removed)."""
    answers = {_gid(c): c.source for c in solution.cells if c.metadata.get("nbgrader", {}).get("solution")}
    nb = nbformat.from_dict(release)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = re.sub(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", "", answers[_gid(cell)],
                                 flags=re.MULTILINE)
    return nb


def delegating(release: nbformat.NotebookNode, solution: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    """A student who only calls the library: answers with a ``nas_lab.delegate`` in the solution get it, the
    others the solution's answer. ``None`` when the lab has no delegate."""
    delegates = {_gid(c): c.metadata["nas_lab"]["delegate"] for c in solution.cells
                 if "delegate" in c.metadata.get("nas_lab", {})}
    if not delegates:
        return None
    nb = filled(release, solution)
    for cell in nb.cells:
        if _gid(cell) in delegates:
            cell.source = delegates[_gid(cell)]
    return nb


def own_work_tests(nb: nbformat.NotebookNode) -> list[str]:
    """grade_ids of the test cells a delegating submission must score zero on (``nas_lab.own_work``)."""
    return [_gid(c) for c in nb.cells if c.metadata.get("nas_lab", {}).get("own_work")]


def _apply(nb: nbformat.NotebookNode, edit: tuple) -> None:
    kind, gid = edit[0], edit[1]
    index = next(i for i, c in enumerate(nb.cells) if _gid(c) == gid)
    cell = nb.cells[index]
    if kind == "answer":
        mode, code = edit[2], edit[3]
        if mode == "sub":                      # ("answer", gid, "sub", old, new): one edit inside the answer
            assert code in cell.source, f"{gid}: {code!r} is not in the answer any more"
            cell.source = cell.source.replace(code, edit[4])
            return
        cell.source = {"prepend": code + "\n" + cell.source, "append": cell.source + "\n" + code,
                       "replace": code}[mode]
    elif kind == "delete":
        del nb.cells[index]
    elif kind == "edit":
        cell.source = edit[2]
    elif kind == "duplicate":
        copy = nbformat.from_dict(json.loads(json.dumps(cell)))
        nb.cells.insert(0 if edit[2] == "start" else len(nb.cells), copy)
    elif kind == "metadata":
        cell.metadata.nbgrader.update(edit[2])
    elif kind == "celltype":
        cell.cell_type = edit[2]
        cell.pop("outputs", None)
        cell.pop("execution_count", None)
    elif kind == "add":
        nb.cells.insert(index + 1, new_code_cell(edit[2]))


def build(folder: Path, cases: list[Case], lab: str, release: nbformat.NotebookNode,
          solution: nbformat.NotebookNode, other_release: nbformat.NotebookNode | None = None) -> None:
    """Write one submission per case into ``folder`` (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = filled(release, solution)
    bases = {"solution": good, "release": release, "other_lab": other_release,
             "delegating": delegating(release, solution)}
    for case in cases:
        base = bases[case.base]
        nb = nbformat.from_dict(json.loads(json.dumps(base)))
        for edit in case.edits:
            _apply(nb, edit)
        data = case.raw if case.raw is not None else nbformat.writes(nb).encode()
        name = case.filename or f"{lab}.ipynb"
        extra = {k: (nbformat.writes(good).encode() if v == b"<solution>" else v) for k, v in case.extra_files.items()}
        if case.packaging == "flat":
            (folder / f"{case.name}.ipynb").write_bytes(data)
        elif case.packaging == "zip":
            if case.raw is not None and not case.filename:
                (folder / f"{case.name}.zip").write_bytes(data)
                continue
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr(name, data)
                zf.writestr("__MACOSX/._" + Path(name).name, b"resource fork")
                for k, v in extra.items():
                    zf.writestr(k, v)
            (folder / f"{case.name}.zip").write_bytes(buf.getvalue())
        else:
            (folder / case.name).mkdir()
            if not case.no_notebook:
                (folder / case.name / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / case.name / name).write_bytes(data)
            for k, v in extra.items():
                (folder / case.name / k).write_bytes(v)
