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

from . import vocab
from .spec import AttnSpec
from .validate import channel_free  # the same rule validation uses

__all__ = ["specs", "leaf_specs", "rotations"]

_POOLS = ("avg", "max", "lse", "lp", "std")
_REDUCTIONS = (0.5, 1, 1.5, 2, 3, 4, 8, 16)


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
def _norm(draw: st.DrawFn) -> dict:
    if not draw(st.booleans()):
        return {}
    return {"norm": "bn", "bn_momentum": draw(st.sampled_from((0.1, 0.01))),
            "bn_eps": draw(st.sampled_from((1e-5, 1e-3)))}


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
) -> AttnSpec:
    """One-stage specs over ``targets``; ``gates`` and ``acts`` narrow the gates and the
    hidden activations drawn (e.g. smooth ones only)."""
    target = draw(st.sampled_from(tuple(targets)))
    kw: dict = {"target": target}
    if target == "element":
        kw["pool"] = ("none",)
    else:
        kw["pool"] = tuple(draw(st.lists(st.sampled_from(_POOLS), min_size=1, max_size=3, unique=True)))
    kw["excite"] = excite = draw(st.sampled_from(vocab.EXCITES_BY_TARGET[target]))
    multi = len(kw["pool"]) > 1
    if multi:
        merges = ("sum", "mean") if excite == "none" else vocab.MERGES
        kw["merge"] = draw(st.sampled_from(merges))
    if excite in ("mlp", "pixel_mlp") or (excite == "conv" and target == "element"):
        kw.update(draw(_hidden(min_channels, acts)))
    if excite != "none":
        kw["bias"] = draw(st.booleans())
    if excite in ("mlp", "conv"):
        kw.update(draw(_norm()))
    if excite == "conv":
        kw["kernel_size"] = draw(st.sampled_from((1, 3, 5, 7)))
    if excite == "conv1d":
        if draw(st.booleans()):
            kw["kernel_size"] = "adaptive"
            kw["gamma"] = draw(st.sampled_from((1.0, 2.0, 3.0)))
            kw["beta"] = draw(st.sampled_from((0.0, 1.0, 2.0)))
            kw["kernel_min"] = draw(st.sampled_from((1, 3)))
        else:
            kw["kernel_size"] = draw(st.sampled_from((1, 3, 5, 9)))
    if target == "kernel":
        kw["experts"] = draw(st.integers(1, 6))
        heads = draw(st.lists(st.sampled_from(vocab.HEADS), min_size=1, max_size=4, unique=True))
        if kw["experts"] > 1 and "kernel" not in heads:
            heads.insert(0, "kernel")
        kw["heads"] = tuple(heads)
        kw["gate"] = draw(st.sampled_from(tuple(g for g in ("softmax", "sigmoid") if g in gates) or ("softmax",)))
        kw["temperature"] = draw(st.sampled_from((1.0, 4.0, 30.0)))
    else:
        kw["gate"] = draw(st.sampled_from(tuple(gates)))
        kw["temperature"] = draw(st.sampled_from((1.0, 1.0, 0.5, 2.0)))
        kw["init"] = draw(st.sampled_from(tuple(inits)))
    spec = AttnSpec(**kw)
    if branches and target != "kernel" and draw(st.integers(0, 3)) == 0:
        rot = rotations(keep_channel=not channel_free(spec))
        chosen = draw(st.lists(rot, min_size=1, max_size=3, unique=True))
        spec = spec.replace(branches=tuple(chosen))
    return spec


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
) -> AttnSpec:
    """Valid specs for ``targets``: leaves, rotated branches and (for feature targets)
    composites of up to three stages. Each builds at any channel count ``>= min_channels``."""
    feature = [t for t in targets if t in vocab.FEATURE_TARGETS]
    opts = dict(inits=inits, branches=branches, min_channels=min_channels, gates=gates, acts=acts)
    leaf = leaf_specs(targets, **opts)
    if not composites or not feature or draw(st.integers(0, 2)) > 0:
        return draw(leaf)
    stage = leaf_specs(feature, **opts)
    stages = draw(st.lists(stage, min_size=1, max_size=3))
    return AttnSpec(stages=tuple(stages))
