"""Validation of :class:`~dynattn.spec.AttnSpec`: every field checked, defaults of the target
filled in, and a field set where it has no effect reported, each as a ``SpecError`` that names
the field, the value and what is allowed.

Run once by ``AttnSpec.__post_init__`` on the just-made (frozen) spec; it writes the normalised
values with ``object.__setattr__``. It knows the spec only by its fields (no import of the class),
so the spec sits above it and nothing here reaches further up.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Iterable
from typing import Any

from . import vocab
from .errors import SpecError

__all__ = ["normalize", "check_field_names", "has_hidden", "channel_free"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@functools.cache
def _defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def _leaf_fields(spec: Any) -> tuple[str, ...]:
    return tuple(n for n in _defaults(type(spec)) if n not in ("stages", "name", "reference", "init"))


def check_field_names(cls: type, names: Iterable[str], where: str) -> None:
    """Raise ``SpecError`` naming the closest field when ``names`` holds one ``cls`` does not have."""
    fields = tuple(_defaults(cls))
    for name in names:
        if name not in fields:
            raise SpecError(where, name, "unknown field", fields)


def normalize(spec: Any) -> None:
    """Check every field of a just-made spec and fill the target's defaults (in place, once)."""
    _coerce_sequences(spec)
    if spec.stages:
        _normalize_composite(spec)
    else:
        _normalize_leaf(spec)


def _set(spec: Any, name: str, value: Any) -> None:
    object.__setattr__(spec, name, value)


def _err(name: str, value: Any, problem: str, allowed: Any = None, hint: str | None = None) -> SpecError:
    return SpecError(f"AttnSpec.{name}", value, problem, allowed, hint=hint)


def _coerce_sequences(spec: Any) -> None:
    for name in ("pool", "heads", "branches", "stages"):
        value = getattr(spec, name)
        if value is None:
            continue
        if isinstance(value, str) and name != "stages":
            value = (value,)
        elif isinstance(value, type(spec)) and name == "stages":
            value = (value,)
        elif isinstance(value, (list, tuple)):
            value = tuple(value)
        else:
            raise _err(name, value, "must be a list or tuple", hint=f"e.g. {name}={_FIELD_EXAMPLES[name]}")
        _set(spec, name, value)


_FIELD_EXAMPLES = {
    "pool": "['avg', 'max']",
    "heads": "['kernel', 'in', 'out', 'spatial']",
    "branches": "['b c h w -> b h c w']",
    "stages": "[AttnSpec.se(), AttnSpec(target='spatial')]",
}


def _check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if not isinstance(value, (str, type(None))) or value not in allowed:
        raise _err(name, value, "unknown value", allowed)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(name, value, f"must be an int >= {minimum}", hint=f"got {type(value).__name__}")
    if value < minimum:
        raise _err(name, value, f"must be >= {minimum}")


def _check_real(name: str, value: Any, *, positive: bool = True, upper: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _err(name, value, "must be a number", hint=f"got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise _err(name, value, "must be finite")
    if positive and value <= 0:
        raise _err(name, value, "must be > 0")
    if upper is not None and not (0 <= value <= upper):
        raise _err(name, value, f"must be in [0, {upper}]")
    return value


def _normalize_composite(spec: Any) -> None:
    for name in _leaf_fields(spec):
        if getattr(spec, name) != _defaults(type(spec))[name]:
            raise _err(
                name, getattr(spec, name), "has no effect on a composite spec (one with stages)",
                hint="set it on the stage it belongs to",
            )
    for i, stage in enumerate(spec.stages):
        if not isinstance(stage, type(spec)):
            raise _err(f"stages[{i}]", stage, "must be an AttnSpec", hint="e.g. AttnSpec.se()")
        if stage.kind != "feature":
            raise _err(
                f"stages[{i}].target", stage.target,
                "a composite runs feature-map stages in sequence; a kernel target builds a "
                "DynamicConv2d on its own", vocab.FEATURE_TARGETS,
            )
    _check_choice("init", spec.init, vocab.INITS)
    _check_name(spec)
    if spec.init == "identity":
        _set(spec, "stages", tuple(s.with_init("identity") for s in spec.stages))
    leaves = spec.leaves()
    _set(spec, "init", "identity" if all(s.init == "identity" for s in leaves) else "default")


def _check_name(spec: Any) -> None:
    if spec.name is not None and (not isinstance(spec.name, str) or not _IDENT.match(spec.name)):
        raise _err("name", spec.name, "must be a Python identifier (it names the built module's class)")
    if spec.reference is not None and not isinstance(spec.reference, str):
        raise _err("reference", spec.reference, "must be a string")


def _normalize_leaf(spec: Any) -> None:
    # ---- target first: every default depends on it
    target = spec.target if spec.target is not None else "channel"
    _check_choice("target", target, vocab.TARGETS)
    _set(spec, "target", target)

    # ---- pool
    pool = spec.pool if spec.pool is not None else vocab.DEFAULT_POOL[target]
    if len(pool) == 0:
        raise _err("pool", pool, "needs at least one pooling op", vocab.POOLS)
    for op in pool:
        _check_choice("pool", op, vocab.POOLS)
    if len(set(pool)) != len(pool):
        raise _err("pool", pool, "lists an op twice")
    if "none" in pool and (len(pool) > 1 or target != "element"):
        raise _err(
            "pool", pool, "'none' (no pooling) stands alone and only with target='element'",
            hint="element attention sees every position; other targets pool",
        )
    if target == "element" and pool != ("none",):
        raise _err("pool", pool, "target='element' keeps every position", [("none",)])
    _set(spec, "pool", pool)

    # ---- merge, excite, gate
    merge = spec.merge if spec.merge is not None else vocab.DEFAULT_MERGE[target]
    _check_choice("merge", merge, vocab.MERGES)
    _set(spec, "merge", merge)

    excite = spec.excite if spec.excite is not None else vocab.DEFAULT_EXCITE[target]
    _check_choice("excite", excite, vocab.EXCITES)
    if excite not in vocab.EXCITES_BY_TARGET[target]:
        raise _err(
            "excite", excite, f"does not serve target={target!r}", vocab.EXCITES_BY_TARGET[target]
        )
    _set(spec, "excite", excite)

    gate = spec.gate if spec.gate is not None else vocab.DEFAULT_GATE[target]
    _check_choice("gate", gate, vocab.GATES)
    _set(spec, "gate", gate)

    if excite == "none" and merge == "concat" and len(pool) > 1:
        raise _err(
            "merge", merge, "concatenated descriptors need an excitation to map them back to one gate",
            ("sum", "mean"),
        )

    # ---- numbers
    _set(spec, "reduction", _check_real("reduction", spec.reduction))
    if spec.width is not None:
        _check_int("width", spec.width, 1)
    _check_int("divisor", spec.divisor, 1)
    _check_choice("rounding", spec.rounding, vocab.ROUNDINGS)
    if spec.min_width is None and target == "kernel" and excite == "mlp":
        _set(spec, "min_width", 4)  # a router keeps a few hidden units even on an RGB stem conv
    if spec.min_width is not None:
        _check_int("min_width", spec.min_width, 1)
    if not isinstance(spec.bias, bool):
        raise _err("bias", spec.bias, "must be a bool", (True, False))
    if not isinstance(spec.act, str) or spec.act not in vocab.ACTS:
        raise _err("act", spec.act, "unknown activation", tuple(vocab.ACTS))
    _check_choice("norm", spec.norm, vocab.NORMS)
    _set(spec, "bn_momentum", _check_real("bn_momentum", spec.bn_momentum, positive=False, upper=1.0))
    _set(spec, "bn_eps", _check_real("bn_eps", spec.bn_eps))
    _set(spec, "gamma", _check_real("gamma", spec.gamma))
    _set(spec, "beta", _check_real("beta", spec.beta, positive=False))
    _check_int("kernel_min", spec.kernel_min, 1)
    if spec.kernel_min % 2 == 0:
        raise _err("kernel_min", spec.kernel_min, "must be odd (a 'same' padded kernel)")
    _set(spec, "temperature", _check_real("temperature", spec.temperature))
    _check_choice("init", spec.init, vocab.INITS)
    _check_name(spec)

    # ---- kernel size
    if excite in vocab.DEFAULT_KERNEL_SIZE:
        ks = spec.kernel_size if spec.kernel_size is not None else vocab.DEFAULT_KERNEL_SIZE[excite]
        if ks == "adaptive":
            if excite != "conv1d":
                raise _err("kernel_size", ks, "'adaptive' is ECA's rule for excite='conv1d'", "an odd int")
        else:
            if isinstance(ks, bool) or not isinstance(ks, int) or ks < 1:
                allowed = "an odd int or 'adaptive'" if excite == "conv1d" else "an odd int"
                raise _err("kernel_size", ks, "must be a positive odd int", allowed)
            if ks % 2 == 0:
                raise _err(
                    "kernel_size", ks, "must be odd so that 'same' padding keeps the size",
                    hint=f"use {ks - 1} or {ks + 1}",
                )
        _set(spec, "kernel_size", ks)
    elif spec.kernel_size is not None:
        raise _err("kernel_size", spec.kernel_size, f"has no effect with excite={excite!r}",
                   hint="it sizes excite='conv' or 'conv1d'")

    # ---- kernel target
    _check_int("experts", spec.experts, 1)
    for head in spec.heads:
        _check_choice("heads", head, vocab.HEADS)
    if not spec.heads or len(set(spec.heads)) != len(spec.heads):
        raise _err("heads", spec.heads, "must list each head once, at least one", vocab.HEADS)
    if target == "kernel" and spec.experts > 1 and "kernel" not in spec.heads:
        raise _err("heads", spec.heads, "with experts > 1 the 'kernel' head must mix them",
                   hint="add 'kernel' or set experts=1")

    # ---- branches (rotations)
    _set(spec, "branches", tuple(_parse_rotation(i, r) for i, r in enumerate(spec.branches)))
    if len(set(spec.branches)) != len(spec.branches):
        raise _err("branches", spec.branches, "lists a rotation twice")
    if spec.branches and target == "kernel":
        raise _err("branches", spec.branches, "rotations apply to feature targets", vocab.FEATURE_TARGETS)
    for rotation in spec.branches:
        if rotation.split("->")[1].split()[1] != "c" and not channel_free(spec):
            raise _err(
                "branches", rotation,
                f"moves the channel axis, but excite={excite!r} on target={target!r} has weights sized "
                "by the channel count", hint="rotate a spatial stage, as Triplet does",
            )

    _check_relevance(spec)


def has_hidden(spec: Any) -> bool:
    return spec.excite in ("mlp", "pixel_mlp") or (spec.excite == "conv" and spec.target == "element")


def channel_free(spec: Any) -> bool:
    """True when the stage's parameters do not depend on the channel count it sees."""
    if spec.target == "spatial":
        return True
    if spec.excite == "none":
        return True
    return spec.excite == "conv1d" and spec.kernel_size != "adaptive"


def _check_relevance(spec: Any) -> None:
    """A field set away from its default where it has no effect is a mistake: say so."""
    rules: list[tuple[tuple[str, ...], bool, str]] = [
        (("reduction", "width", "divisor", "rounding", "act", "min_width"), has_hidden(spec),
         "it sizes a hidden layer: excite='mlp', 'pixel_mlp', or 'conv' on target='element'"),
        (("bias",), spec.excite != "none", "excite='none' has no layers"),
        (("norm",), spec.excite in ("mlp", "conv"), "norm applies to excite='mlp' or 'conv'"),
        (("bn_momentum", "bn_eps"), spec.norm == "bn", "set norm='bn' first"),
        (("gamma", "beta", "kernel_min"), spec.kernel_size == "adaptive",
         "they shape ECA's adaptive kernel: excite='conv1d', kernel_size='adaptive'"),
        (("experts", "heads"), spec.target == "kernel", "they configure target='kernel'"),
    ]
    for names, relevant, why in rules:
        if relevant:
            continue
        for name in names:
            value = getattr(spec, name)
            if value != _defaults(type(spec))[name]:
                raise _err(name, value, f"has no effect here ({why})",
                           hint=f"remove it or change excite/target (excite={spec.excite!r}, "
                           f"target={spec.target!r})")


_ROT = re.compile(r"^\s*(\w+)\s+(\w+)\s+(\w+)\s+(\w+)\s*->\s*(\w+)\s+(\w+)\s+(\w+)\s+(\w+)\s*$")


def _parse_rotation(index: int, pattern: Any) -> str:
    """Validate an einops axis rotation and rename its axes to ``b c h w``."""
    hint = "a permutation of the four NCHW axes keeping the batch first, e.g. 'b c h w -> b h c w'"
    if not isinstance(pattern, str):
        raise _err(f"branches[{index}]", pattern, "must be an einops pattern string", hint=hint)
    m = _ROT.match(pattern)
    if not m:
        raise _err(f"branches[{index}]", pattern, "is not a rotation of four axes", hint=hint)
    left, right = m.groups()[:4], m.groups()[4:]
    if len(set(left)) != 4 or sorted(left) != sorted(right):
        raise _err(f"branches[{index}]", pattern, "must use the same four distinct axes on both sides",
                   hint=hint)
    if right[0] != left[0]:
        raise _err(f"branches[{index}]", pattern, "must keep the batch axis first", hint=hint)
    rename = dict(zip(left, vocab.AXES))
    return "b c h w -> " + " ".join(rename[a] for a in right)
