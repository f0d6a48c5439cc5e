"""Grading the student's own work: library functions that an answer must not call while its test runs.

A question that asks students to write something the library also has (crossover, Spearman's rho, a
Pareto front ...) must not score when the answer just calls the library. Test cells wrap the call of the
student's function in :func:`own_work`::

    with own_work("Q6a", "crossover", space.SearchSpace.crossover, search.crossover):
        child = crossover(a, b, rng)

While the block runs, every listed function raises :class:`DelegationError` ("Q6a asks you to write
crossover yourself; calling nas_lab.space.SearchSpace.crossover does not count") instead of running.
The function's code object is swapped, not the module attribute, so an alias the student took earlier
(``from nas_lab.search import crossover as my_crossover``, a ``functools.partial``, a bound method) is
caught too. Everything else in the library, including tools a question hands out, keeps working. Outside
the block nothing changes; the original code is always put back, even when the block raises.

Lab authors: docs/grading.md, section 11, gives the conventions (``nas_lab.own_work`` / ``nas_lab.delegate``
cell metadata, reference versions of earlier answers with :func:`references`, rubrics) that the tests check.

What it does not stop: a student who copies the library's source into the notebook (that is copying, a
matter for the course's honour code; the grader's feedback lists the code that ran).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class DelegationError(RuntimeError):
    """An answer called the library's version of what the question asks the student to write."""


def _function(obj: Any) -> types.FunctionType:
    """The plain Python function behind ``obj`` (a function, a method, a static/class method)."""
    func = getattr(obj, "__func__", obj)
    if not isinstance(func, types.FunctionType):
        raise TypeError(f"own_work can only guard Python functions, got {obj!r}")
    if func.__code__.co_freevars:
        raise TypeError(f"own_work cannot guard the closure {func.__qualname__}: guard its enclosing function")
    return func


def _chain(obj: Any) -> list[types.FunctionType]:
    """``obj``'s function and every function it wraps (``functools.wraps`` sets ``__wrapped__``).

    A decorator such as ``torch.inference_mode`` puts a wrapper in front of the library function; the
    wrapper's own code may never run the original's, so both are guarded.
    """
    chain, seen = [], set()
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        inner = getattr(obj, "__func__", obj)
        if isinstance(inner, types.FunctionType) and not inner.__code__.co_freevars:
            chain.append(inner)
        obj = getattr(inner, "__wrapped__", None)
    if not chain:
        _function(inner)                          # raises the TypeError that says why
    return chain


def _raiser(message: str) -> types.CodeType:
    """A code object that raises ``DelegationError(message)`` whatever it is called with.

    It runs with the guarded function's globals, so it reaches the exception class through ``__import__``.
    """
    source = ("def _delegated(*args, **kwargs):\n"
              f"    raise __import__('nas_lab.own_work', fromlist=['_']).DelegationError({message!r})\n")
    namespace: dict[str, Any] = {}
    exec(compile(source, "<own_work>", "exec"), namespace)
    return namespace["_delegated"].__code__


def qualified_name(func: Callable) -> str:
    func = getattr(func, "__func__", func)
    return f"{func.__module__}.{func.__qualname__}"


@contextmanager
def own_work(question: str, task: str, *library: Callable) -> Iterator[None]:
    """Make each function of ``library`` raise :class:`DelegationError` while the block runs.

    ``question`` and ``task`` make the message: "{question} asks you to write {task} yourself; calling
    {library function} does not count".
    """
    funcs = list(dict.fromkeys(inner for f in library for inner in _chain(f)))  # once each, in order
    originals = [f.__code__ for f in funcs]
    try:
        for func in funcs:
            message = (f"{question} asks you to write {task} yourself; calling {qualified_name(func)} "
                       "does not count")
            func.__code__ = _raiser(message)
        yield
    finally:
        for func, code in zip(funcs, originals):
            func.__code__ = code


@contextmanager
def references(namespace: dict[str, Any] | None = None, **reference: Callable) -> Iterator[None]:
    """Run the block with names of the notebook's namespace bound to reference versions.

    A hidden test of question N that calls the student's answer to N, which calls the student's answers to
    earlier questions, uses it so that an earlier slip costs only the earlier question::

        with references(conv2d_macs=_ref.conv2d_macs):
            got = vgg_macs(cfg)            # the student's vgg_macs, the reference conv2d_macs

    ``namespace`` defaults to the running IPython kernel's user namespace (the notebook's globals). Leave it
    out in test cells: under ``nas-lab grade`` every argument of a call is checked, and passing ``globals()``
    would make that check walk everything the student defined. The previous bindings (or their absence) are
    put back afterwards, even when the block raises.
    """
    if namespace is None:
        namespace = _notebook_namespace()
    missing = object()
    saved = {name: namespace.get(name, missing) for name in reference}
    try:
        namespace.update(reference)
        yield
    finally:
        for name, value in saved.items():
            if value is missing:
                namespace.pop(name, None)
            else:
                namespace[name] = value


def _notebook_namespace() -> dict[str, Any]:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with Jupyter
        get_ipython = None
    shell = get_ipython() if get_ipython is not None else None
    if shell is None:
        raise RuntimeError("references() without a namespace needs a running notebook kernel; pass globals()")
    return shell.user_ns
