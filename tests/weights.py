"""Copy a reference module's weights into a dynattn module by key prefixes, strictly."""

import torch
from torch import nn


@torch.no_grad()
def copy_weights(dst: nn.Module, src: nn.Module, prefixes: dict[str, str]) -> None:
    """Every key of both state dicts must be matched; shapes may differ only by a reshape."""
    target = dst.state_dict()
    done = set()
    new = {}
    for key, value in src.state_dict().items():
        for s, d in prefixes.items():
            if key.startswith(s):
                new_key = d + key[len(s):]
                break
        else:
            raise KeyError(f"reference key {key!r} has no mapping")
        assert new_key in target, f"{key} -> {new_key} not in {sorted(target)}"
        assert target[new_key].numel() == value.numel(), (key, new_key)
        new[new_key] = value.reshape(target[new_key].shape)
        done.add(new_key)
    assert done == set(target), f"unset keys: {sorted(set(target) - done)}"
    dst.load_state_dict(new)


@torch.no_grad()
def randomize_norms(*modules: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial affine parameters and running stats (same in each module)."""
    for m in modules:
        g = torch.Generator().manual_seed(seed)
        for bn in (x for x in m.modules() if isinstance(x, nn.modules.batchnorm._BatchNorm)):
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(bn.bias.shape, generator=g) * 0.1)
            bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g) * 0.1)
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)


@torch.no_grad()
def randomize_parameters(*modules: nn.Module, seed: int = 0) -> None:
    """Replace every parameter by a random value on the scale of a trained layer's (weights with a standard
    deviation of 1/sqrt(fan in), biases and norm shifts of 0.1, norm scales in [0.5, 1.5]), so zero- or
    one-initialised layers (global context's last layer, SRM's weights) cannot hide a wrong mapping."""
    norms = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
    for m in modules:
        g = torch.Generator().manual_seed(seed)
        for module in m.modules():
            for name, p in module.named_parameters(recurse=False):
                if isinstance(module, norms) and name == "weight":
                    p.copy_(torch.rand(p.shape, generator=g) + 0.5)
                elif p.dim() >= 2:
                    p.copy_(torch.randn(p.shape, generator=g) * (p[0].numel() ** -0.5))
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
