"""Specs written as text (the CLI's ``--spec``), parsed without evaluating any code.

Accepted forms::

    cbam                                         a preset name
    cbam(reduction=8, flavor='timm')             a preset with arguments
    AttnSpec(pool=['avg', 'max'], target='spatial')
    AttnSpec.cbam(init='identity')
    AttnSpec.chain(AttnSpec.eca(), AttnSpec(target='spatial'), name='ECASpatial')
    AttnSpec.parallel(AttnSpec(gate='identity'), AttnSpec(target='spatial', gate='identity'), merge='prod')

Arguments must be literals (numbers, strings, lists, tuples, None, booleans) or nested specs.
"""

from __future__ import annotations

import ast
from typing import Any

from .errors import SpecError
from .presets import PRESETS, get_spec
from .spec import AttnSpec

__all__ = ["parse_spec"]

_FORMS = "a preset name ('cbam'), a preset call ('cbam(reduction=8)') or AttnSpec(...)"


def _fail(text: str, problem: str) -> SpecError:
    return SpecError("spec", text, problem, hint=f"write {_FORMS}")


def _value(node: ast.AST, text: str) -> Any:
    if isinstance(node, ast.Call):
        return _call(node, text)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_value(e, text) for e in node.elts]
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise _fail(text, f"{ast.unparse(node)!r} is not a literal or a spec") from None


def _call(node: ast.Call, text: str) -> AttnSpec:
    args = [_value(a, text) for a in node.args]
    kwargs = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise _fail(text, "**kwargs are not accepted")
        kwargs[kw.arg] = _value(kw.value, text)
    func = node.func
    if isinstance(func, ast.Name) and func.id == "AttnSpec":
        if args:
            raise _fail(text, "AttnSpec takes keyword arguments only")
        return _construct(lambda: AttnSpec(**kwargs), text)
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "AttnSpec":
        name = func.attr
        if name in ("chain", "parallel"):
            return _construct(lambda: getattr(AttnSpec, name)(*args, **kwargs), text)
    elif isinstance(func, ast.Name):
        name = func.id
    else:
        raise _fail(text, f"{ast.unparse(func)!r} is not AttnSpec or a preset")
    if name not in PRESETS:
        raise SpecError("preset", name, "unknown preset name", tuple(PRESETS))
    return _construct(lambda: PRESETS[name](*args, **kwargs), text)


def _construct(make, text: str) -> AttnSpec:
    try:
        return make()
    except TypeError as exc:
        raise _fail(text, f"bad arguments ({exc})") from None


def parse_spec(text: str) -> AttnSpec:
    """The spec ``text`` describes (see the module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise _fail(str(text), "is empty")
    text = text.strip()
    if text.isidentifier():
        return get_spec(text)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise _fail(text, f"is not valid syntax ({exc.msg})") from None
    if not isinstance(tree.body, ast.Call):
        raise _fail(text, "is not a call")
    return _call(tree.body, text)
