"""The checks every model of the zoo tests must pass after insertion (shared by torchvision and timm)."""

from __future__ import annotations

import warnings

import torch
import torch.fx as fx
from torch import nn

from dynattn import AttnSpec
from dynattn.errors import ModelError
from graph_passes import LeafTracer, insert_attention, original_class, report


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return next(iter(out.values()))
    return out[0]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@torch.no_grad()
def _nontrivial(model: nn.Module) -> None:
    """Give parameters that start at exactly zero (ViT's head) small random values, so that
    comparing outputs compares something."""
    g = torch.Generator().manual_seed(1)
    for p in model.parameters():
        if p.numel() and not p.any():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def check_model(model: nn.Module, size: int, *, cbam_tol: float = 1e-5, dyn_tol: float = 1e-4,
                convert: bool = True, convert_where: str | None = None) -> dict:
    """Insert identity CBAM and upcycled DyConv into ``model``; assert the promises; return figures."""
    model.eval()
    _nontrivial(model)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = _first_tensor(model(x))

    out = insert_attention(model, AttnSpec.cbam(init="identity"))
    rep = report(out)
    assert rep.records, "no sites found"
    # the model stays the user's model: its class, and every submodule's
    assert type(out) is type(model) or original_class(out) is type(model)
    for name, sub in model.named_modules():
        assert original_class(out.get_submodule(name)) is type(sub), f"{name} lost its class"
    sd = out.state_dict()
    assert set(snapshot) <= set(sd), f"lost keys: {sorted(set(snapshot) - set(sd))[:5]}"
    with torch.no_grad():
        got = _first_tensor(out(x))
    cbam_err = _rel_err(got, ref)
    assert cbam_err <= cbam_tol, f"identity CBAM changed the output: {cbam_err:.2e}"
    # the result traces again (with the leaves the pass needed, if it needed any)
    traced = fx.GraphModule(out, LeafTracer(rep.leaves).trace(out)) if rep.leaves else fx.symbolic_trace(out)
    with torch.no_grad():
        assert _rel_err(_first_tensor(traced(x)), got) <= 1e-6
    out.train()
    _first_tensor(out(x)).float().sum().backward()

    dyn_err = None
    if convert:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:  # DyConv's own placement (every conv but the stem) ...
                dyn = insert_attention(model, AttnSpec.dyconv(), where=convert_where)
            except ModelError as err:  # ... leaves nothing where the stem is the only conv (a ViT's patch embedding)
                if convert_where is not None or "no conv that the default placement" not in str(err):
                    raise
                dyn = insert_attention(model, AttnSpec.dyconv(), where="conv")
        with torch.no_grad():
            dyn_err = _rel_err(_first_tensor(dyn.eval()(x)), ref)
        assert dyn_err <= dyn_tol, f"upcycled dyconv changed the output: {dyn_err:.2e}"

    current = model.state_dict()  # the caller's model is untouched
    assert set(current) == set(snapshot) and all(torch.equal(current[k], v) for k, v in snapshot.items())
    return {"sites": len(rep.records), "kinds": sorted({r.rule for r in rep.records}), "cbam_err": cbam_err,
            "dyn_err": dyn_err, "rewritten": len(rep.rewritten), "leaves": len(rep.leaves)}
