"""The kernel target: replace selected ``nn.Conv2d`` modules by upcycled ``DynamicConv2d``s.

No tracing is needed: the convs are found by name. A conv's output is unchanged at the
moment it is replaced (see ``DynamicConv2d.from_conv``), and its state_dict keys
(``weight``, ``bias``) keep their names; a checkpoint of the original model loads into the
converted one with ``strict=False`` (each expert takes the conv's weight) and only the
routers' keys missing.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from torch import nn

from dynattn import AttnSpec, ModelError, SpecError, build, leaf_modules

from .report import InsertionReport, SiteRecord, attach
from .sites import _glob, _regex

__all__ = ["convert_convs", "convertible_convs"]


def _inside_dynattn(name: str, owners: list[str]) -> bool:
    return any(name == o or name.startswith(o + ".") for o in owners)


def convertible_convs(model: nn.Module) -> tuple[list[tuple[str, nn.Conv2d]], list[tuple[str, str]]]:
    """(plain convs by name, [(name, class) of Conv2d subclasses whose forward differs])."""
    owners = [n for n, m in model.named_modules() if isinstance(m, leaf_modules())]
    plain, skipped = [], []
    for name, m in model.named_modules():
        if not isinstance(m, nn.Conv2d) or _inside_dynattn(name, owners):
            continue
        if type(m).forward is nn.Conv2d.forward:
            plain.append((name, m))
        else:
            skipped.append((name, type(m).__name__))
    return plain, skipped


def _select(convs: list[tuple[str, nn.Conv2d]], where: Any) -> list[tuple[str, nn.Conv2d]]:
    items = list(where) if isinstance(where, (list, tuple)) else [where]
    chosen: dict[str, nn.Conv2d] = {}
    for item in items:
        if item is None:
            found = convs
        elif isinstance(item, str):
            head, sep, tail = item.partition(":")
            if head in ("residual", "stage") and (not sep or tail):
                raise SpecError("where", item, "a kernel-target spec replaces convs; the residual and stage "
                                "strategies place feature attention",
                                ("'conv'", "'conv:<glob>'", "a glob", "'re:<regex>'", "a callable"))
            if item == "conv":
                found = convs
            else:
                test = _regex(tail, item) if head == "re" and sep else _glob(tail if head == "conv" and sep else item)
                found = [(n, m) for n, m in convs if test(n)]
        elif callable(item):
            found = [(n, m) for n, m in convs if item(None, m)]
        else:
            raise SpecError("where", item, "is not a selector", ("'conv'", "a glob", "'re:<regex>'",
                            "a callable (node, module) -> bool", "a list of these"))
        if not found:
            raise SpecError("where", item, "matches no plain nn.Conv2d",
                            hint="graph_passes.list_sites(model, spec) lists the convs that can be replaced")
        for n, m in found:
            chosen.setdefault(n, m)
    order = {n: i for i, (n, _) in enumerate(convs)}
    return sorted(chosen.items(), key=lambda item: order[item[0]])


def plan_conversion(model: nn.Module, spec: AttnSpec, where: Any) -> list[tuple[str, nn.Conv2d]]:
    convs, skipped = convertible_convs(model)
    if skipped:
        names = ", ".join(f"{n} ({cls})" for n, cls in skipped[:8]) + (" ..." if len(skipped) > 8 else "")
        warnings.warn(f"skipping {len(skipped)} Conv2d subclass(es) whose forward differs from nn.Conv2d's, "
                      f"which an upcycled DynamicConv2d would not reproduce: {names}", stacklevel=3)
    if not convs:
        raise ModelError("model", type(model).__name__,
                        "has no plain nn.Conv2d to replace with a DynamicConv2d"
                        + (f" ({len(skipped)} Conv2d subclasses were skipped)" if skipped else ""),
                        hint="a kernel-target spec converts convs; use a feature target to insert attention")
    return _select(convs, where)


def convert_convs(model: nn.Module, spec: AttnSpec, where: Any, inplace: bool,
                  params_before: int) -> nn.Module:
    work = model if inplace else copy.deepcopy(model)
    chosen = plan_conversion(work, spec, where)
    new = {name: build(spec, conv=conv) for name, conv in chosen}  # may raise: nothing changed yet
    replaced = {id(conv): new[name] for name, conv in chosen}
    for parent in work.modules():  # every reference to a replaced conv (a module may be shared)
        for key, child in list(parent._modules.items()):
            if child is not None and id(child) in replaced:
                parent._modules[key] = replaced[id(child)]
    records = []
    for name, conv in chosen:
        added = sum(p.numel() for p in new[name].parameters()) - sum(p.numel() for p in conv.parameters())
        records.append(SiteRecord(name, name, spec.name or "kernel", conv.out_channels, added, "conv"))
    attach(work, InsertionReport(type(model).__name__, tuple(records), params_before))
    return work

