"""Runs inside the kernel that grades one submission: keeps the test cells honest.

The grader (:mod:`nas_lab.grading.execute`) calls :func:`install` before the first cell, which puts a
:class:`Guard` under a random name in ``builtins``, and calls it around the cells it runs. The guard
is made of two parts:

* a :class:`~nas_lab.grading.snapshot.Snapshot` of the pristine interpreter: after each locked
  (instructor) cell, :meth:`Guard.after_locked` records the modules imported so far and the helpers the
  cell defined; before and after each test cell (:meth:`Guard.before_test`, :meth:`Guard.after_test`)
  whatever student code replaced is put back. A change found *after* a test cell means the test was
  tampered with while it ran: the grader fails that test;
* :class:`~nas_lab.grading.checks.ValueChecks` (which it extends), the checks that the rewritten test cells (see
  :func:`nas_lab.grading.rewrite.rewrite_test`) call on every value that comes out of student code
  (``check``, ``call``, ``mcall``, ``cmp``, ``bin``, ``un``, ``truth``, ``val``). Builtins named in test
  cells are taken from the guard's pristine copy ``B``, so a student's ``def abs(x): ...`` does not reach them.

It also caps the kernel's stream output and turns ``exit()`` into an error instead of a dead kernel.
Only the standard library is imported here: the module is loaded before any student code runs.
"""

from __future__ import annotations

import builtins
import json
import linecache
import sys

from nas_lab.grading.checks import ValueChecks
from nas_lab.grading.snapshot import Snapshot, critical


class Guard(ValueChecks):
    """What the kernel sees: the value checks the rewritten test cells call (its :class:`ValueChecks` methods),
    the pristine builtins ``B`` they read, and the hooks the grader calls around cells, which use the
    :class:`Snapshot` it holds."""

    def __init__(self, token: str, out_limit: int = 20_000_000, hooks: bool = True) -> None:
        from IPython import get_ipython

        self.token = token
        self.name = f"_nas_lab_guard_{token}"
        self.shell = get_ipython()
        self.B = dict(builtins.__dict__)  # the pristine builtins, for the rewritten test cells
        self.B[self.name] = self
        if hooks:  # off only in unit tests, outside a kernel
            builtins.__dict__[self.name] = self
            _cap_streams(out_limit)
        if hooks and self.shell is not None:
            self.shell.ask_exit = _ask_exit  # exit()/quit() would kill the kernel a cell later
        self.snapshot = Snapshot(self.shell, self.B)
        super().__init__(self.snapshot.trusted, __import__("importlib").reload, self.snapshot.snapshot_modules)

    # ---------------------------------------------------------------------- hooks around the cells

    def _report(self, fixed: list[str], **extra: object) -> str:
        payload = {"fixed": fixed[:40], "n_fixed": len(fixed), "critical": critical(fixed)[:40],
                   "threads": self.snapshot.new_threads(), **extra}
        return f"{self.token}{json.dumps(payload)}"

    def after_locked(self, names: list[str], refresh: bool = False) -> str:
        """A locked cell ran: trust what it imported and protect the helpers it defined (``refresh``: no
        student code ran yet, so everything the cell changed, e.g. by importing torch, is trusted)."""
        self.snapshot.trust_locked(names, refresh)
        return self._report([])

    def before_test(self) -> str:
        """Restore before a test cell; the report lists what the student's code had replaced."""
        return self._report(self.snapshot.restore())

    def after_test(self, private: list[str], public: list[str]) -> str:
        """Restore after a test cell (anything found was changed *during* the test), drop its private
        names and scrub its source (hidden tests included) from the kernel's history and line cache."""
        fixed = self.snapshot.restore()
        ns = self.shell.user_ns
        for name in private:
            ns.pop(name, None)
        self.snapshot.trust_locked(public)
        self._scrub()
        return self._report(fixed)

    def _scrub(self) -> None:
        mark = self.name
        for key in [k for k, v in list(linecache.cache.items()) if mark in "".join(v[2] if len(v) > 2 else "")]:
            linecache.cache.pop(key, None)
        hm = getattr(self.shell, "history_manager", None)
        for lst in (getattr(hm, "input_hist_parsed", []), getattr(hm, "input_hist_raw", []),
                    getattr(hm, "db_input_cache", [])):
            for i, item in enumerate(lst):
                if mark in str(item):
                    lst[i] = "" if isinstance(item, str) else tuple("" if isinstance(x, str) else x for x in item)
        ns = self.shell.user_ns
        for key in [k for k in list(ns) if k.startswith("_i") and isinstance(ns[k], str) and mark in ns[k]]:
            ns[key] = ""


def _ask_exit() -> None:
    raise SystemExit("exit() or quit() was called: the grader keeps the kernel running")


def _cap_streams(limit: int) -> None:
    """Drop stream output beyond ``limit`` characters per stream (a gigabyte print never leaves)."""
    for stream in (sys.stdout, sys.stderr):
        write, used = stream.write, [0]

        def capped(text: str, _write=write, _used=used, _stream=stream) -> int:  # noqa: ANN001
            n = len(text)
            if _used[0] >= limit:
                return n
            if _used[0] + n > limit:
                text = text[: limit - _used[0]] + "\n[output truncated by the grader]\n"
            _used[0] += n
            return _write(text)

        try:
            stream.write = capped
        except (AttributeError, TypeError):
            pass


def install(token: str, out_limit: int = 20_000_000) -> str:
    """Create the guard (the grader calls this before the first cell); returns its first report."""
    guard = Guard(token, out_limit)
    return guard._report([], name=guard.name)
