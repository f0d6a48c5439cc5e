"""The notebook runner used by ``nas-lab grade`` in place of nbgrader's ``Execute`` preprocessor.

``GuardedExecute`` keeps nbgrader's behaviour (a cell error is recorded and the next cell runs; per-cell
timeout) and adds what a class of real submissions needs:

* a kernel that dies (``os._exit``, a crash, the memory limit) or a cell that ignores the interrupt
  after its timeout costs that cell only: the notebook is run again from a fresh kernel without it;
* the in-kernel :mod:`nas_lab.grading.guard` restores monkeypatched functions before each test cell
  and detects tampering during it; test cells run rewritten (:mod:`nas_lab.grading.rewrite`) so that values from
  student code are checked before they are compared; an error-reporting canary runs before each test;
* hidden tests run as a separate execution after the visible part has passed, so that their source
  never reaches the kernel while student code could print it into the visible output;
* output is capped per cell and per notebook; the shipped files the kernel can reach are checked
  (size, mtime, ctime, inode) before and after each test cell and put back from the master copy.

What happened is written to ``report_file`` (JSON) and, per graded cell, to ``progress_file`` (one JSON
line each), so a grading killed by the wall-clock limit still leaves the scores reached so far.
"""

from __future__ import annotations

import ast
import copy
import functools
import json
import secrets
import shutil
from pathlib import Path

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.v4 import new_code_cell, new_output
from nbgrader.preprocessors import Execute
from traitlets import Dict, Integer, List, Unicode

from nas_lab.grading.cells import BEGIN_HIDDEN, END_HIDDEN, cell_kind, grade_id, split_hidden
from nas_lab.grading.rewrite import rewrite_locked, rewrite_test, top_level_names

SIGNALS = {6: "SIGABRT: aborted, often a failed memory allocation", 9: "SIGKILL: killed, e.g. out of memory",
           11: "SIGSEGV: a crash in native code", 25: "SIGXFSZ: wrote a file larger than allowed"}


# ------------------------------------------------------------------------------------------ runner


def limit_memory(memory_mb: int) -> None:
    """RLIMIT_DATA of the kernel process (runs in it before exec): allocations beyond fail (MemoryError)."""
    import resource

    mem = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (mem, mem))


class KernelLost(Exception):
    """The kernel died, or hung past its interrupt, while running cell ``index``."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index, self.reason = index, reason


def _error(ename: str, evalue: str) -> dict:
    return new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _file_state(root: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            s = p.stat()
            out[str(p.relative_to(root))] = (s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino)
    return out


class GuardedExecute(Execute):
    """nbgrader's Execute with the guard, kernel-death recovery, output caps and a grading report."""

    grace = Integer(10, help="seconds a cell has to stop after its timeout interrupt").tag(config=True)
    max_restarts = Integer(3, help="kernel deaths or hangs tolerated (each skips one cell)").tag(config=True)
    cell_output_limit = Integer(1_000_000, help="characters of output kept per cell").tag(config=True)
    total_output_limit = Integer(20_000_000, help="characters of output kept per notebook").tag(config=True)
    report_file = Unicode("", help="where to write the JSON grading report").tag(config=True)
    progress_file = Unicode("", help="JSON lines, one per graded cell, written as they finish").tag(config=True)
    protected_dirs = List([], help="[[copy, master], ...]: folders the kernel must not change").tag(config=True)
    begin_hidden = Unicode(BEGIN_HIDDEN).tag(config=True)
    end_hidden = Unicode(END_HIDDEN).tag(config=True)
    kernel_env = Dict({}, help="environment of the kernel (default: this process's)").tag(config=True)
    kernel_memory_mb = Integer(0, help="RLIMIT_DATA of the kernel in MB (0: inherited)").tag(config=True)

    def preprocess(self, nb, resources=None, km=None):  # noqa: ANN001, ANN201 - nbconvert's signature
        original = copy.deepcopy(nb)
        self.skip: dict[int, str] = {}
        self.report = {"restarts": [], "events": [], "cells": {}}
        for _attempt in range(self.max_restarts + 2):
            work = copy.deepcopy(original)
            self._reset()
            try:
                nb, resources = super().preprocess(work, resources, km)
                break
            except KernelLost as lost:
                if lost.index < 0 or lost.index in self.skip or len(self.skip) > self.max_restarts:
                    self._write_report()
                    raise
                self.skip[lost.index] = lost.reason
                self.report["restarts"].append({"cell": lost.index, "reason": lost.reason,
                                                "grade_id": self._gid(original.cells[lost.index])})
        self._write_report()
        return nb, resources

    # ------------------------------------------------------------------------------------ plumbing

    def _reset(self) -> None:
        self.token = secrets.token_hex(8)
        self.guard_name = f"_nas_lab_guard_{self.token}"
        self.installed = False
        self.student_ran = False
        self.locked_names: set[str] = set()
        self.out_used: dict[int, int] = {}
        self.out_total = 0
        self.truncated: set[int] = set()
        self.stderr_noted: set[int] = set()
        self.report["cells"], self.report["events"] = {}, []
        if self.progress_file:
            Path(self.progress_file).write_text("")
        self.files = {c: _file_state(Path(c)) for c, _ in self.protected_dirs}

    @staticmethod
    def _gid(cell) -> str:  # noqa: ANN001
        return grade_id(cell) or ""

    def _event(self, kind: str, detail: str, index: int) -> None:
        self.report["events"].append({"kind": kind, "detail": detail, "cell": index,
                                      "grade_id": self._gid(self.nb.cells[index])})

    def _write_report(self) -> None:
        if self.report_file:
            Path(self.report_file).write_text(json.dumps(self.report, indent=1))

    async def async_start_new_kernel(self, **kwargs):  # noqa: ANN003, ANN201
        if self.kernel_env:
            kwargs.setdefault("env", dict(self.kernel_env))
        if self.kernel_memory_mb:
            kwargs.setdefault("preexec_fn", functools.partial(limit_memory, self.kernel_memory_mb))
        return await super().async_start_new_kernel(**kwargs)

    def output(self, outs, msg, display_id, cell_index):  # noqa: ANN001, ANN201 - nbclient's signature
        content = msg.get("content", {})
        if msg.get("msg_type") in ("stream", "display_data", "execute_result"):
            size = len(content.get("text", "")) + sum(len(str(v)) for v in content.get("data", {}).values())
            used = self.out_used.get(cell_index, 0)
            if used + size > self.cell_output_limit or self.out_total + size > self.total_output_limit:
                if cell_index not in self.truncated:
                    self.truncated.add(cell_index)
                    outs.append(new_output("stream", name="stdout", text=(
                        f"\n[output truncated by the grader: more than {self.cell_output_limit:,} characters]\n")))
                    self._event("output_truncated", "output truncated", cell_index)
                if content.get("name") == "stderr" and cell_index not in self.stderr_noted:
                    self.stderr_noted.add(cell_index)
                    outs.append(new_output("stream", name="stderr", text="[stderr output truncated]\n"))
                return None
            self.out_used[cell_index] = used + size
            self.out_total += size
        return super().output(outs, msg, display_id, cell_index)

    def _death(self) -> str:
        code = None
        try:
            proc = getattr(self.km.provisioner, "process", None)
            code = proc.wait(timeout=5) if proc is not None else None
        except Exception:  # noqa: BLE001 - best effort
            pass
        if code is None:
            return "the kernel died"
        if code < 0:
            return f"the kernel was killed by signal {-code} ({SIGNALS.get(-code, 'see `man 7 signal`')})"
        return f"the kernel exited with code {code} (os._exit, exit() or a crash)"

    def _run(self, cell, index: int, store_history: bool = True, timeout: int | None = None):  # noqa: ANN001, ANN201
        """Execute ``cell`` (a notebook cell or a temporary one) as if it were cell ``index``."""
        real = self.nb.cells[index]
        saved = self.timeout
        if timeout is not None:
            self.timeout = timeout
        try:
            self.execute_cell(cell, index, store_history=store_history)
        except DeadKernelError:
            raise KernelLost(index, self._death()) from None
        except CellTimeoutError:  # no "idle" after the timeout interrupt: the kernel may be stuck
            cell.outputs.append(_error("CellTimeoutError", "timeout"))
            self.nb.cells[index] = real
            self._stuck(index)
        finally:
            self.timeout = saved
            self.nb.cells[index] = real
        return cell

    def _expression(self, expr: str, index: int, timeout: int = 120) -> tuple[str | None, str]:
        """Evaluate ``expr`` in the kernel as a *user expression* of an empty silent execution: it does not go
        through input transformers, ``run_cell`` or traceback display, which student code may have replaced.
        Returns (the string it evaluated to, or None; why not)."""
        msg_id = self.kc.execute("", silent=True, store_history=False, user_expressions={"r": expr},
                                 allow_stdin=False, stop_on_error=False)
        saved = self.timeout
        self.timeout = max(timeout, self.timeout or 0)
        try:
            reply = self.wait_for_reply(msg_id)
        except DeadKernelError:
            raise KernelLost(index, self._death()) from None
        finally:
            self.timeout = saved
        if reply is None:
            self._stuck(index)
            return None, "no reply"
        content = reply["content"]
        result = content.get("user_expressions", {}).get("r")
        if content.get("status") != "ok" or not result:
            return None, f"{content.get('ename', 'no result')}: {content.get('evalue', '')}"
        if result.get("status") != "ok":
            return None, f"{result.get('ename')}: {result.get('evalue')}"
        try:
            return ast.literal_eval(result["data"]["text/plain"]), ""
        except (KeyError, ValueError, SyntaxError):
            return None, "unreadable result"

    def _call(self, method: str, index: int, *args: object) -> dict | None:
        """Call a guard method in the kernel; its JSON report, or None when the guard did not answer."""
        text, _ = self._expression(f"{self.guard_name}.{method}({', '.join(map(repr, args))})", index)
        if not isinstance(text, str) or not text.startswith(self.token):
            return None
        return json.loads(text[len(self.token):])

    def _stuck(self, index: int) -> None:
        """After a timeout: if the kernel does not answer within ``grace`` seconds, it is lost."""
        real, saved, probe = self.nb.cells[index], self.timeout, new_code_cell("pass")
        self.timeout = self.grace
        try:
            self.execute_cell(probe, index, store_history=False)
            ok = not any(o.output_type == "error" for o in probe.outputs)
        except CellTimeoutError:
            ok = False
        except DeadKernelError:
            raise KernelLost(index, self._death()) from None
        finally:
            self.timeout = saved
            self.nb.cells[index] = real
        if not ok:
            try:
                self.km.provisioner.process.kill()
            except Exception:  # noqa: BLE001
                pass
            raise KernelLost(index, f"the cell ignored the interrupt after its {self.timeout} s timeout")

    def _timeouts(self, outputs: list, index: int) -> None:
        for out in outputs:
            if out.output_type == "error" and out.ename == "CellTimeoutError":
                out.evalue = (f"this cell did not finish within the per-cell limit of {self.timeout} s and was "
                              "interrupted (an endless loop, or far too much work)")
                out.traceback = [f"CellTimeoutError: {out.evalue}"]
                self._event("cell_timeout", out.evalue, index)
                full = self._memory_full()
                if full:  # a MemoryError can leave the kernel unable to send its reply: say what happened
                    self._event("memory_limit", full, index)
                self._stuck(index)

    def _memory_full(self) -> str | None:
        """A note if the kernel holds at least 90 % of its memory limit (read from /proc; None elsewhere)."""
        if not self.kernel_memory_mb:
            return None
        try:
            pid = self.km.provisioner.process.pid
            status = Path(f"/proc/{pid}/status").read_text()
            used_mb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmData:")) / 1024
        except Exception:  # noqa: BLE001 - no /proc, no process: nothing to add
            return None
        if used_mb < 0.9 * self.kernel_memory_mb:
            return None
        return (f"when the cell timed out the kernel held {used_mb:.0f} MB of its {self.kernel_memory_mb} MB memory "
                "limit (memory ran out, and the kernel could not go on)")

    def _check_files(self, index: int) -> list[str]:
        """Shipped files the kernel changed since the last check: put back from the master copy."""
        changed = []
        for copy_dir, master in self.protected_dirs:
            now = _file_state(Path(copy_dir))
            before = self.files[copy_dir]
            bad = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
            for rel in bad:
                src, dst = Path(master) / rel, Path(copy_dir) / rel
                try:
                    if src.is_file():
                        dst.unlink(missing_ok=True)
                        shutil.copy2(src, dst)
                    else:
                        dst.unlink(missing_ok=True)
                except OSError:
                    pass
            self.files[copy_dir] = _file_state(Path(copy_dir))
            changed += [f"{Path(copy_dir).name}/{rel}" for rel in bad]
        return changed

    # ------------------------------------------------------------------------------------ cells

    def preprocess_cell(self, cell, resources, index):  # noqa: ANN001, ANN201 - nbconvert's signature
        self._check_assign_resources(resources)
        if not self.installed:
            self._install(index)
        if index in self.skip:
            what = "test" if cell_kind(cell) == "test" else "cell"
            text = f"{self.skip[index]} while this {what} ran; the grader ran the notebook again without it"
            cell.outputs = [_error("KernelDied", text + (" (0 points)" if what == "test" else ""))]
            return cell, self.resources
        kind = cell_kind(cell)
        if kind == "markdown" or not cell.source.strip():
            return cell, self.resources
        if kind == "test":
            self.student_ran = True  # a test calls student code
            self._run_test(cell, index)
        elif kind == "locked":  # instructor code, with pristine builtins
            tmp = self._run(new_code_cell(rewrite_locked(cell.source, self.guard_name)), index)
            cell.outputs, cell.execution_count = tmp.outputs, tmp.get("execution_count")
            self._timeouts(cell.outputs, index)
            names = top_level_names(cell.source)
            self.locked_names.update(names)
            self._call("after_locked", index, names, not self.student_ran)
        else:
            self._run(cell, index)
            self._timeouts(cell.outputs, index)
            self.student_ran = True
        self._progress(cell, index)
        return cell, self.resources

    def _install(self, index: int) -> None:
        self.installed = True
        install = f"__import__('nas_lab.grading.guard', fromlist=['install']).install({self.token!r})"
        text, why = self._expression(install, index, timeout=300)
        if not isinstance(text, str) or not text.startswith(self.token):
            raise KernelLost(-1, f"the grading guard could not be installed: {why}")

    def _run_test(self, cell, index: int) -> None:  # noqa: ANN001
        rep = self._call("before_test", index)
        problems = []
        if rep is None:
            problems.append("the grading guard was removed or replaced")
        else:
            if rep["n_fixed"]:
                self._event("patched", ", ".join(rep["fixed"]), index)
            if rep["threads"]:
                self._event("threads", ", ".join(rep["threads"]), index)
        changed = self._check_files(index)
        if changed:
            self._event("files_restored", ", ".join(changed[:10]), index)
        canary = self._run(new_code_cell(f"raise AssertionError({self.token!r})"), index, store_history=False,
                           timeout=max(60, self.timeout or 60))
        if not any(o.output_type == "error" and self.token in o.get("evalue", "") for o in canary.outputs):
            problems.append("errors were no longer reported (error display disabled)")
        outputs, hidden_from, failed = [], None, None
        protected = self.locked_names
        for hidden, code in split_hidden(cell.source, self.begin_hidden, self.end_hidden):
            if hidden and hidden_from is None:
                hidden_from = len(outputs)
            tmp = self._run(new_code_cell(rewrite_test(code, self.guard_name, protected)), index, store_history=False)
            self._timeouts(tmp.outputs, index)
            outputs += tmp.outputs
            if any(o.output_type == "error" for o in tmp.outputs):
                failed = "hidden" if hidden else "visible"
                break
        names = top_level_names(cell.source)
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        after = self._call("after_test", index, private, [n for n in names if n not in private])
        if after is None:
            problems.append("the grading guard was removed or replaced during the test")
        elif after["critical"]:
            problems.append("the test's tools were replaced while it ran: " + ", ".join(after["critical"][:8]))
        elif after["n_fixed"]:
            self._event("patched", ", ".join(after["fixed"]), index)
        changed = self._check_files(index)
        if changed:
            problems.append("shipped files were changed while the test ran: " + ", ".join(changed[:5]))
        if problems:
            outputs.append(_error("GradingIntegrityError", "; ".join(problems)))
            self._event("tampered", "; ".join(problems), index)
            failed = failed or "integrity"
        cell.outputs = outputs
        cell.metadata["nas_lab"] = {"hidden_from": hidden_from, "failed": failed}

    def _progress(self, cell, index: int) -> None:  # noqa: ANN001
        from nbgrader.utils import determine_grade, is_grade

        if not is_grade(cell):
            return
        score, points = determine_grade(cell)
        entry = {"grade_id": self._gid(cell), "score": score, "max": points}
        self.report["cells"][entry["grade_id"]] = entry
        if self.progress_file:
            with open(self.progress_file, "a") as f:
                f.write(json.dumps(entry) + "\n")
