"""Runs inside the grading kernel: a snapshot of the pristine interpreter, and its restoration.

Part of the guard (:mod:`nas_lab.grading.guard`), which takes the :class:`Snapshot` when it is installed,
before any student code runs, and has it

* record, after each locked (instructor) cell, the modules imported so far and the helpers the cell
  defined (functions, classes, modules): :meth:`Snapshot.trust_locked`;
* put back, before and after each test cell, whatever student code replaced (:meth:`Snapshot.restore`):
  functions and classes of numpy, torch, nas_lab, the standard library's comparison helpers, builtins,
  ``sys.stdout``/``stderr``/hooks, import hooks, IPython's input transformers, traceback display and
  event hooks, the locked cells' helpers. A change found *after* a test cell means the test was tampered
  with while it ran (:func:`critical`): the grader fails that test.

Only the standard library is imported here: the module is loaded before any student code runs.
"""

from __future__ import annotations

import builtins
import sys
import threading
import types
import warnings

from nas_lab.grading.checks import HEAPTYPE, RISKY, class_dict, class_flags, mro

#: Roots of the modules whose functions and classes are restored before every test cell.
PREFIXES = frozenset({
    "builtins", "numpy", "torch", "torchvision", "torchprofile", "nas_lab", "math", "cmath", "operator",
    "functools", "itertools", "importlib", "random", "statistics", "unittest", "fractions", "decimal",
    "numbers", "copy", "collections", "IPython", "ipykernel", "inspect", "types", "abc", "json", "re", "enum",
    "dataclasses", "typing", "pathlib", "datetime", "contextlib",
})
#: Submodules imported with their package (lazily loaded ones would otherwise first appear, already
#: patched, in student code).
EAGER = {"numpy": ("numpy.testing",), "torch": ("torch.testing",)}
#: Functions that libraries themselves replace when imported (torch.package patches inspect.getfile).
KNOWN_PATCHES = frozenset({"inspect.getfile"})
#: A change found after a test cell fails the test only if it is in one of these (else it is restored).
CRITICAL = ("builtins", "numpy", "torch", "nas_lab", "math", "operator", "unittest", "functools", "importlib",
            "sys", "IPython", "ZMQInteractiveShell", "IPythonKernel", "kernel", "locked", "guard")
_MISSING = object()


def _same(a: object, b: object) -> bool:
    """Identity, except that bound methods (a new object at each attribute access) compare by parts."""
    if a is b:
        return True
    if type(a) is type(b) and type(a) in (types.MethodType, types.BuiltinMethodType):
        return a.__self__ is b.__self__ and getattr(a, "__func__", a.__name__) == getattr(b, "__func__", b.__name__)
    return False


def _library_roots() -> tuple[str, ...]:
    import os
    import sysconfig

    roots = {sys.prefix, sys.base_prefix, *sysconfig.get_paths().values()}
    nas_lab = sys.modules.get("nas_lab")
    if nas_lab is not None and getattr(nas_lab, "__file__", None):
        roots.add(os.path.dirname(nas_lab.__file__))
    return tuple(sorted(r for r in roots if r))


def _student_code(obj: object, roots: tuple[str, ...]) -> bool:
    """Whether ``obj`` is a function written in the notebook (not in a library file)."""
    func = getattr(obj, "__func__", obj)
    code = getattr(func, "__code__", None)
    return code is not None and not code.co_filename.startswith(roots)


def _restorable(value: object) -> bool:
    """Code-like values (functions, classes, modules, descriptors) are restored; data values are not."""
    return callable(value) or isinstance(value, (types.ModuleType, property, classmethod, staticmethod))


def critical(fixed: list[str]) -> list[str]:
    """What of the restored ``fixed`` means tampering, when it changed while a test ran."""
    return [f for f in fixed if f.partition(".")[0].partition(" ")[0] in CRITICAL or "locked cell" in f
            or f.startswith(("sys.", "IPython", "kernel"))]


class Snapshot:
    """The pristine state of the kernel's interpreter, taken before student code runs, and put back on demand.

    ``pristine`` holds the builtins as they were when the guard was installed: a module global that shadows
    one of them is removed on restore. ``trusted`` holds the ids of the classes recorded here (their
    instances pass :class:`~nas_lab.grading.checks.ValueChecks` unchecked).
    """

    def __init__(self, shell: object, pristine: dict[str, object]) -> None:
        self.shell = shell
        self.pristine = pristine
        self.modules: dict[str, tuple[types.ModuleType, dict]] = {}
        self.classes: dict[int, tuple[type, dict]] = {}
        self.trusted: set[int] = set()
        self.protected: dict[str, object] = {}
        self.threads = set(threading.enumerate())
        self.roots = _library_roots()
        self.state: dict[str, object] = {}
        self._snapshot_state()
        self.snapshot_modules()

    def refresh(self) -> None:
        """Take the whole snapshot again: only while no student code has run yet (after the setup cells)."""
        self.modules.clear()
        self.classes.clear()
        self.roots = _library_roots()
        self._snapshot_state()
        self.snapshot_modules()

    def new_threads(self) -> list[str]:
        """Names of the live threads started by notebook code since the snapshot."""
        return sorted(t.name for t in threading.enumerate() if t not in self.threads and t.is_alive()
                      and _student_code(getattr(t, "_target", None) or t.run, self.roots))

    # ------------------------------------------------------------------------------------ snapshots

    def _snapshot_state(self) -> None:
        s, shell = self.state, self.shell
        s["sys"] = {a: getattr(sys, a) for a in ("stdout", "stderr", "displayhook", "excepthook")}
        s["meta_path"], s["path_hooks"] = list(sys.meta_path), list(sys.path_hooks)
        s["builtins"] = dict(builtins.__dict__)
        objects = [shell, getattr(shell, "kernel", None), getattr(shell, "displayhook", None),
                   getattr(shell, "display_pub", None)]
        s["objects"] = [(o, dict(vars(o))) for o in objects if o is not None and hasattr(o, "__dict__")]
        for o in objects + [sys.stdout, sys.stderr]:
            for cls in mro(type(o)) if o is not None else ():
                self._snapshot_class(cls)
        if shell is not None:
            s["lists"] = [(lst, list(lst)) for lst in (
                shell.input_transformers_cleanup, shell.input_transformers_post, shell.ast_transformers)]
            kernel = getattr(shell, "kernel", None)
            handlers = getattr(kernel, "shell_handlers", None)
            s["handlers"] = (handlers, dict(handlers)) if isinstance(handlers, dict) else None
            s["user_ns"] = {k: v for k, v in shell.user_ns.items() if k in ("__builtins__", "get_ipython")}

    def _snapshot_class(self, cls: type) -> None:
        if id(cls) in self.trusted:
            return
        self.trusted.add(id(cls))
        if class_flags(cls) & HEAPTYPE:
            self.classes[id(cls)] = (cls, dict(class_dict(cls)))

    def snapshot_modules(self, only: types.ModuleType | None = None) -> None:
        """Record the modules (of :data:`PREFIXES`) not seen yet, or re-record ``only`` (after a reload)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for parent, children in EAGER.items():
                if parent in sys.modules and only is None:
                    for child in children:
                        try:
                            __import__(child)
                        except Exception:  # noqa: BLE001 - an optional submodule
                            pass
            items = [(only.__name__, only)] if only is not None else list(sys.modules.items())
            for name, mod in items:
                if (only is None and name in self.modules) or not isinstance(mod, types.ModuleType):
                    continue
                if name.partition(".")[0] not in PREFIXES:
                    continue
                d = dict(vars(mod))
                self.modules[name] = (mod, d)
                for value in d.values():
                    if isinstance(value, type):
                        if only is not None:
                            self.trusted.discard(id(value))
                        self._snapshot_class(value)
            for name in ("int", "float", "bool", "str", "bytes", "complex", "tuple", "list", "dict", "set",
                         "frozenset", "type", "object", "range", "slice", "NoneType", "ellipsis"):
                cls = getattr(builtins, name, None) or type(None)
                self.trusted.add(id(cls))

    def trust_locked(self, names: list[str], refresh: bool = False) -> None:
        """A locked cell ran: trust what it imported and protect the helpers it defined (``refresh``: no
        student code ran yet, so everything the cell changed, e.g. by importing torch, is trusted)."""
        if refresh:
            self.refresh()
        self.snapshot_modules()
        ns = self.shell.user_ns if self.shell is not None else {}
        for name in names:
            value = ns.get(name, _MISSING)
            if value is not _MISSING and _restorable(value):
                self.protected[name] = value
                if isinstance(value, type):
                    self._snapshot_class(value)

    # ------------------------------------------------------------------------------------- restoring

    def restore(self) -> list[str]:
        """Put back everything in the snapshot that was replaced; returns what was put back."""
        fixed: list[str] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._restore_sys(fixed)
            self._restore_dict(builtins.__dict__, self.state["builtins"], "builtins", fixed, everything=True)
            for name, (mod, snap) in list(self.modules.items()):
                if sys.modules.get(name) is not mod:
                    sys.modules[name] = mod
                    fixed.append(f"sys.modules[{name!r}]")
                self._restore_dict(mod.__dict__, snap, name, fixed)
            for cls, snap in list(self.classes.values()):
                self._restore_class(cls, snap, fixed)
            self._restore_shell(fixed)
            ns = self.shell.user_ns if self.shell is not None else {}
            for name, value in list(self.protected.items()) + list(self.state.get("user_ns", {}).items()):
                if not _same(ns.get(name, _MISSING), value):
                    ns[name] = value
                    fixed.append(f"{name} (defined by a locked cell)")
            self.snapshot_modules()
        return fixed

    def _restore_dict(self, cur: dict, snap: dict, where: str, fixed: list[str], everything: bool = False) -> None:
        for key, value in list(snap.items()):
            if f"{where}.{key}" in KNOWN_PATCHES:
                continue
            if (everything or _restorable(value)) and not _same(cur.get(key, _MISSING), value):
                cur[key] = value
                fixed.append(f"{where}.{key}")
        for key in [k for k in list(cur) if k not in snap]:
            if isinstance(key, str) and key in self.pristine and not key.startswith("_"):
                del cur[key]  # a module global that shadows a builtin
                fixed.append(f"{where}.{key}")

    def _restore_class(self, cls: type, snap: dict, fixed: list[str]) -> None:
        cur = class_dict(cls)
        for key, value in snap.items():
            if _restorable(value) and not _same(cur.get(key, _MISSING), value):
                try:
                    type.__setattr__(cls, key, value)
                    fixed.append(f"{cls.__module__}.{cls.__qualname__}.{key}")
                except (TypeError, AttributeError):
                    pass
        for key in [k for k in list(cur) if k not in snap]:
            if key in RISKY or any(key in class_dict(base) for base in mro(cls)[1:]):
                try:
                    type.__delattr__(cls, key)
                    fixed.append(f"{cls.__module__}.{cls.__qualname__}.{key}")
                except (TypeError, AttributeError):
                    pass

    def _restore_sys(self, fixed: list[str]) -> None:
        s = self.state
        if sys.gettrace() is not None or sys.getprofile() is not None:
            sys.settrace(None)
            sys.setprofile(None)
            fixed.append("sys.settrace/setprofile")
        threading.settrace(None)
        threading.setprofile(None)
        for attr, value in s["sys"].items():
            if not _same(getattr(sys, attr, None), value):
                setattr(sys, attr, value)
                fixed.append(f"sys.{attr}")
        for attr in ("meta_path", "path_hooks"):
            lst = getattr(sys, attr)
            if [id(x) for x in lst] != [id(x) for x in s[attr]]:
                lst[:] = s[attr]
                setattr(sys, attr, lst)
                fixed.append(f"sys.{attr}")

    def _restore_shell(self, fixed: list[str]) -> None:
        s = self.state
        for obj, snap in s["objects"]:
            cur = vars(obj)
            for key, value in snap.items():
                if _restorable(value) and not _same(cur.get(key, _MISSING), value):
                    cur[key] = value
                    fixed.append(f"{type(obj).__name__}.{key}")
            for key in [k for k in list(cur) if k not in snap]:
                if callable(getattr(type(obj), key, None)):
                    del cur[key]
                    fixed.append(f"{type(obj).__name__}.{key}")
        for lst, snap in s.get("lists", []):
            if [id(x) for x in lst] != [id(x) for x in snap]:
                lst[:] = snap
                fixed.append("IPython input/AST transformers")
        if self.shell is not None:  # libraries add hooks too (matplotlib): drop only the notebook's own
            for key, cbs in self.shell.events.callbacks.items():
                mine = [cb for cb in cbs if _student_code(cb, self.roots)]
                for cb in mine:
                    cbs.remove(cb)
                if mine:
                    fixed.append(f"IPython event hooks ({key})")
        if s.get("handlers"):
            handlers, snap = s["handlers"]
            if any(not _same(handlers.get(k), v) for k, v in snap.items()):
                handlers.update(snap)
                fixed.append("kernel message handlers")
