"""Runs inside the grading kernel: the checks that the rewritten test cells put every value through.

Test cells are rewritten (:func:`nas_lab.grading.rewrite.rewrite_test`) so that every value that comes
out of student code passes :meth:`ValueChecks.check`: an object whose class (written by the student)
redefines comparison, truth, arithmetic or conversion methods, or numpy/torch dispatch hooks
(:data:`RISKY`), is refused, so an "always equal" object cannot pass an ``assert got == expected``.
Classes the grader trusts (builtins, the libraries, the locked cells' helpers) are those the snapshot
(:class:`nas_lab.grading.snapshot.Snapshot`) recorded before student code ran.

Only the standard library is imported here: the module is loaded before any student code runs, and the
accessors of ``type`` below are taken from it then, before anything can replace them.
"""

from __future__ import annotations

import operator
import types
from collections.abc import Callable

#: Methods that let an object fake a comparison, a truth value, a number or a numpy/torch result.
RISKY = frozenset(
    f"__{n}__" for n in (
        "eq ne lt le gt ge bool hash float int index complex round trunc floor ceil abs neg pos invert "
        "add radd sub rsub mul rmul truediv rtruediv floordiv rfloordiv mod rmod pow rpow matmul rmatmul "
        "and rand or ror xor rxor contains getattr getattribute class instancecheck subclasscheck "
        "torch_function torch_dispatch array array_ufunc array_function array_priority array_interface "
        "array_struct").split())
#: ``type.__flags__`` bit of classes defined in Python (``Py_TPFLAGS_HEAPTYPE``), whose methods can change.
HEAPTYPE = 1 << 9
mro = type.__dict__["__mro__"].__get__
class_dict = type.__dict__["__dict__"].__get__
class_flags = type.__dict__["__flags__"].__get__
_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
        ">=": operator.ge, "in": lambda a, b: a in b, "not in": lambda a, b: a not in b,
        "is": operator.is_, "is not": operator.is_not}
_BIN = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "//": operator.floordiv,
        "%": operator.mod, "**": operator.pow, "@": operator.matmul, "&": operator.and_, "|": operator.or_,
        "^": operator.xor, "<<": operator.lshift, ">>": operator.rshift}
_UN = {"-": operator.neg, "+": operator.pos, "~": operator.invert}


class ValueChecks:
    """The checks of the values a test handles (calls, comparisons, operators, truth tests).

    ``trusted`` holds the ids of the classes whose instances pass unchecked (shared with the snapshot, which
    adds to it); a call of ``reload`` has its result handed to ``on_reload`` (the snapshot re-records it).
    """

    def __init__(self, trusted: set[int], reload: Callable, on_reload: Callable[[types.ModuleType], None]) -> None:
        self.trusted = trusted
        self.reload = reload
        self.on_reload = on_reload

    def _unsafe(self, cls: type) -> str | None:
        """Why instances of ``cls`` cannot be trusted in a test, or None."""
        for klass in (cls, type(cls)):
            for base in mro(klass):
                if id(base) in self.trusted or not class_flags(base) & HEAPTYPE:
                    continue
                bad = RISKY.intersection(class_dict(base))
                if bad:
                    return f"its class {base.__qualname__} redefines {sorted(bad)[0]}"
        return None

    def check(self, value: object, _depth: int = 0, _budget: list | None = None) -> object:
        """Refuse values that could fake a test result; returns ``value`` unchanged."""
        budget = [200_000] if _budget is None else _budget
        cls = type(value)
        if id(cls) in self.trusted and cls not in (tuple, list, set, frozenset, dict):
            if cls.__name__ == "ndarray" and getattr(value, "dtype", None) is not None and _depth < 4 \
                    and value.dtype.kind == "O":
                for item in value.flat:
                    self._check_item(item, _depth, budget)
            return value
        reason = self._unsafe(cls)
        if reason:
            raise TypeError(f"the grader cannot compare a {cls.__name__} object: {reason}; "
                            "return a plain value (a number, a tuple, a list, a tensor...)")
        if _depth < 4 and issubclass(cls, (tuple, list, set, frozenset, dict)):
            items = list(dict.items(value)) if issubclass(cls, dict) else value
            for item in items:
                self._check_item(item, _depth, budget)
        return value

    def _check_item(self, item: object, depth: int, budget: list) -> None:
        budget[0] -= 1
        if budget[0] > 0:
            self.check(item, depth + 1, budget)

    def call(self, fn, /, *args, **kwargs):  # noqa: ANN001, ANN201 - generic pass-through
        """``fn(*args, **kwargs)`` with every argument and the result checked."""
        for a in args:
            self.check(a)
        for a in kwargs.values():
            self.check(a)
        result = fn(*args, **kwargs)
        if fn is self.reload and isinstance(result, types.ModuleType):
            self.on_reload(result)
        return self.check(result)

    def mcall(self, obj, name: str, /, *args, **kwargs):  # noqa: ANN001, ANN201
        """``obj.name(*args, **kwargs)`` with the receiver checked too."""
        self.check(obj)
        return self.call(getattr(obj, name), *args, **kwargs)

    def cmp(self, left, *chain):  # noqa: ANN001, ANN201
        """A (chained) comparison ``left op1 right1 op2 right2 ...`` of checked operands."""
        result: object = True
        for i in range(0, len(chain), 2):
            op, right = chain[i], chain[i + 1]
            if op not in ("is", "is not"):
                self.check(left)
                self.check(right)
            result = _OPS[op](left, right)
            if i + 2 < len(chain) and not self.truth(result):
                return result
            left = right
        return result

    def bin(self, op: str, left, right):  # noqa: ANN001, ANN201
        """``left op right`` of checked operands."""
        return _BIN[op](self.check(left), self.check(right))

    def un(self, op: str, value):  # noqa: ANN001, ANN201
        """A unary operator on a checked operand (``not`` included)."""
        return (not self.truth(value)) if op == "not" else _UN[op](self.check(value))

    def truth(self, value: object) -> bool:
        """``bool(value)`` of a checked value."""
        return bool(self.check(value))

    def val(self, value: object) -> object:
        """A checked value (operands of ``and``/``or``)."""
        return self.check(value)
