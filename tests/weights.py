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


def assert_equivalent(ours: nn.Module, ref: nn.Module, mapping: dict[str, str], input_shape: tuple[int, ...], *,
                      seed: int, steps: int = 2, randomize: bool = False, view=None, tol: float = 1e-5) -> None:
    """``ours`` equals ``ref`` after copying its weights by ``mapping`` (with every BatchNorm given non-trivial
    statistics, and with ``randomize`` every parameter drawn at random first), on ``steps`` inputs of
    ``input_shape`` in train and then eval mode; the train-mode forwards update the running statistics alike.
    ``view`` maps an input to the layout ``ref`` takes (its output is viewed back as the input)."""
    torch.manual_seed(seed)
    if randomize:
        randomize_parameters(ref)
    randomize_norms(ref)
    copy_weights(ours, ref, mapping)
    for train in (True, False):
        ours.train(train)
        ref.train(train)
        for _ in range(steps):
            x = torch.randn(*input_shape) * 2
            expected = ref(x) if view is None else ref(view(x)).view_as(x)
            got = ours(x)
            assert got.shape == x.shape
            torch.testing.assert_close(got, expected, atol=tol, rtol=0)
    ours_state = ours.state_dict()
    for key, value in ref.state_dict().items():
        if "running" in key:
            prefix = next(s for s in mapping if key.startswith(s))
            torch.testing.assert_close(ours_state[mapping[prefix] + key[len(prefix):]], value, atol=tol, rtol=0)
