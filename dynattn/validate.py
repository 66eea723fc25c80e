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
import warnings
from collections.abc import Iterable
from typing import Any

from . import vocab
from .errors import SpecError

__all__ = ["normalize", "check_field_names", "has_hidden", "channel_free", "init_units"]

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


#: Fields a parallel composite (one with ``merge``) sets for the gate it makes from its stages.
_GROUP_FIELDS = ("merge", "gate", "temperature", "fuse")


def _normalize_composite(spec: Any) -> None:
    parallel = spec.merge is not None
    for name in _leaf_fields(spec):
        if parallel and name in _GROUP_FIELDS:
            continue
        if getattr(spec, name) != _defaults(type(spec))[name]:
            hint = "set it on the stage it belongs to"
            if name in _GROUP_FIELDS:
                hint += ", or set merge='sum' or 'prod' to run the stages in parallel under one gate"
            raise _err(name, getattr(spec, name), "has no effect on a composite spec (one with stages)", hint=hint)
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
    if parallel:
        _normalize_group(spec)
        return
    if spec.init == "identity":
        _set(spec, "stages", tuple(s.with_init("identity") for s in spec.stages))
    units = init_units(spec)
    _set(spec, "init", "identity" if all(s.init == "identity" for s in units) else "default")


def _normalize_group(spec: Any) -> None:
    """A parallel composite: its leaf stages' gate maps combine by ``merge``, then its own gate and fuse."""
    _check_choice("merge", spec.merge, vocab.COMPOSITE_MERGES)
    gates = tuple(g for g in vocab.GATES if g != "softmax")
    gate = spec.gate if spec.gate is not None else "sigmoid"
    if gate not in gates:
        raise _err("gate", gate, "gates a parallel composite's combined map (softmax has no single axis there)",
                   gates)
    _set(spec, "gate", gate)
    _set(spec, "temperature", _check_real("temperature", spec.temperature))
    _check_choice("fuse", spec.fuse, vocab.FUSES)
    for i, stage in enumerate(spec.stages):
        if stage.stages:
            raise _err(f"stages[{i}]", stage, "a parallel composite (merge=...) combines leaf stages",
                       hint="chain composites in sequence instead")
        if stage.init != "default":
            raise _err(f"stages[{i}].init", stage.init, "in a parallel composite the composite's init applies",
                       ("default",), hint="set init on the composite")
        if stage.fuse != "mul":
            raise _err(f"stages[{i}].fuse", stage.fuse, "in a parallel composite the composite's fuse applies",
                       ("mul",), hint="set fuse on the composite")


def init_units(spec: Any) -> tuple[Any, ...]:
    """The specs that carry an ``init`` of their own: leaf stages, and parallel composites."""
    if not spec.stages or spec.merge is not None:
        return (spec,)
    return tuple(u for stage in spec.stages for u in init_units(stage))


def _check_name(spec: Any) -> None:
    if spec.name is not None and (not isinstance(spec.name, str) or not _IDENT.match(spec.name)):
        raise _err("name", spec.name, "must be a Python identifier (it names the built module's class)")
    if spec.reference is not None and not isinstance(spec.reference, str):
        raise _err("reference", spec.reference, "must be a string")


def _normalize_leaf(spec: Any) -> None:
    """Check a one-stage spec field by field, in the order each default depends on: target first."""
    target = _normalize_target(spec)
    pool = _normalize_pool(spec, target)
    excite = _normalize_merge_excite_gate(spec, target, pool)
    _normalize_hidden_layer(spec, target, excite)
    _normalize_norm(spec, excite)
    _normalize_other_numbers(spec)
    _normalize_kernel_size(spec, excite)
    _normalize_kernel_target(spec, target)
    _normalize_branches(spec, target, excite)
    _check_relevance(spec)


def _normalize_target(spec: Any) -> str:
    """The target: every default depends on it."""
    target = spec.target if spec.target is not None else "channel"
    _check_choice("target", target, vocab.TARGETS)
    _set(spec, "target", target)
    return target


def _normalize_pool(spec: Any, target: str) -> tuple[str, ...]:
    """The pooling ops: known, each once, and the ones the target can take."""
    pool = spec.pool if spec.pool is not None else vocab.DEFAULT_POOL[target]
    if len(pool) == 0:
        raise _err("pool", pool, "needs at least one pooling op", vocab.POOLS)
    for op in pool:
        _check_choice("pool", op, vocab.POOLS)
    if len(set(pool)) != len(pool):
        raise _err("pool", pool, "lists an op twice")
    if "none" in pool and (len(pool) > 1 or target not in ("element", "spatial")):
        raise _err(
            "pool", pool, "'none' (no pooling) stands alone and only with target='element' or 'spatial'",
            hint="element attention sees every position; a spatial conv bottleneck sees every channel",
        )
    if target == "element" and pool != ("none",):
        raise _err("pool", pool, "target='element' keeps every position", [("none",)])
    module_pools = [op for op in pool if op in vocab.MODULE_POOLS]
    if module_pools and target != "channel":
        raise _err("pool", pool, f"{module_pools[0]!r} pools a channel descriptor: target='channel' only")
    if target == "strip":
        allowed = tuple(op for op in vocab.POOLS if op not in (*vocab.MODULE_POOLS, "none"))
        if len(pool) != 1 or pool[0] not in allowed:
            raise _err("pool", pool, "target='strip' pools along W and along H with one op", allowed)
    _set(spec, "pool", pool)
    return pool


def _normalize_merge_excite_gate(spec: Any, target: str, pool: tuple[str, ...]) -> str:
    """How the pooled descriptors merge, what excites them and which gate follows; returns the excite."""
    merge = spec.merge if spec.merge is not None else vocab.DEFAULT_MERGE[target]
    _check_choice("merge", merge, vocab.MERGES)
    if merge not in vocab.MERGES_BY_TARGET[target]:
        raise _err("merge", merge, f"does not serve target={target!r}", vocab.MERGES_BY_TARGET[target])
    _set(spec, "merge", merge)

    excite = spec.excite if spec.excite is not None else vocab.DEFAULT_EXCITE[target]
    _check_choice("excite", excite, vocab.EXCITES)
    if excite not in vocab.EXCITES_BY_TARGET[target]:
        raise _err(
            "excite", excite, f"does not serve target={target!r}", vocab.EXCITES_BY_TARGET[target]
        )
    if target == "spatial" and pool == ("none",) and excite not in ("conv", "linear"):
        raise _err("excite", excite, "an unpooled spatial stage maps every channel to one map with a conv "
                   "bottleneck or a 1x1 layer", ("conv", "linear"))
    _set(spec, "excite", excite)

    gate = spec.gate if spec.gate is not None else vocab.DEFAULT_GATE[target]
    _check_choice("gate", gate, vocab.GATES)
    _set(spec, "gate", gate)

    if excite == "none" and merge == "concat" and len(pool) > 1:
        raise _err(
            "merge", merge, "concatenated descriptors need an excitation to map them back to one gate",
            ("sum", "mean"),
        )
    return excite


def _normalize_hidden_layer(spec: Any, target: str, excite: str) -> None:
    """The hidden layer's size, bias and activation."""
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
    act = spec.act
    if act is None:
        act = "relu" if has_hidden(spec) else "identity" if _strip_conv(spec) else None
    allowed = (*vocab.ACTS, *vocab.WEIGHTED_ACTS)
    if act is not None and (not isinstance(act, str) or act not in allowed):
        raise _err("act", act, "unknown activation", allowed)
    if act in vocab.WEIGHTED_ACTS and excite != "mlp":
        raise _err("act", act, f"has weights sized by the hidden width: excite='mlp' only (not {excite!r})",
                   tuple(vocab.ACTS))
    _set(spec, "act", act)


def _normalize_norm(spec: Any, excite: str) -> None:
    """The norm and its numbers, and SimAM's lambda (``energy_lambda``, once written ``bn_eps``)."""
    _check_choice("norm", spec.norm, vocab.NORMS)
    _check_norm(spec)
    _set(spec, "bn_momentum", _check_real("bn_momentum", spec.bn_momentum, positive=False, upper=1.0))
    if excite == "energy" and spec.bn_eps is not None:
        _move_energy_eps(spec)
    eps = spec.bn_eps
    if eps is None and spec.norm is not None:
        eps = 1e-5
    _set(spec, "bn_eps", None if eps is None else _check_real("bn_eps", eps))
    lam = spec.energy_lambda
    if lam is None and excite == "energy":
        lam = 1e-4
    _set(spec, "energy_lambda", None if lam is None else _check_real("energy_lambda", lam))


_warned_energy_eps: list[bool] = []


def _move_energy_eps(spec: Any) -> None:
    """``bn_eps`` on ``excite="energy"`` (no norm there) is SimAM's lambda as written before ``energy_lambda``
    existed: move it there, warning once."""
    if spec.energy_lambda is not None:
        raise _err("bn_eps", spec.bn_eps, "is a norm's eps, and excite='energy' has no norm",
                   hint="SimAM's lambda is energy_lambda: remove bn_eps")
    if not _warned_energy_eps:
        _warned_energy_eps.append(True)
        warnings.warn("AttnSpec(excite='energy', bn_eps=...) sets SimAM's lambda: write energy_lambda=... "
                      "(bn_eps is a norm's eps only; this spelling will be removed in a later release)",
                      DeprecationWarning, stacklevel=7)  # the caller of AttnSpec(...)
    _set(spec, "energy_lambda", spec.bn_eps)
    _set(spec, "bn_eps", None)


def _normalize_other_numbers(spec: Any) -> None:
    """ECA's adaptive kernel, dilation, padding, DCT frequencies, fuse, temperature, init, name and extent."""
    _set(spec, "gamma", _check_real("gamma", spec.gamma))
    _set(spec, "beta", _check_real("beta", spec.beta, positive=False))
    _check_int("kernel_min", spec.kernel_min, 1)
    if spec.kernel_min % 2 == 0:
        raise _err("kernel_min", spec.kernel_min, "must be odd (a 'same' padded kernel)")
    _check_int("dilation", spec.dilation, 1)
    _check_choice("padding_mode", spec.padding_mode, vocab.PADDING_MODES)
    _check_choice("frequencies", spec.frequencies, vocab.DCT_SELECTIONS)
    _check_choice("fuse", spec.fuse, vocab.FUSES)
    _set(spec, "temperature", _check_real("temperature", spec.temperature))
    _check_choice("init", spec.init, vocab.INITS)
    _check_name(spec)
    _check_extent(spec)


def _normalize_kernel_size(spec: Any, excite: str) -> None:
    """The kernel size of a conv excitation: odd, or ECA's 'adaptive' rule; unset elsewhere."""
    if excite in vocab.DEFAULT_KERNEL_SIZE:
        ks = spec.kernel_size if spec.kernel_size is not None else vocab.DEFAULT_KERNEL_SIZE[excite]
        if ks == "adaptive":
            if excite not in ("conv1d", "conv1d_mlp"):
                raise _err("kernel_size", ks, "'adaptive' is ECA's rule for excite='conv1d' or 'conv1d_mlp'",
                           "an odd int")
        else:
            if isinstance(ks, bool) or not isinstance(ks, int) or ks < 1:
                allowed = "an odd int or 'adaptive'" if excite.startswith("conv1d") else "an odd int"
                raise _err("kernel_size", ks, "must be a positive odd int", allowed)
            if ks % 2 == 0:
                raise _err(
                    "kernel_size", ks, "must be odd so that 'same' padding keeps the size",
                    hint=f"use {ks - 1} or {ks + 1}",
                )
        _set(spec, "kernel_size", ks)
    elif spec.kernel_size is not None:
        raise _err("kernel_size", spec.kernel_size, f"has no effect with excite={excite!r}",
                   hint="it sizes excite='conv', 'conv1d' or 'conv1d_mlp'")


def _normalize_kernel_target(spec: Any, target: str) -> None:
    """The experts and router heads of a kernel target."""
    _check_int("experts", spec.experts, 1)
    for head in spec.heads:
        _check_choice("heads", head, vocab.HEADS)
    if not spec.heads or len(set(spec.heads)) != len(spec.heads):
        raise _err("heads", spec.heads, "must list each head once, at least one", vocab.HEADS)
    if target == "kernel" and spec.experts > 1 and "kernel" not in spec.heads:
        raise _err("heads", spec.heads, "with experts > 1 the 'kernel' head must mix them",
                   hint="add 'kernel' or set experts=1")
    _check_choice("scale_gate", spec.scale_gate, vocab.SCALE_GATES)
    if spec.latent_dim is not None:
        _check_int("latent_dim", spec.latent_dim, 1)
    _check_int("pool_grid", spec.pool_grid, 1)
    if spec.pool_grid > 1 and spec.pool != ("avg",):
        raise _err("pool", spec.pool, f"a router pooled over a grid (pool_grid={spec.pool_grid}) averages its cells",
                   [("avg",)])
    if "cells" in spec.heads:
        _normalize_warehouse(spec)


def _normalize_warehouse(spec: Any) -> None:
    """KernelWarehouse's fields: the ``cells`` head alone, a budget the official temperature initialisation can
    assign (an int >= 1, or 1/k), cell ratios in (0, 1], and a blend temperature in (0, 1]."""
    if spec.heads != ("cells",) or spec.experts != 1:
        raise _err("heads", spec.heads, "the 'cells' head (KernelWarehouse) mixes the warehouse's cells alone, "
                   "with experts=1", [("cells",)], hint="use AttnSpec.kw(...)")
    budget = _check_real("budget", spec.budget)
    inverse = 1.0 / budget
    if not (budget >= 1 and budget == int(budget)) and not (budget < 1 and inverse == round(inverse)):
        raise _err("budget", spec.budget, "must be an int >= 1 (1x, 4x) or 1/k for an int k >= 2 (1/2x, 1/4x): "
                   "the official temperature initialisation gives each kernel cell int(budget) cells, or one cell "
                   "to one in 1/budget of them", (0.25, 0.5, 1, 2, 4))
    _set(spec, "budget", float(budget))
    for name in ("cell_in_ratio", "cell_out_ratio"):
        _set(spec, name, _check_real(name, getattr(spec, name), upper=1.0))
        if getattr(spec, name) == 0:
            raise _err(name, 0.0, "must be > 0")
    _check_choice("sharing", spec.sharing, vocab.WAREHOUSE_SHARING)
    if not 0 < spec.temperature <= 1:
        raise _err("temperature", spec.temperature, "is KernelWarehouse's initial blend toward each kernel cell's "
                   "own cell: a number in (0, 1] (the official schedule starts at 1)")
    if spec.pool_grid != 1 or spec.excite != "mlp":
        raise _err("excite" if spec.excite != "mlp" else "pool_grid",
                   spec.excite if spec.excite != "mlp" else spec.pool_grid,
                   "KernelWarehouse's attention is an MLP on globally pooled x", hint="use AttnSpec.kw(...)")


def _normalize_branches(spec: Any, target: str, excite: str) -> None:
    """The einops rotations a stage runs under: distinct, on a stage that can rotate, and keeping the channel
    axis where the weights are sized by it."""
    _set(spec, "branches", tuple(_parse_rotation(i, r) for i, r in enumerate(spec.branches)))
    if len(set(spec.branches)) != len(spec.branches):
        raise _err("branches", spec.branches, "lists a rotation twice")
    if spec.branches and target == "kernel":
        raise _err("branches", spec.branches, "rotations apply to feature targets", vocab.FEATURE_TARGETS)
    if spec.branches and not rotatable(spec):
        raise _err("branches", spec.branches, "rotations apply to stages pooled over whole axes by "
                   "parameter-free ops (not target='strip', an extent, 'attn' or 'dct' pooling, or an unpooled "
                   "spatial bottleneck)")
    for rotation in spec.branches:
        if rotation.split("->")[1].split()[1] != "c" and not channel_free(spec):
            raise _err(
                "branches", rotation,
                f"moves the channel axis, but excite={excite!r} on target={target!r} has weights sized "
                "by the channel count", hint="rotate a spatial stage, as Triplet does",
            )


def _strip_conv(spec: Any) -> bool:
    return spec.target == "strip" and spec.excite == "conv"


def _check_norm(spec: Any) -> None:
    """Which norm each excitation can take: bn after mlp / conv / channelwise layers, ln after an MLP's first
    layer (global context), gn (one group) after a strip conv."""
    norm, excite, target = spec.norm, spec.excite, spec.target
    allowed: tuple[Any, ...] = (None,)
    if excite in ("mlp", "conv", "channelwise"):
        allowed += ("bn",)
    if excite == "mlp" and target in ("channel", "kernel"):
        allowed += ("ln",)
    if _strip_conv(spec):
        allowed += ("gn",)
    if norm is not None and norm not in allowed:
        if len(allowed) == 1:
            return  # no norm fits this excitation: _check_relevance says so
        raise _err("norm", norm, f"does not follow excite={excite!r} on target={target!r}", allowed)


def _check_extent(spec: Any) -> None:
    extent = spec.extent
    if isinstance(extent, bool) or not isinstance(extent, int) or extent < 0 or extent == 1:
        raise _err("extent", extent, "must be 0 (global pooling) or an int >= 2 (pool windows of 2e - 1, "
                   "stride e)", hint="gather-excite uses 2, 4 or 8")
    if extent == 0 or spec.target != "channel":
        return
    bad = [op for op in spec.pool if op not in vocab.EXTENT_POOLS]
    if bad:
        raise _err("pool", spec.pool, f"{bad[0]!r} cannot gather over a local extent", vocab.EXTENT_POOLS)
    if spec.excite not in ("mlp", "linear", "none"):
        raise _err("excite", spec.excite, "a local extent excites each window's channels", ("mlp", "linear", "none"))


def has_hidden(spec: Any) -> bool:
    """True when the excitation has a hidden layer sized by reduction / width (and an ``act``)."""
    if spec.excite in ("mlp", "pixel_mlp", "conv1d_mlp"):
        return True
    return spec.excite == "conv" and (spec.target == "element" or (spec.target == "spatial"
                                                                    and spec.pool == ("none",)))


def channel_free(spec: Any) -> bool:
    """True when the stage's parameters do not depend on the channel count it sees."""
    if spec.target == "spatial":
        return spec.pool != ("none",)
    if spec.excite in ("none", "energy"):
        return True
    return spec.excite == "conv1d" and spec.kernel_size != "adaptive"


def rotatable(spec: Any) -> bool:
    """True when the stage can run under einops rotations (``branches``)."""
    if spec.target == "strip" or spec.extent or any(op in vocab.MODULE_POOLS for op in spec.pool):
        return False
    return not (spec.target == "spatial" and spec.pool == ("none",))


def _check_relevance(spec: Any) -> None:
    """A field set away from its default where it has no effect is a mistake: say so."""
    rules: list[tuple[tuple[str, ...], bool, str]] = [
        (("reduction", "width", "divisor", "rounding", "min_width"), has_hidden(spec),
         "it sizes a hidden layer: excite='mlp', 'pixel_mlp', 'conv1d_mlp', or 'conv' on target='element' or "
         "an unpooled 'spatial'"),
        (("act",), has_hidden(spec) or _strip_conv(spec),
         "an excitation with a hidden layer, or a strip conv, has an activation"),
        (("bias",), spec.excite not in ("none", "energy"), "excite='none' and 'energy' have no layers"),
        (("norm",), spec.excite in ("mlp", "conv", "channelwise"),
         "norm applies to excite='mlp', 'conv' or 'channelwise'"),
        (("bn_momentum",), spec.norm == "bn", "set norm='bn' first"),
        (("bn_eps",), spec.norm is not None,
         "it is a norm's eps: set norm first; SimAM's lambda is energy_lambda"),
        (("energy_lambda",), spec.excite == "energy", "it is SimAM's lambda: excite='energy' only"),
        (("gamma", "beta", "kernel_min"), spec.kernel_size == "adaptive",
         "they shape ECA's adaptive kernel: excite='conv1d' or 'conv1d_mlp', kernel_size='adaptive'"),
        (("dilation",), spec.excite == "conv" and spec.target in ("spatial", "element"),
         "it dilates the k x k convs of excite='conv' on target='spatial' or 'element'"),
        (("padding_mode",), spec.excite == "conv1d", "it pads excite='conv1d'"),
        (("extent",), spec.target == "channel", "it sets the pooling window of target='channel'"),
        (("frequencies",), "dct" in spec.pool, "it selects the DCT frequencies of pool='dct'"),
        (("fuse",), spec.target != "kernel", "a kernel target mixes expert kernels instead"),
        (("experts", "heads", "pool_grid"), spec.target == "kernel", "they configure target='kernel'"),
        (("scale_gate",), any(h in spec.heads for h in ("in", "out", "spatial")),
         "it gates the scaling heads 'in', 'out' and 'spatial' of target='kernel'"),
        (("latent_dim",), "latent" in spec.heads, "it sizes the latent space of the 'latent' head (DCD)"),
        (("budget", "cell_in_ratio", "cell_out_ratio", "sharing"), "cells" in spec.heads,
         "they size the warehouse of the 'cells' head (KernelWarehouse)"),
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
