"""Hypothesis strategies for property tests of dynattn and of code built on it.

    from hypothesis import given
    from dynattn.testing import specs

    @given(specs(targets=("channel", "spatial")))
    def test_shape(spec): ...

Every spec drawn is valid and builds at any channel count ``>= min_channels``. Requires
``hypothesis`` (the ``test`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("dynattn.testing needs hypothesis: pip install 'dynattn[test]'") from exc

from types import SimpleNamespace

from . import vocab
from .spec import AttnSpec
from .validate import channel_free, has_hidden, rotatable  # the same rules validation uses

__all__ = ["specs", "leaf_specs", "rotations"]

_POOLS = ("avg", "max", "lse", "lp", "std", "std_unbiased", "std_unbiased_eps")
_CHANNEL_POOLS = (*_POOLS, "attn", "dct")
_REDUCTIONS = (0.5, 1, 1.5, 2, 3, 4, 8, 16)
_FREQUENCIES = ("top1", "top2", "top16", "top32", "low4", "bot8")


def rotations(keep_channel: bool = False) -> st.SearchStrategy[str]:
    """einops axis rotations of NCHW that keep the batch first (optionally the channel axis too)."""
    axes = ("h", "w") if keep_channel else ("c", "h", "w")
    perms = st.permutations(axes)

    def to_pattern(p: Sequence[str]) -> str:
        rest = ("c", *p) if keep_channel else tuple(p)
        return "b c h w -> b " + " ".join(rest)

    return perms.map(to_pattern)


_ACTS = ("relu", "silu", "gelu", "hard_swish", "tanh")


@st.composite
def _hidden(draw: st.DrawFn, min_channels: int, acts: Sequence[str]) -> dict:
    act = draw(st.sampled_from(tuple(acts)))
    if draw(st.booleans()) and draw(st.integers(0, 4)) == 0:
        return {"width": draw(st.integers(1, 24)), "act": act}
    reduction = draw(st.sampled_from(_REDUCTIONS))
    divisor = draw(st.sampled_from((1, 1, 2, 4, 8)))
    rounding = draw(st.sampled_from(vocab.ROUNDINGS))
    if rounding == "floor" and int(min_channels / reduction) // divisor * divisor < 1:
        rounding = "nearest"  # keep the spec buildable at every channel count >= min_channels
    return {"reduction": reduction, "divisor": divisor, "rounding": rounding, "act": act}


@st.composite
def _norm(draw: st.DrawFn, norms: Sequence[str]) -> dict:
    norm = draw(st.sampled_from((None, *norms)))
    if norm is None:
        return {}
    out = {"norm": norm, "bn_eps": draw(st.sampled_from((1e-5, 1e-3)))}
    if norm == "bn":
        out["bn_momentum"] = draw(st.sampled_from((0.1, 0.01)))
    return out


def _pools(draw: st.DrawFn, target: str) -> tuple[str, ...]:
    if target == "element":
        return ("none",)
    if target == "strip":
        return (draw(st.sampled_from(_POOLS)),)
    if target == "spatial" and draw(st.integers(0, 4)) == 0:
        return ("none",)  # every channel through a conv bottleneck (BAM's spatial branch)
    ops = _CHANNEL_POOLS if target == "channel" else _POOLS
    return tuple(draw(st.lists(st.sampled_from(ops), min_size=1, max_size=3, unique=True)))


@st.composite
def leaf_specs(
    draw: st.DrawFn,
    targets: Sequence[str] = vocab.TARGETS,
    *,
    inits: Sequence[str] = vocab.INITS,
    branches: bool = True,
    min_channels: int = 1,
    gates: Sequence[str] = vocab.GATES,
    acts: Sequence[str] = _ACTS,
    fuses: Sequence[str] = vocab.FUSES,
) -> AttnSpec:
    """One-stage specs over ``targets``; ``gates``, ``acts``, ``inits`` and ``fuses`` narrow the gates, the
    hidden activations, the initialisations and the fusions drawn (e.g. smooth ones only)."""
    target = draw(st.sampled_from(tuple(targets)))
    kw = _pool_and_excite(draw, target)
    _excite_layers(draw, kw, min_channels, acts)
    _kernel_sizes(draw, kw)
    _gate(draw, kw, gates, inits, fuses)
    spec = AttnSpec(**kw)
    if branches and target != "kernel" and rotatable(spec) and draw(st.integers(0, 3)) == 0:
        rot = rotations(keep_channel=not channel_free(spec))
        chosen = draw(st.lists(rot, min_size=1, max_size=3, unique=True))
        spec = spec.replace(branches=tuple(chosen))
    return spec


def _pool_and_excite(draw: st.DrawFn, target: str) -> dict:
    """The target's pooling ops, an excitation that serves them, their merge and (gather-excite) an extent."""
    kw: dict = {"target": target, "pool": _pools(draw, target)}
    excites = vocab.EXCITES_BY_TARGET[target]
    if target == "spatial" and kw["pool"] == ("none",):
        excites = ("conv",)
    kw["excite"] = excite = draw(st.sampled_from(excites))
    multi = len(kw["pool"]) > 1
    if target == "strip":
        kw["merge"] = draw(st.sampled_from(vocab.MERGES_BY_TARGET["strip"]))
    elif multi:
        merges = ("sum", "mean") if excite == "none" else vocab.MERGES_BY_TARGET[target]
        kw["merge"] = draw(st.sampled_from(merges))
    if (target == "channel" and excite in ("mlp", "linear", "none") and all(op in vocab.EXTENT_POOLS for op in
                                                                              kw["pool"])
            and draw(st.integers(0, 3)) == 0):
        kw["extent"] = draw(st.sampled_from((2, 3, 4)))  # gather-excite: pooled windows, the gate resized back
    return kw


def _excite_layers(draw: st.DrawFn, kw: dict, min_channels: int, acts: Sequence[str]) -> None:
    """The excitation's hidden layer, bias, norm, SimAM's lambda and a strip conv's activation."""
    target, excite = kw["target"], kw["excite"]
    if has_hidden(SimpleNamespace(**kw)):
        kw.update(draw(_hidden(min_channels, acts)))
    if excite not in ("none", "energy"):
        kw["bias"] = draw(st.booleans())
    if excite == "mlp":
        kw.update(draw(_norm(("bn", "ln") if target in ("channel", "kernel") else ("bn",))))
    if excite == "conv":
        kw.update(draw(_norm(("bn", "gn") if target == "strip" else ("bn",))))
    if excite == "channelwise":
        kw.update(draw(_norm(("bn",))))
    if excite == "energy":
        kw["energy_lambda"] = draw(st.sampled_from((1e-4, 1e-2)))
    if target == "strip" and excite == "conv":
        kw["act"] = draw(st.sampled_from(("identity", *acts)))


def _kernel_sizes(draw: st.DrawFn, kw: dict) -> None:
    """Conv and conv1d kernels (ECA's adaptive rule too), dilation, padding, and the DCT frequencies."""
    target, excite = kw["target"], kw["excite"]
    if excite == "conv":
        kw["kernel_size"] = draw(st.sampled_from((1, 3, 5, 7)))
        if target in ("spatial", "element"):
            kw["dilation"] = draw(st.sampled_from((1, 1, 2)))
    if excite in ("conv1d", "conv1d_mlp"):
        if draw(st.booleans()):
            kw["kernel_size"] = "adaptive"
            kw["gamma"] = draw(st.sampled_from((1.0, 2.0, 3.0)))
            kw["beta"] = draw(st.sampled_from((0.0, 1.0, 2.0)))
            kw["kernel_min"] = draw(st.sampled_from((1, 3)))
        else:
            kw["kernel_size"] = draw(st.sampled_from((1, 3, 5, 9)))
    if excite == "conv1d":
        kw["padding_mode"] = draw(st.sampled_from(vocab.PADDING_MODES))
    if "dct" in kw["pool"]:
        kw["frequencies"] = draw(st.sampled_from(_FREQUENCIES))


def _gate(draw: st.DrawFn, kw: dict, gates: Sequence[str], inits: Sequence[str], fuses: Sequence[str]) -> None:
    """A kernel target's experts, heads and router gate; a feature target's gate, init and fuse."""
    if kw["target"] == "kernel" and kw["excite"] == "mlp" and draw(st.integers(0, 5)) == 0:
        # KernelWarehouse: cells of the gcd's channels divide any conv's (budgets below 1 halve them: not always)
        kw.update(heads=("cells",), experts=1, budget=draw(st.sampled_from((1.0, 2.0))),
                  temperature=draw(st.sampled_from((1.0, 0.5))))
    elif kw["target"] == "kernel":
        kw["experts"] = draw(st.integers(1, 6))
        heads = draw(st.lists(st.sampled_from(tuple(h for h in vocab.HEADS if h != "cells")), min_size=1,
                              max_size=4, unique=True))
        if kw["experts"] > 1 and "kernel" not in heads:
            heads.insert(0, "kernel")
        kw["heads"] = tuple(heads)
        if {"in", "out", "spatial"} & set(heads):
            kw["scale_gate"] = draw(st.sampled_from(vocab.SCALE_GATES))
        if kw.get("pool") == ("avg",):
            kw["pool_grid"] = draw(st.sampled_from((1, 1, 2)))
        kw["gate"] = draw(st.sampled_from(tuple(g for g in ("softmax", "sigmoid") if g in gates) or ("softmax",)))
        kw["temperature"] = draw(st.sampled_from((1.0, 4.0, 30.0)))
    else:
        kw["gate"] = draw(st.sampled_from(tuple(gates)))
        kw["temperature"] = draw(st.sampled_from((1.0, 1.0, 0.5, 2.0)))
        kw["init"] = draw(st.sampled_from(tuple(inits)))
        kw["fuse"] = draw(st.sampled_from(tuple(fuses)))


@st.composite
def specs(
    draw: st.DrawFn,
    targets: Sequence[str] = vocab.TARGETS,
    *,
    composites: bool = True,
    inits: Sequence[str] = vocab.INITS,
    branches: bool = True,
    min_channels: int = 1,
    gates: Sequence[str] = vocab.GATES,
    acts: Sequence[str] = _ACTS,
    fuses: Sequence[str] = vocab.FUSES,
) -> AttnSpec:
    """Valid specs for ``targets``: leaves, rotated branches and (for feature targets) composites of up to
    three stages, in sequence or in parallel (``merge="sum"`` / ``"prod"``). Each builds at any channel
    count ``>= min_channels``."""
    feature = [t for t in targets if t in vocab.FEATURE_TARGETS]
    opts = dict(branches=branches, min_channels=min_channels, gates=gates, acts=acts)
    leaf = leaf_specs(targets, inits=inits, fuses=fuses, **opts)
    if not composites or not feature or draw(st.integers(0, 2)) > 0:
        return draw(leaf)
    if draw(st.integers(0, 2)) == 0:  # stages in parallel: their gate maps combined under one gate
        group_gates = tuple(g for g in gates if g != "softmax")
        if group_gates:
            stage = leaf_specs(feature, inits=("default",), fuses=("mul",), **opts)
            stages = draw(st.lists(stage, min_size=1, max_size=3))
            return AttnSpec(
                stages=tuple(stages), merge=draw(st.sampled_from(vocab.COMPOSITE_MERGES)),
                gate=draw(st.sampled_from(group_gates)), fuse=draw(st.sampled_from(tuple(fuses))),
                temperature=draw(st.sampled_from((1.0, 2.0))), init=draw(st.sampled_from(tuple(inits))),
            )
    stage = leaf_specs(feature, inits=inits, fuses=fuses, **opts)
    stages = draw(st.lists(stage, min_size=1, max_size=3))
    return AttnSpec(stages=tuple(stages))
