"""Interoperation with timm: its attention layer argument, and its attention weights.

- ``spec.layer`` (:class:`SpecLayer`): a callable ``layer(channels, **kwargs) -> nn.Module`` for
  code that takes an attention layer class, such as ``timm.create_model(..., attn_layer=...)``.
- ``load_timm_weights(module, timm_module)`` copies a trained ``timm.layers`` attention module (each
  of the 14 that ``timm.layers.create_attn`` names) into the module ``build`` made from the matching
  ``flavor="timm"`` preset, so a checkpoint trained with timm keeps its numerics. timm is not
  imported: the mapping works on state_dict keys, and shapes are checked before anything is copied.
- ``load_smp_weights(module, smp_module)`` does the same for segmentation_models_pytorch's ``SCSEModule``
  into the module built from ``AttnSpec.scse(flavor="smp")``.
- ``load_dcd_weights(module, official_state_dict)`` copies the state_dict of DCD's official ``conv_dy`` /
  ``conv_basic_dy`` (liyunsheng13/dcd) into a dynamic conv built with ``AttnSpec.dcd()``.
- ``load_kw_weights(module, official_state_dict, cells)`` copies an official KernelWarehouse ``KWConv1d/2d/3d``'s
  state_dict and its warehouse's cells (OSVAI/KernelWarehouse) into a dynamic conv built with ``AttnSpec.kw()``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from . import vocab
from .builder import build
from .errors import SpecError
from .layers import ACT_MODULES
from .spec import AttnSpec
from .validate import has_hidden

__all__ = ["load_timm_weights", "load_smp_weights", "load_dcd_weights", "TIMM_KEY_MAPS", "SMP_KEY_MAPS",
           "DCD_KEY_MAP", "SpecLayer", "load_kw_weights", "KW_KEY_MAP"]

#: timm module class name -> (timm key prefix -> dynattn key prefix).
TIMM_KEY_MAPS: dict[str, dict[str, str]] = {
    "SEModule": {"fc1.": "excite.fc1.", "fc2.": "excite.fc2.", "bn.": "excite.bn."},
    "EcaModule": {"conv.": "excite.conv."},
    "CbamModule": {
        "channel.fc1.": "channel.excite.fc1.",
        "channel.fc2.": "channel.excite.fc2.",
        "spatial.conv.conv.": "spatial.excite.conv.",
        "spatial.conv.bn.": "spatial.excite.bn.",
    },
    "EffectiveSEModule": {"fc.": "excite."},
    "CecaModule": {"conv.": "excite.conv."},
    "GatherExcite": {"mlp.fc1.": "excite.fc1.", "mlp.fc2.": "excite.fc2."},
    "GlobalContext": {
        "conv_attn.": "pool_attn.conv.",
        "mlp_scale.fc1.": "excite.fc1.", "mlp_scale.norm.": "excite.ln.", "mlp_scale.fc2.": "excite.fc2.",
        "mlp_add.fc1.": "excite.fc1.", "mlp_add.norm.": "excite.ln.", "mlp_add.fc2.": "excite.fc2.",
    },
    "CoordAttn": {"conv1.": "excite.fc1.", "bn1.": "excite.bn.", "conv_h.": "excite.fc_h.", "conv_w.": "excite.fc_w."},
    "SimpleCoordAttn": {"fc1.": "excite.fc1.", "fc_h.": "excite.fc_h.", "fc_w.": "excite.fc_w."},
    "EfficientLocalAttn": {"conv_h.": "excite.conv_h.", "conv_w.": "excite.conv_w.", "norm_h.": "excite.norm_h.",
                           "norm_w.": "excite.norm_w."},
    "StripAttn": {"conv_h.": "excite.conv_h.", "conv_w.": "excite.conv_w."},
}
#: segmentation_models_pytorch module class name -> (smp key prefix -> dynattn key prefix).
SMP_KEY_MAPS: dict[str, dict[str, str]] = {
    "SCSEModule": {"cSE.1.": "channel.excite.fc1.", "cSE.3.": "channel.excite.fc2.",
                   "sSE.0.": "spatial.excite.conv."},
}
# ECA-MLP is an EcaModule too: its second conv maps alongside the first
TIMM_KEY_MAPS["EcaModule"]["conv2."] = "excite.conv2."
TIMM_KEY_MAPS["LightCbamModule"] = TIMM_KEY_MAPS["CbamModule"]


def _rename(key: str, mapping: dict[str, str]) -> str | None:
    for src, dst in mapping.items():
        if key.startswith(src):
            return dst + key[len(src):]
    return None


@torch.no_grad()
def load_timm_weights(module: nn.Module, timm_module: nn.Module) -> nn.Module:
    """Copy ``timm_module``'s parameters and buffers into ``module``; returns ``module``.

    1x1 conv weights become linear weights where dynattn uses ``nn.Linear``. Raises
    ``SpecError`` when the classes do not correspond or a shape differs, before copying.
    """
    kind = type(timm_module).__name__
    if kind not in TIMM_KEY_MAPS:
        hint = "segmentation_models_pytorch's modules load with dynattn.interop.load_smp_weights" if (
            kind in SMP_KEY_MAPS) else None
        raise SpecError("timm_module", kind, "no weight mapping for this timm class", tuple(TIMM_KEY_MAPS), hint=hint)
    return _load_mapped(module, timm_module, TIMM_KEY_MAPS[kind], "timm_module", "flavor='timm'")


@torch.no_grad()
def load_smp_weights(module: nn.Module, smp_module: nn.Module) -> nn.Module:
    """Copy a segmentation_models_pytorch attention module's weights into ``module``; returns ``module``.

    ``SCSEModule(C, reduction=r)`` loads into ``build(AttnSpec.scse(flavor="smp", reduction=r), C)``. Raises
    ``SpecError``, before copying, when the class has no mapping or a shape differs.
    """
    kind = type(smp_module).__name__
    if kind not in SMP_KEY_MAPS:
        raise SpecError("smp_module", kind, "no weight mapping for this segmentation_models_pytorch class",
                        tuple(SMP_KEY_MAPS))
    return _load_mapped(module, smp_module, SMP_KEY_MAPS[kind], "smp_module", "flavor='smp'")


def _load_mapped(module: nn.Module, theirs: nn.Module, mapping: dict[str, str], what: str, flavor: str) -> nn.Module:
    """Copy ``theirs``'s state into ``module`` under ``mapping``, every key and shape checked before anything is
    copied."""
    kind = type(theirs).__name__
    target = module.state_dict()
    pending: list[tuple[str, torch.Tensor]] = []
    for key, value in theirs.state_dict().items():
        new_key = _rename(key, mapping)
        if new_key is None or new_key not in target:
            raise SpecError(what, key, f"has no counterpart in the dynattn module ({kind} mapped to "
                            f"{new_key!r})", hint=f"build the matching preset with {flavor}")
        if target[new_key].numel() != value.numel():
            raise SpecError(what, key, f"has shape {tuple(value.shape)} but {new_key} has "
                            f"{tuple(target[new_key].shape)}",
                            hint=f"build with the same channels and {flavor}")
        pending.append((new_key, value.reshape(target[new_key].shape)))
    missing = set(target) - {k for k, _ in pending}
    if missing:
        raise SpecError("module", sorted(missing)[0], f"is not set by {kind}'s weights",
                        hint=f"build the matching preset with {flavor}")
    module.load_state_dict(dict(pending))
    return module


#: DCD's official key prefix -> the dynattn dynamic conv's (``fc_scale`` and ``fc_phi`` are the rows of the
#: router's last layer, in the order of its heads: handled apart).
DCD_KEY_MAP = {"conv.weight": "weight", "conv.bias": "bias", "fc.0.": "router.excite.fc1.",
               "fc.1.fc.0.": "router.excite.act.fc.", "q.": "latent.q.", "p.": "latent.p.", "bn1.": "latent.bn1.",
               "bn2.": "latent.bn2."}
_DCD_HEAD_KEYS = {"out": "fc_scale.weight", "latent": "fc_phi.weight"}


def load_dcd_weights(module: nn.Module, official_state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Copy the state_dict of DCD's official ``conv_dy`` (or ``conv_basic_dy``) into ``module``, a
    ``DynamicConv1d/2d/3d`` built with ``AttnSpec.dcd()`` (``pool_grid=2`` for ``conv_basic_dy``) and the same
    channels and kernel, so that the two compute the same output. Every key and shape is checked before anything
    is copied; an identity-initialised router's ``out_mix`` is set to 1 (Lambda as the official layer has it).
    Returns ``module``."""
    router = getattr(module, "router", None)
    heads = getattr(router, "heads", ())
    if "latent" not in heads or "out" not in heads or set(heads) - {"out", "latent"}:
        raise SpecError("module", type(module).__name__, "is not a dynamic conv built from AttnSpec.dcd()",
                        hint="DynamicConv2d(..., spec=AttnSpec.dcd()) or DynamicConv2d.from_conv(conv, 'dcd')")
    state = dict(official_state_dict)
    missing = [key for key in _DCD_HEAD_KEYS.values() if key not in state]
    if missing:
        raise SpecError("official_state_dict", missing[0], "is missing: not the state_dict of DCD's conv_dy",
                        tuple(state)[:12])
    state["router.excite.fc2.weight"] = torch.cat([state.pop(_DCD_HEAD_KEYS[h]) for h in heads])
    renamed = {}
    for key, value in state.items():
        new_key = key if key == "router.excite.fc2.weight" else _rename(key, DCD_KEY_MAP)
        renamed[new_key if new_key is not None else key] = value
    if "out_mix" in dict(router.named_parameters()):
        renamed["router.out_mix"] = torch.ones(())
    return _load_checked(module, renamed, "official_state_dict", "DCD's conv_dy")


#: KernelWarehouse's official ``KWconvNd`` key prefix -> dynattn key prefix.
KW_KEY_MAP = {"attention.fc1.": "router.excite.fc1.", "attention.norm1.": "router.excite.bn.",
              "attention.fc2.": "router.excite.fc2.", "bias": "bias"}


def load_kw_weights(module: nn.Module, official_state_dict: dict[str, torch.Tensor],
                    cells: torch.Tensor | None = None) -> nn.Module:
    """Copy the state_dict of KernelWarehouse's official ``KWConv1d/2d/3d`` (OSVAI/KernelWarehouse) into ``module``,
    a dynamic conv built with ``AttnSpec.kw()`` and the same channels, kernel and warehouse layout, and ``cells``
    (the official ``warehouse_manager.take_cell(conv.warehouse_id)``, (M, c_out, c_in, 1, ...)) into its warehouse
    (shared by the layers that share it: load it once). The official first linear layer has no bias (it feeds a
    BatchNorm): the router's is set to zero. Every key and shape is checked before anything is copied; the
    temperature is not (the official one is a Python float: set ``module.temperature``). Returns ``module``."""
    router = getattr(module, "router", None)
    if getattr(router, "heads", ()) != ("cells",):
        raise SpecError("module", type(module).__name__, "is not a dynamic conv built from AttnSpec.kw()",
                        hint="DynamicConv2d(..., spec=AttnSpec.kw()) or DynamicConv2d.from_conv(conv, 'kw')")
    state: dict[str, torch.Tensor] = {}
    for key, value in official_state_dict.items():
        new_key = _rename(key, KW_KEY_MAP)
        if new_key is None:
            raise SpecError("official_state_dict", key, "is not a key of KernelWarehouse's KWconvNd",
                            tuple(KW_KEY_MAP))
        state[new_key] = value.unsqueeze(0) if new_key == "bias" else value
    state["router.excite.fc1.bias"] = torch.zeros_like(router.excite.fc1.bias)
    state["router.cell_one_hot"] = router.cell_one_hot  # the plan's: the official keeps it out of its state_dict
    # kept where not given (loaded with another conv of the warehouse)
    state["warehouse.cells"] = cells if cells is not None else module.warehouse.cells
    return _load_checked(module, state, "official_state_dict", "KernelWarehouse's KWconvNd")


def _load_checked(module: nn.Module, state: dict[str, torch.Tensor], what: str, kind: str) -> nn.Module:
    """Load ``state`` (already in ``module``'s keys) into ``module`` once every key and shape has been checked."""
    target = module.state_dict()
    for key, value in state.items():
        if key not in target:
            raise SpecError(what, key, f"has no counterpart in {type(module).__name__} ({kind})",
                            hint="build the layer with the official layer's channels, kernel and pool_grid")
        if tuple(target[key].shape) != tuple(value.shape):
            raise SpecError(what, key, f"has shape {tuple(value.shape)} but {type(module).__name__}'s is "
                            f"{tuple(target[key].shape)}", hint="build it with the same channels and kernel")
    absent = sorted(set(target) - set(state) - {"router.temperature"})
    if absent:
        raise SpecError(what, absent[0], f"is not set by {kind}'s weights")
    module.load_state_dict(state, strict=False)
    return module


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

    def __call__(self, channels: int, **kwargs: Any) -> nn.Module:
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
    for known, cls in ACT_MODULES.items():
        if isinstance(act, type) and issubclass(act, cls):
            return known
    raise SpecError("act_layer", name, "has no counterpart among the spec's activations", tuple(vocab.ACTS))


def _with_hidden(spec: AttnSpec, changes: dict[str, Any]) -> AttnSpec:
    if spec.stages:
        return dataclasses.replace(spec, stages=tuple(_with_hidden(s, changes) for s in spec.stages))
    return spec.replace(**changes) if has_hidden(spec) else spec


AttnSpec.layer = property(SpecLayer, doc=SpecLayer.__doc__)  # spec.layer, for timm's attn_layer=
