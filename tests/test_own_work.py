"""own_work: library functions raise while a student's answer runs, aliases included; all else untouched."""

from __future__ import annotations

import functools
import random

import numpy as np
import pytest

from nas_lab import search
from nas_lab.own_work import DelegationError, own_work
from nas_lab.space import SearchSpace

SPACE = SearchSpace()
from nas_lab.space import SearchSpace as _Alias  # noqa: E402  (an alias taken before the block, as a student might)

alias_crossover = _Alias.crossover
partial_crossover = functools.partial(SPACE.crossover, SPACE.largest(), SPACE.smallest())


def honest_crossover(a, b, rng):
    return a if rng.random() < 0.5 else b


def delegating_crossover(a, b, rng):
    return SPACE.crossover(a, b, rng)


@pytest.mark.parametrize("answer", [delegating_crossover, lambda a, b, rng: alias_crossover(SPACE, a, b, rng),
                                    lambda a, b, rng: partial_crossover(rng)])
def test_delegation_raises_with_the_question_in_the_message(answer) -> None:
    a, b = SPACE.largest(), SPACE.smallest()
    with own_work("Q6a", "crossover", SearchSpace.crossover):
        with pytest.raises(DelegationError, match=r"Q6a asks you to write crossover yourself; calling "
                                                  r"nas_lab\.space\.SearchSpace\.crossover does not count"):
            answer(a, b, random.Random(0))


def test_honest_answer_and_other_library_functions_keep_working() -> None:
    a, b = SPACE.largest(), SPACE.smallest()
    with own_work("Q6a", "crossover", SearchSpace.crossover, search.crossover):
        assert honest_crossover(a, b, random.Random(0)) in (a, b)
        assert SPACE.mutate(a, random.Random(0)) is not None      # not listed: untouched
        assert len(search.select_parents(np.array([1.0, 3.0, 2.0]), 2)) == 2


def test_original_code_is_back_after_the_block_even_on_error() -> None:
    a, b = SPACE.largest(), SPACE.smallest()
    code = SearchSpace.crossover.__code__
    with pytest.raises(ZeroDivisionError):
        with own_work("Q6a", "crossover", SearchSpace.crossover):
            raise ZeroDivisionError
    assert SearchSpace.crossover.__code__ is code
    expected = SPACE.crossover(a, b, random.Random(3))
    assert delegating_crossover(a, b, random.Random(3)) == expected


def test_refuses_what_it_cannot_guard() -> None:
    def outer():
        x = 1

        def inner():
            return x
        return inner

    with pytest.raises(TypeError, match="closure"):
        with own_work("Q", "it", outer()):
            pass
    with pytest.raises(TypeError, match="Python functions"):
        with own_work("Q", "it", len):
            pass


def test_a_decorated_library_function_is_guarded_through_its_wrapper() -> None:
    from nas_lab.evaluate import top1_accuracy  # torch.inference_mode wraps it: a closure around __wrapped__

    assert top1_accuracy.__code__.co_freevars and hasattr(top1_accuracy, "__wrapped__")
    inner = top1_accuracy.__wrapped__
    with own_work("Q1a", "evaluate_subnet", top1_accuracy):
        for func in (top1_accuracy, inner):
            with pytest.raises(DelegationError, match="Q1a asks you to write evaluate_subnet"):
                func(None, None, None)
    assert inner.__code__.co_name == "top1_accuracy"


def test_references_swap_names_for_the_block_only() -> None:
    from nas_lab.own_work import references

    ns: dict = {"helper": lambda: "student's"}
    exec("def answer():\n    return helper()\n", ns)
    with references(ns, helper=lambda: "reference"):
        assert ns["answer"]() == "reference"
    assert ns["answer"]() == "student's"
    with pytest.raises(KeyError):
        with references(ns, extra=len):
            assert ns["extra"] is len
            raise KeyError("inside")
    assert "extra" not in ns


def test_references_default_to_the_notebook_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython

    from nas_lab.own_work import references

    ns: dict = {"helper": lambda: "student's"}
    exec("def answer():\n    return helper()\n", ns)
    shell = type("Shell", (), {"user_ns": ns})()
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    with references(helper=lambda: "reference"):
        assert ns["answer"]() == "reference"
    assert ns["answer"]() == "student's"
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    with pytest.raises(RuntimeError, match="running notebook kernel"):
        with references(helper=len):
            pass
