"""unshare_modules: every call of a parameter-free module gets its own instance; outputs, classes and
state_dict keys unchanged; weights shared on purpose stay shared."""

import copy
import pickle

import pytest
import torch
import torchvision
from torch import nn

from graph_passes import is_rewritten, original_class, unshare_modules


def _calls_per_module(model, x):
    counts = {}
    hooks = [m.register_forward_hook(lambda m, i, o: counts.__setitem__(id(m), counts.get(id(m), 0) + 1))
             for m in model.modules()]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return counts


def test_torchvision_resnet_calls_each_relu_once():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(2, 3, 32, 32)
    assert max(_calls_per_module(model, x).values()) == 2  # BasicBlock's relu, twice
    out = unshare_modules(model)
    assert max(_calls_per_module(out, x).values()) == 1
    with torch.no_grad():
        assert torch.equal(out(x), model(x))
    assert list(out.state_dict()) == list(model.state_dict())
    block = out.layer1[0]
    assert is_rewritten(block) and original_class(block) is torchvision.models.resnet.BasicBlock
    assert isinstance(block.relu_2, nn.ReLU) and block.relu_2 is not block.relu
    assert not is_rewritten(model.layer1[0]) and not hasattr(model.layer1[0], "relu_2")  # the caller's is untouched
    assert type(out) is type(model)  # the root calls its relu once: not rewritten


def test_train_mode_copies_and_pickles():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5)
    out = unshare_modules(model)
    x = torch.randn(4, 3, 32, 32)
    out.train()
    loss = out(x).square().mean()
    loss.backward()
    assert out.conv1.weight.grad is not None
    for clone in (copy.deepcopy(out), pickle.loads(pickle.dumps(out))):
        clone.eval()
        out.eval()
        with torch.no_grad():
            assert torch.equal(clone(x), out(x))
        assert max(_calls_per_module(clone, x).values()) == 1


class _Shared(nn.Module):
    """One activation object under two names and called three times, and a Linear shared on purpose."""

    def __init__(self):
        super().__init__()
        self.act = nn.GELU()
        self.head = nn.Sequential(nn.Linear(8, 8), self.act)
        self.tied = nn.Linear(8, 8)

    def forward(self, x):
        x = self.act(self.tied(x))
        x = self.act(self.tied(x))
        return self.act(self.head(x))


def test_names_and_repeated_calls_split_shared_weights_stay():
    torch.manual_seed(0)
    model = _Shared()
    out = unshare_modules(model)
    x = torch.randn(3, 8)
    assert torch.equal(out(x), model(x))
    assert out.head[1] is not out.act  # the second name got its own object
    acts = [m for m in out.modules() if isinstance(m, nn.GELU)]
    assert len(acts) == 4 and len({id(m) for m in acts}) == 4
    assert max(_calls_per_module(out, x).values()) == 2  # only the tied Linear, on purpose
    assert list(out.state_dict()) == list(model.state_dict())


def test_inplace_and_bad_arguments():
    model = _Shared()
    assert unshare_modules(model, inplace=True) is model and hasattr(model, "act_2")
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        unshare_modules("resnet18")
    with pytest.raises(TypeError, match="inplace"):
        unshare_modules(model, inplace=1)


class _Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x):
        if x.sum() > 0:  # data-dependent: fx cannot trace this forward
            return self.act(x)
        return self.act(-x)


def test_a_block_that_does_not_trace_is_named_in_a_warning():
    model = nn.Sequential(nn.Linear(4, 4), _Branches())
    with pytest.warns(UserWarning, match=r"1 block\(s\) do not trace.*\b1\b"):
        out = unshare_modules(model)
    x = torch.randn(2, 4)
    assert torch.equal(out(x), model(x))
