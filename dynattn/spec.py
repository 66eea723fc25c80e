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

This file holds the dataclass; :mod:`dynattn.validate` checks and normalises its fields. The
preset constructors (``AttnSpec.se()`` ... ``AttnSpec.odconv()``) are the functions of
:mod:`dynattn.presets`, attached to the class there, so each preset's signature is written once;
``spec.layer`` is attached by :mod:`dynattn.interop`. Importing ``dynattn`` imports the presets (no
torch); the first use of a ``dynattn`` name imports interop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .validate import check_field_names, normalize

__all__ = ["AttnSpec"]

Target = Literal["channel", "spatial", "element", "strip", "kernel"]


@dataclass(frozen=True, kw_only=True, repr=False)
class AttnSpec:
    """A declarative attention generator. Every field, its values and its default: the documentation's spec
    language page (docs/spec.md), generated from the fields' ``#:`` comments and :mod:`dynattn.vocab`.

    Example::

        AttnSpec(pool=["avg", "max"], target="kernel")
        AttnSpec(target="spatial", pool=["max", "avg"], kernel_size=7, norm="bn")
        AttnSpec.cbam(init="identity")
    """

    #: Pooling ops, in order (``concat`` merges keep it): avg, max, lse, lp, std, std_unbiased, attn,
    #: dct, std_unbiased_eps, none.
    pool: tuple[str, ...] | None = None
    #: Where the weights go: channel (B,C,1,1), spatial (B,1,H,W), element (B,C,H,W), strip (from an
    #: H strip B,C,H,1 and a W strip B,C,1,W), kernel.
    target: Target | None = None
    #: How several pooled descriptors merge: sum (after a shared excitation), concat, mean; on target
    #: strip, sum (excitations added before the gate) or prod (gates multiplied). On a composite:
    #: None runs the stages in sequence, sum / prod runs them in parallel and combines their gates.
    merge: str | None = None
    #: mlp, linear, conv1d (ECA), conv1d_mlp, channelwise (SRM), conv (k x k), pixel_mlp (per-pixel
    #: MLP, GAM), energy (SimAM) or none.
    excite: str | None = None
    #: Hidden width = channels / reduction (before rounding), for excitations with a hidden layer.
    reduction: float = 16.0
    #: An explicit hidden width; overrides ``reduction``.
    width: int | None = None
    #: Round the hidden width to a multiple of this.
    divisor: int = 1
    #: ``floor`` (int(C / r), the papers' code), ``nearest`` (timm's make_divisible, round_limit=0)
    #: or ``nearest_90`` (make_divisible's default round_limit=0.9).
    rounding: str = "floor"
    #: A lower bound on the hidden width (ODConv: 16). Kernel-target routers default to 4.
    min_width: int | None = None
    #: Bias in the excitation's layers.
    bias: bool = True
    #: Activation between the excitation's two layers (default relu), or after a strip conv
    #: (default identity).
    act: str | None = None
    #: ``None``, ``"bn"``, ``"ln"`` or ``"gn"``: normalisation after the excitation's first layer.
    norm: str | None = None
    #: The BatchNorm's momentum (``norm="bn"``).
    bn_momentum: float = 0.1
    #: The norm layer's eps (default 1e-5 when there is a norm).
    bn_eps: float | None = None
    #: SimAM's lambda, added to each map's variance by ``excite="energy"`` (default 1e-4 there).
    energy_lambda: float | None = None
    #: Kernel size of ``conv`` / ``conv1d`` (odd), or ``"adaptive"`` for ECA's rule.
    kernel_size: int | str | None = None
    #: ECA's adaptive kernel: k = t if t is odd else t + 1, t = int(|log2(C) + beta| / gamma).
    gamma: float = 2.0
    beta: float = 1.0
    #: Smallest adaptive kernel (timm uses 3).
    kernel_min: int = 1
    #: Dilation of a ``conv`` excitation's k x k convs (BAM: 4).
    dilation: int = 1
    #: ``zeros`` or ``circular`` padding of a ``conv1d`` excitation (timm's CECA).
    padding_mode: str = "zeros"
    #: Pooling over a local extent: 0 pools globally; e >= 2 pools windows of 2e - 1 with stride e and
    #: resizes the gate back to H x W (gather-excite). Channel target.
    extent: int = 0
    #: FcaNet's frequency selection for ``pool="dct"``: top/low/bot and 1, 2, 4, 8, 16 or 32.
    frequencies: str = "top16"
    #: sigmoid, hard_sigmoid, softmax, tanh or identity; applied to excite(...) / temperature.
    gate: str | None = None
    temperature: float = 1.0
    #: How the weights meet x: ``mul`` (x * w), ``mul_one_plus`` (x * (1 + w), BAM) or ``add`` (x + w,
    #: global context).
    fuse: str = "mul"
    #: ``default``, or ``identity``: w starts at the value that leaves x unchanged (1 for mul, 0 for
    #: mul_one_plus and add), exactly. On a kernel target, each head that is not a softmax starts
    #: at its neutral value (1/K for the mixing weights, 1 for ODConv's scalings), so an upcycled
    #: conv is reproduced.
    init: str = "default"
    #: Kernel target: number of expert kernels and the router's heads.
    experts: int = 4
    heads: tuple[str, ...] = ("kernel",)
    #: Kernel target: the gate of the scaling heads ``in`` / ``out`` / ``spatial``: ``sigmoid`` (ODConv) or
    #: ``hard_sigmoid_x2`` (DCD's relu6(z + 3) / 3, 1 at z = 0).
    scale_gate: str = "sigmoid"
    #: Kernel target with the ``latent`` head (DCD): the latent space's size L (None: the integer square root
    #: of the router's input width, C_in * pool_grid ** spatial_dims).
    latent_dim: int | None = None
    #: Kernel target: the router averages x over a grid of ``pool_grid`` cells per spatial axis and
    #: flattens it (1: global pooling; DCD's basic block: 2).
    pool_grid: int = 1
    #: Kernel target with the ``cells`` head (KernelWarehouse): the warehouse's cells per cell its kernels are
    #: split into, the parameter budget against the static convs: an int >= 1 (1x, 4x) or 1/k (1/2x, 1/4x).
    budget: float = 1.0
    #: KernelWarehouse: a cell's input / output channels as a fraction of the greatest common divisor of its
    #: warehouse's convs' (the official ``cell_inplane_ratio`` / ``cell_outplane_ratio``).
    cell_in_ratio: float = 1.0
    cell_out_ratio: float = 1.0
    #: KernelWarehouse: who shares a warehouse under ``insert_attention``: ``stage`` (the convs that read maps
    #: of one resolution) or ``layer`` (each conv its own).
    sharing: str = "stage"
    #: einops rotations ("b c h w -> b h c w"); the stage runs under each, gates averaged.
    branches: tuple[str, ...] = ()
    #: A composite: these specs run in sequence (or in parallel, with ``merge``).
    stages: tuple[AttnSpec, ...] = ()
    #: Display name (the built module's class name); presets set it.
    name: str | None = None
    #: The reference whose numerics this spec reproduces; presets set it.
    reference: str | None = field(default=None, compare=True)

    # ------------------------------------------------------------------ construction
    def __new__(cls, *args: Any, **kwargs: Any) -> AttnSpec:
        check_field_names(cls, kwargs, "AttnSpec")  # a misspelt field: SpecError with the closest name
        return super().__new__(cls)

    def __post_init__(self) -> None:
        normalize(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle, reading a spec pickled before ``energy_lambda`` existed (SimAM's lambda was ``bn_eps``)."""
        if "energy_lambda" not in state:
            state = dict(state, energy_lambda=None)
            if state.get("excite") == "energy":
                state.update(energy_lambda=state.get("bn_eps"), bn_eps=None)
        self.__dict__.update(state)

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
        check_field_names(type(self), changes, "AttnSpec.replace")
        return dataclasses.replace(self, **changes)

    def with_init(self, init: str) -> AttnSpec:
        """This spec with ``init`` set on every stage (on a parallel composite: on the composite)."""
        if self.stages and self.merge is None:
            return dataclasses.replace(self, stages=tuple(s.with_init(init) for s in self.stages), init=init)
        return dataclasses.replace(self, init=init)

    @classmethod
    def chain(cls, *stages: AttnSpec, name: str | None = None, reference: str | None = None) -> AttnSpec:
        """A composite that runs ``stages`` in sequence."""
        return cls(stages=stages, name=name, reference=reference)

    @classmethod
    def parallel(
        cls, *stages: AttnSpec, merge: str = "sum", gate: str = "sigmoid", temperature: float = 1.0, fuse: str = "mul",
        init: str = "default", name: str | None = None, reference: str | None = None,
    ) -> AttnSpec:
        """A composite that runs ``stages`` on the same input and combines their gate maps by ``merge``
        (``sum`` or ``prod``, broadcast) before its own ``gate`` (of the combined map over ``temperature``)
        and ``fuse`` (BAM)."""
        return cls(stages=stages, merge=merge, gate=gate, temperature=temperature, fuse=fuse, init=init, name=name,
                   reference=reference)

    if TYPE_CHECKING:  # the presets, attached by dynattn.presets at import, declared for type checkers and IDEs
        from . import presets as _presets

        se = staticmethod(_presets.se)
        eca = staticmethod(_presets.eca)
        cbam = staticmethod(_presets.cbam)
        gam = staticmethod(_presets.gam)
        triplet = staticmethod(_presets.triplet)
        condconv = staticmethod(_presets.condconv)
        dyconv = staticmethod(_presets.dyconv)
        odconv = staticmethod(_presets.odconv)
        ese = staticmethod(_presets.ese)
        ecam = staticmethod(_presets.ecam)
        ceca = staticmethod(_presets.ceca)
        ge = staticmethod(_presets.ge)
        gc = staticmethod(_presets.gc)
        gca = staticmethod(_presets.gca)
        lcbam = staticmethod(_presets.lcbam)
        coord = staticmethod(_presets.coord)
        scoord = staticmethod(_presets.scoord)
        ela = staticmethod(_presets.ela)
        strip = staticmethod(_presets.strip)
        simam = staticmethod(_presets.simam)
        bam = staticmethod(_presets.bam)
        srm = staticmethod(_presets.srm)
        fca = staticmethod(_presets.fca)
        scse = staticmethod(_presets.scse)
        dcd = staticmethod(_presets.dcd)
        kw = staticmethod(_presets.kw)
        kw = staticmethod(_presets.kw)

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        if self.stages:
            parts = [f"stages=({', '.join(map(repr, self.stages))}{',' if len(self.stages) == 1 else ''})"]
            if self.merge is not None:
                parts += [f"merge={self.merge!r}", f"gate={self.gate!r}"]
                parts += [f"{k}={getattr(self, k)!r}" for k in ("temperature", "fuse")
                          if getattr(self, k) != AttnSpec.__dataclass_fields__[k].default]
            if self.init != "default":
                parts.append(f"init={self.init!r}")
        else:
            # show what differs from the defaults of this target (and, past `excite`, of this excite)
            by_target = AttnSpec(target=self.target)
            by_excite = AttnSpec(target=self.target, excite=self.excite, pool=self.pool[:1])
            by_norm = AttnSpec(target=self.target, excite=self.excite, pool=self.pool[:1], norm=self.norm)
            parts = [f"target={self.target!r}"]
            for f in dataclasses.fields(self):
                if f.name in ("target", "stages", "name", "reference"):
                    continue
                value = getattr(self, f.name)
                base = (by_target if f.name in ("pool", "merge", "excite") else
                        by_norm if f.name == "bn_eps" else by_excite)
                if value != getattr(base, f.name):
                    parts.append(f"{f.name}={value!r}")
        for key in ("name", "reference"):
            if getattr(self, key) is not None:
                parts.append(f"{key}={getattr(self, key)!r}")
        return f"AttnSpec({', '.join(parts)})"


