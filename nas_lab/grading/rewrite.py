"""Test cells as the grader runs them: rewritten so that every value coming out of student code is checked
by the in-kernel guard (:mod:`nas_lab.grading.guard`). Their visible and hidden parts are split by
:func:`nas_lab.grading.cells.split_hidden`.

:func:`rewrite_test` turns ``assert f(3) == 9`` into ``assert G.truth(G.cmp(G.call(f, 3), "==", 9))``:
calls (arguments and results), comparisons, arithmetic, unary operators, ``and``/``or`` operands and the
tests of ``assert``/``if``/``while`` go through the guard ``G``, and builtins named in the cell come from
its pristine copy. On honest values the rewritten cell computes exactly what the original computes.
"""

from __future__ import annotations

import ast
import builtins

FRAME_SENSITIVE = frozenset({"super", "locals", "globals", "vars", "dir", "eval", "exec", "breakpoint",
                             "__import__", "__build_class__", "__debug__"})
_CMP = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.In: "in",
        ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
_BIN = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
        ast.MatMult: "@", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>"}
_UN = {ast.Not: "not", ast.USub: "-", ast.UAdd: "+", ast.Invert: "~"}


def top_level_names(source: str) -> list[str]:
    """Names a cell binds at module level (assignments, defs, classes, imports, loop targets)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            return
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return sorted(names)


def _all_bound(tree: ast.AST) -> set[str]:
    """Every name bound anywhere in the tree (so that its loads are not taken for builtins)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            out.add(node.id)
        elif isinstance(node, ast.arg):
            out.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            out.update(node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            out.add(node.name)
    return out


class _Rewrite(ast.NodeTransformer):
    """Route the values a test handles through the guard's checks (see :func:`rewrite_test`)."""

    def __init__(self, guard: str, builtin_names: set[str]) -> None:
        self.guard, self.builtins = guard, builtin_names

    def _g(self, attr: str) -> ast.expr:
        return ast.Attribute(value=ast.Name(id=self.guard, ctx=ast.Load()), attr=attr, ctx=ast.Load())

    def _call(self, attr: str, *args: ast.expr) -> ast.Call:
        return ast.Call(func=self._g(attr), args=list(args), keywords=[])

    def visit_Name(self, node: ast.Name) -> ast.expr:
        if isinstance(node.ctx, ast.Load) and node.id in self.builtins:
            return ast.copy_location(ast.Subscript(value=self._g("B"), slice=ast.Constant(node.id), ctx=ast.Load()),
                                     node)
        return node

    def visit_Call(self, node: ast.Call) -> ast.expr:
        if isinstance(node.func, ast.Name) and node.func.id in FRAME_SENSITIVE:
            node.args = [self.visit(a) for a in node.args]
            node.keywords = [self.visit(k) for k in node.keywords]
            return node
        self.generic_visit(node)
        if isinstance(node.func, ast.Attribute):
            args = [node.func.value, ast.Constant(node.func.attr), *node.args]
            new = ast.Call(func=self._g("mcall"), args=args, keywords=node.keywords)
        else:
            new = ast.Call(func=self._g("call"), args=[node.func, *node.args], keywords=node.keywords)
        return ast.copy_location(new, node)

    def visit_Compare(self, node: ast.Compare) -> ast.expr:
        self.generic_visit(node)
        args: list[ast.expr] = [node.left]
        for op, right in zip(node.ops, node.comparators):
            args += [ast.Constant(_CMP[type(op)]), right]
        return ast.copy_location(self._call("cmp", *args), node)

    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        self.generic_visit(node)
        return ast.copy_location(self._call("bin", ast.Constant(_BIN[type(node.op)]), node.left, node.right), node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.expr:
        self.generic_visit(node)
        return ast.copy_location(self._call("un", ast.Constant(_UN[type(node.op)]), node.operand), node)

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.expr:
        self.generic_visit(node)
        node.values = [self._call("val", v) for v in node.values]
        return node

    def _truth_test(self, node: ast.AST) -> ast.AST:
        self.generic_visit(node)
        node.test = self._call("truth", node.test)  # type: ignore[attr-defined]
        return node

    visit_Assert = visit_If = visit_While = visit_IfExp = _truth_test

    def visit_comprehension(self, node: ast.comprehension) -> ast.comprehension:
        self.generic_visit(node)
        node.ifs = [self._call("truth", c) for c in node.ifs]
        return node


def rewrite_test(code: str, guard: str, protected: set[str] = frozenset()) -> str:
    """``code`` with calls, comparisons, arithmetic and truth tests routed through the guard object named
    ``guard``, and builtins read from its pristine copy (unless the cell or a locked cell binds the name).
    A final ``pass`` stops a last expression from becoming nbgrader's "partial credit" output."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    names = {n for n in dir(builtins) if not n.startswith("__")} - FRAME_SENSITIVE - _all_bound(tree) - protected
    tree = ast.fix_missing_locations(_Rewrite(guard, names).visit(tree))
    return ast.unparse(tree) + "\npass\n"


class _Builtins(ast.NodeTransformer):
    """Only the builtin names of :class:`_Rewrite` (for locked cells, see :func:`rewrite_locked`)."""

    visit_Name = _Rewrite.visit_Name
    _g = _Rewrite._g

    def __init__(self, guard: str, builtin_names: set[str]) -> None:
        self.guard, self.builtins = guard, builtin_names


def rewrite_locked(code: str, guard: str) -> str:
    """A locked (instructor) cell with its builtins read from the guard's pristine copy: the helpers it
    defines (``close(a, b)`` using ``abs``) then ignore a student's ``def abs(x): ...`` in the notebook's
    namespace. Nothing else changes; a cell that is not plain Python (magics) is left as it is."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    names = {n for n in dir(builtins) if not n.startswith("__")} - FRAME_SENSITIVE - _all_bound(tree)
    return ast.unparse(ast.fix_missing_locations(_Builtins(guard, names).visit(tree)))
