"""Move weights between timm's attention modules and dynattn's.

``load_timm_weights(module, timm_module)`` copies a trained ``timm.layers`` SE, ECA or
CBAM module into the module ``build`` made from the matching ``flavor="timm"`` preset, so
a checkpoint trained with timm keeps its numerics. timm is not imported: the mapping works
on state_dict keys, and shapes are checked before anything is copied.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import SpecError

__all__ = ["load_timm_weights", "TIMM_KEY_MAPS"]

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
}


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
        raise SpecError("timm_module", kind, "no weight mapping for this timm class", tuple(TIMM_KEY_MAPS))
    mapping = TIMM_KEY_MAPS[kind]
    target = module.state_dict()
    pending: list[tuple[str, torch.Tensor]] = []
    for key, value in timm_module.state_dict().items():
        new_key = _rename(key, mapping)
        if new_key is None or new_key not in target:
            raise SpecError("timm_module", key, f"has no counterpart in the dynattn module ({kind} mapped to "
                            f"{new_key!r})", hint="build the matching preset with flavor='timm'")
        if target[new_key].numel() != value.numel():
            raise SpecError("timm_module", key, f"has shape {tuple(value.shape)} but {new_key} has "
                            f"{tuple(target[new_key].shape)}",
                            hint="build with the same channels and flavor='timm'")
        pending.append((new_key, value.reshape(target[new_key].shape)))
    missing = set(target) - {k for k, _ in pending}
    if missing:
        raise SpecError("module", sorted(missing)[0], f"is not set by {kind}'s weights",
                        hint="build the matching preset with flavor='timm'")
    module.load_state_dict(dict(pending))
    return module
