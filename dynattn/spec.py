"""``AttnSpec``: an attention generator described as data.

    w = gate( excite( merge( pool_1(x), ..., pool_n(x) ) ) / temperature )

A spec is frozen, hashable and validated when it is made: a bad field raises
:class:`~dynattn.errors.SpecError` naming the field, the value and what is allowed.
Lists are accepted wherever tuples are stored, and fields left as ``None`` take the
default of the spec's target, so two specs that build the same module compare equal.

A *leaf* spec is one pooling/excitation/gate stage. A *composite* spec has ``stages``:
the stages run in sequence, each scaling the output of the previous one (CBAM is a
channel stage then a spatial stage). ``branches`` runs one leaf stage under several
einops axis rotations, each with its own parameters, and averages the gates (Triplet).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from . import vocab
from .errors import SpecError

__all__ = ["AttnSpec", "SpecLayer"]

Target = Literal["channel", "spatial", "element", "kernel"]


@dataclass(frozen=True, kw_only=True, repr=False)
class AttnSpec:
    """A declarative attention generator. See the README's spec reference for every field.

    Example::

        AttnSpec(pool=["avg", "max"], target="kernel")
        AttnSpec(target="spatial", pool=["max", "avg"], kernel_size=7, norm="bn")
        AttnSpec.cbam(init="identity")
    """

    #: Pooling ops, in order (``concat`` merges keep it): avg, max, lse, lp, std, none.
    pool: tuple[str, ...] | None = None
    #: Where the weights go: channel (B,C,1,1), spatial (B,1,H,W), element (B,C,H,W), kernel.
    target: Target | None = None
    #: How several pooled descriptors merge: sum (after a shared excitation), concat, mean.
    merge: str | None = None
    #: mlp, linear, conv1d (ECA), conv (k x k), pixel_mlp (per-pixel MLP, GAM) or none.
    excite: str | None = None
    #: Hidden width = channels / reduction (before rounding), for excitations with a hidden layer.
    reduction: float = 16.0
    #: An explicit hidden width; overrides ``reduction``.
    width: int | None = None
    #: Round the hidden width to a multiple of this.
    divisor: int = 1
    #: ``floor`` (int(C / r), the papers' code) or ``nearest`` (timm's make_divisible).
    rounding: str = "floor"
    #: A lower bound on the hidden width (ODConv: 16). Kernel-target routers default to 4.
    min_width: int | None = None
    #: Bias in the excitation's layers.
    bias: bool = True
    #: Activation between the excitation's two layers.
    act: str = "relu"
    #: ``None`` or ``"bn"``: BatchNorm after the excitation's convs / first MLP layer.
    norm: str | None = None
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    #: Kernel size of ``conv`` / ``conv1d`` (odd), or ``"adaptive"`` for ECA's rule.
    kernel_size: int | str | None = None
    #: ECA's adaptive kernel: k = t if t is odd else t + 1, t = int(|log2(C) + beta| / gamma).
    gamma: float = 2.0
    beta: float = 1.0
    #: Smallest adaptive kernel (timm uses 3).
    kernel_min: int = 1
    #: sigmoid, hard_sigmoid, softmax, tanh or identity; applied to excite(...) / temperature.
    gate: str | None = None
    temperature: float = 1.0
    #: ``default``, or ``identity``: the gate starts at exactly 1 (outputs unchanged). On a
    #: kernel target, each head that is not a softmax starts at its neutral value (1/K for
    #: the mixing weights, 1 for ODConv's scalings), so an upcycled conv is reproduced.
    init: str = "default"
    #: Kernel target: number of expert kernels and the router's heads.
    experts: int = 4
    heads: tuple[str, ...] = ("kernel",)
    #: einops rotations ("b c h w -> b h c w"); the stage runs under each, gates averaged.
    branches: tuple[str, ...] = ()
    #: A composite: these specs run in sequence.
    stages: tuple[AttnSpec, ...] = ()
    #: Display name (the built module's class name); presets set it.
    name: str | None = None
    #: The reference whose numerics this spec reproduces; presets set it.
    reference: str | None = field(default=None, compare=True)

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        _coerce_sequences(self)
        if self.stages:
            _normalize_composite(self)
        else:
            _normalize_leaf(self)

    # ------------------------------------------------------------------ properties
    @property
    def is_composite(self) -> bool:
        return bool(self.stages)

    @property
    def kind(self) -> Literal["feature", "kernel"]:
        """``feature`` (the module scales the feature map) or ``kernel`` (dynamic convolution)."""
        return "kernel" if self.target == "kernel" else "feature"

    def leaves(self) -> tuple[AttnSpec, ...]:
        """The leaf stages in execution order (a leaf spec is its own only leaf)."""
        if not self.stages:
            return (self,)
        return tuple(leaf for stage in self.stages for leaf in stage.leaves())

    # ------------------------------------------------------------------ derived specs
    def replace(self, **changes: Any) -> AttnSpec:
        """A copy with ``changes`` applied, validated like a new spec."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise SpecError(
                "AttnSpec.replace", unknown[0], "unknown field",
                [f.name for f in dataclasses.fields(self)],
            )
        return dataclasses.replace(self, **changes)

    def with_init(self, init: str) -> AttnSpec:
        """This spec with ``init`` set on every stage."""
        if self.stages:
            return dataclasses.replace(self, stages=tuple(s.with_init(init) for s in self.stages), init=init)
        return dataclasses.replace(self, init=init)

    @property
    def layer(self) -> SpecLayer:
        """A callable ``layer(channels, **kwargs) -> nn.Module``, for code that takes an attention
        layer class, such as timm's ``create_model("resnet50", attn_layer=AttnSpec.cbam().layer)``."""
        return SpecLayer(self)

    @classmethod
    def chain(cls, *stages: AttnSpec, name: str | None = None, reference: str | None = None) -> AttnSpec:
        """A composite that runs ``stages`` in sequence."""
        return cls(stages=stages, name=name, reference=reference)

    # ------------------------------------------------------------------ presets
    @classmethod
    def se(cls, reduction: float = 16, *, flavor: str = "official", init: str = "default") -> AttnSpec:
        """Squeeze-and-Excitation (Hu et al., 2018). See :func:`dynattn.presets.se`."""
        from . import presets

        return presets.se(reduction, flavor=flavor, init=init)

    @classmethod
    def eca(
        cls,
        kernel_size: int | str = "adaptive",
        *,
        gamma: float = 2,
        beta: float = 1,
        flavor: str = "official",
        init: str = "default",
    ) -> AttnSpec:
        """Efficient Channel Attention (Wang et al., 2020). See :func:`dynattn.presets.eca`."""
        from . import presets

        return presets.eca(kernel_size, gamma=gamma, beta=beta, flavor=flavor, init=init)

    @classmethod
    def cbam(
        cls,
        reduction: float = 16,
        kernel_size: int = 7,
        *,
        flavor: str = "official",
        init: str = "default",
    ) -> AttnSpec:
        """CBAM (Woo et al., 2018): channel then spatial. See :func:`dynattn.presets.cbam`."""
        from . import presets

        return presets.cbam(reduction, kernel_size, flavor=flavor, init=init)

    @classmethod
    def gam(
        cls, rate: float = 4, kernel_size: int = 7, *, flavor: str = "official", init: str = "default"
    ) -> AttnSpec:
        """Global Attention Mechanism (Liu et al., 2021). See :func:`dynattn.presets.gam`."""
        from . import presets

        return presets.gam(rate, kernel_size, flavor=flavor, init=init)

    @classmethod
    def triplet(
        cls,
        kernel_size: int = 7,
        *,
        no_spatial: bool = False,
        flavor: str = "official",
        init: str = "default",
    ) -> AttnSpec:
        """Triplet attention (Misra et al., 2021). See :func:`dynattn.presets.triplet`."""
        from . import presets

        return presets.triplet(kernel_size, no_spatial=no_spatial, flavor=flavor, init=init)

    @classmethod
    def condconv(cls, experts: int = 4, *, init: str = "default") -> AttnSpec:
        """CondConv (Yang et al., 2019): sigmoid routing. See :func:`dynattn.presets.condconv`."""
        from . import presets

        return presets.condconv(experts, init=init)

    @classmethod
    def dyconv(
        cls, experts: int = 4, temperature: float = 30.0, *, reduction: float = 4, init: str = "default"
    ) -> AttnSpec:
        """Dynamic convolution (Chen et al., 2020): softmax routing with temperature.
        See :func:`dynattn.presets.dyconv`."""
        from . import presets

        return presets.dyconv(experts, temperature, reduction=reduction, init=init)

    @classmethod
    def odconv(
        cls,
        experts: int = 4,
        temperature: float = 1.0,
        *,
        reduction: float = 16,
        min_width: int = 16,
        norm: str | None = None,
        init: str = "default",
    ) -> AttnSpec:
        """Omni-dimensional dynamic convolution (Li et al., 2022): four attention heads.
        See :func:`dynattn.presets.odconv`."""
        from . import presets

        return presets.odconv(experts, temperature, reduction=reduction, min_width=min_width, norm=norm,
                              init=init)

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        if self.stages:
            parts = [f"stages=({', '.join(map(repr, self.stages))}{',' if len(self.stages) == 1 else ''})"]
            if self.init != "default":
                parts.append(f"init={self.init!r}")
        else:
            # show what differs from the defaults of this target (and, past `excite`, of this excite)
            by_target = AttnSpec(target=self.target)
            by_excite = AttnSpec(target=self.target, excite=self.excite, pool=self.pool[:1])
            parts = [f"target={self.target!r}"]
            for f in dataclasses.fields(self):
                if f.name in ("target", "stages", "name", "reference"):
                    continue
                value = getattr(self, f.name)
                base = by_target if f.name in ("pool", "merge", "excite") else by_excite
                if value != getattr(base, f.name):
                    parts.append(f"{f.name}={value!r}")
        for key in ("name", "reference"):
            if getattr(self, key) is not None:
                parts.append(f"{key}={getattr(self, key)!r}")
        return f"AttnSpec({', '.join(parts)})"


class SpecLayer:
    """``spec.layer``: builds the spec for the channel count it is called with.

    timm's keywords map onto the spec: ``rd_ratio`` (hidden = channels * rd_ratio) sets
    ``reduction``, ``rd_channels`` sets ``width``, ``rd_divisor`` sets ``divisor`` and
    ``act_layer`` (a class or name, e.g. ``nn.SiLU``) sets ``act``, on every stage with a hidden
    layer; ``device`` and ``dtype`` place the module; other keywords raise ``SpecError``.
    """

    _KWARGS = ("rd_ratio", "rd_channels", "rd_divisor", "act_layer", "device", "dtype")

    def __init__(self, spec: AttnSpec) -> None:
        self.spec = spec

    def __call__(self, channels: int, **kwargs: Any):
        from .compiler import build

        unknown = sorted(set(kwargs) - set(self._KWARGS))
        if unknown:
            raise SpecError(f"{self!r}(...)", unknown[0], "keyword not understood", self._KWARGS)
        changes = {}
        if kwargs.get("rd_ratio") is not None:
            changes["reduction"] = 1.0 / kwargs["rd_ratio"]
        if kwargs.get("rd_channels") is not None:
            changes["width"] = kwargs["rd_channels"]
        if kwargs.get("rd_divisor") is not None:
            changes["divisor"] = kwargs["rd_divisor"]
        if kwargs.get("act_layer") is not None:
            changes["act"] = _act_name(kwargs["act_layer"])
        spec = _with_hidden(self.spec, changes) if changes else self.spec
        return build(spec, channels, device=kwargs.get("device"), dtype=kwargs.get("dtype"))

    def __repr__(self) -> str:
        return f"{self.spec!r}.layer"


_ACT_ALIASES = {"swish": "silu", "hardswish": "hard_swish", "relu6": "relu6", "leakyrelu": "leaky_relu"}


def _act_name(act: Any) -> str:
    """An activation class or name as the spec's ``act`` name."""
    name = act if isinstance(act, str) else getattr(act, "__name__", type(act).__name__)
    key = name.lower().replace("-", "_")
    key = _ACT_ALIASES.get(key.replace("_", ""), key)
    if key in vocab.ACTS:
        return key
    for known, cls in vocab.ACTS.items():
        if isinstance(act, type) and issubclass(act, cls):
            return known
    raise SpecError("act_layer", name, "has no counterpart among the spec's activations", tuple(vocab.ACTS))


def _with_hidden(spec: AttnSpec, changes: dict[str, Any]) -> AttnSpec:
    if spec.stages:
        return dataclasses.replace(spec, stages=tuple(_with_hidden(s, changes) for s in spec.stages))
    return spec.replace(**changes) if _has_hidden(spec) else spec


# ====================================================================== validation helpers
_LEAF_FIELDS = tuple(
    f.name for f in dataclasses.fields(AttnSpec) if f.name not in ("stages", "name", "reference", "init")
)
_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(AttnSpec)}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _set(spec: AttnSpec, name: str, value: Any) -> None:
    object.__setattr__(spec, name, value)


def _err(name: str, value: Any, problem: str, allowed: Any = None, hint: str | None = None) -> SpecError:
    return SpecError(f"AttnSpec.{name}", value, problem, allowed, hint=hint)


def _coerce_sequences(spec: AttnSpec) -> None:
    for name in ("pool", "heads", "branches", "stages"):
        value = getattr(spec, name)
        if value is None:
            continue
        if isinstance(value, str) and name != "stages":
            value = (value,)
        elif isinstance(value, AttnSpec) and name == "stages":
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


def _normalize_composite(spec: AttnSpec) -> None:
    for name in _LEAF_FIELDS:
        if getattr(spec, name) != _FIELD_DEFAULTS[name]:
            raise _err(
                name, getattr(spec, name), "has no effect on a composite spec (one with stages)",
                hint="set it on the stage it belongs to",
            )
    for i, stage in enumerate(spec.stages):
        if not isinstance(stage, AttnSpec):
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


def _check_name(spec: AttnSpec) -> None:
    if spec.name is not None and (not isinstance(spec.name, str) or not _IDENT.match(spec.name)):
        raise _err("name", spec.name, "must be a Python identifier (it names the built module's class)")
    if spec.reference is not None and not isinstance(spec.reference, str):
        raise _err("reference", spec.reference, "must be a string")


def _normalize_leaf(spec: AttnSpec) -> None:
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
        if rotation.split("->")[1].split()[1] != "c" and not _channel_free(spec):
            raise _err(
                "branches", rotation,
                f"moves the channel axis, but excite={excite!r} on target={target!r} has weights sized "
                "by the channel count", hint="rotate a spatial stage, as Triplet does",
            )

    _check_relevance(spec)


def _has_hidden(spec: AttnSpec) -> bool:
    return spec.excite in ("mlp", "pixel_mlp") or (spec.excite == "conv" and spec.target == "element")


def _channel_free(spec: AttnSpec) -> bool:
    """True when the stage's parameters do not depend on the channel count it sees."""
    if spec.target == "spatial":
        return True
    if spec.excite == "none":
        return True
    return spec.excite == "conv1d" and spec.kernel_size != "adaptive"


def _check_relevance(spec: AttnSpec) -> None:
    """A field set away from its default where it has no effect is a mistake: say so."""
    rules: list[tuple[tuple[str, ...], bool, str]] = [
        (("reduction", "width", "divisor", "rounding", "act", "min_width"), _has_hidden(spec),
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
            if value != _FIELD_DEFAULTS[name]:
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
