"""DCD (dynamic convolution decomposition, ``AttnSpec.dcd()``) against the official code (tests/reference/dcd.py,
written from liyunsheng13/dcd's ``conv_dy`` / ``conv_basic_dy``), with the official state_dict loaded through
``dynattn.interop.load_dcd_weights``: outputs, gradients and BatchNorm statistics; upcycling; the ways a dynamic
conv is made; ranks; threads; the spec's errors."""

import concurrent.futures
import copy
import pickle

import pytest
import torch
import torchvision
from torch import nn

import dynattn
from dynattn import AttnSpec, DynamicConv1d, DynamicConv2d, DynamicConv3d, SpecError, build
from dynattn.interop import load_dcd_weights
from graph_passes import insert_attention, report
from tests.reference.dcd import DCDReference
from tests.weights import randomize_norms, randomize_parameters

#: (in, out, kernel, stride, padding, grid): conv_dy's 1x1 and 3x3 at odd channel counts and stride 2, and
#: conv_basic_dy's 3x3 (grid 2).
CASES = [(33, 47, 3, 2, 1, 1), (33, 47, 1, 1, 0, 1), (64, 64, 3, 1, 1, 1), (47, 33, 1, 2, 0, 1),
         (33, 47, 3, 2, 1, 2), (64, 64, 3, 1, 1, 2), (8, 12, 3, 1, 1, 1)]


def _pair(cin, cout, k, stride, padding, grid, dtype=torch.float32, seed=0):
    """The official layer with random weights and norm statistics, and ours with its state_dict loaded."""
    torch.manual_seed(seed)
    ref = DCDReference(cin, cout, k, stride, padding, grid=grid).to(dtype)
    randomize_parameters(ref, seed=seed)
    randomize_norms(ref, seed=seed)
    ours = DynamicConv2d(cin, cout, k, stride, padding, bias=False, spec=AttnSpec.dcd(pool_grid=grid), dtype=dtype)
    load_dcd_weights(ours, ref.state_dict())
    return ours, ref


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_equals_the_official_layer_in_train_and_eval(case):
    cin = case[0]
    ours, ref = _pair(*case)
    for train in (True, False):
        ours.train(train)
        ref.train(train)
        for _ in range(2):
            x = torch.randn(3, cin, 11, 9) * 2
            torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5, msg=lambda m, t=train: f"train={t}: {m}")
        if train:  # the train-mode forwards moved both layers' BatchNorm statistics alike
            for name in ("bn1", "bn2"):
                for stat in ("running_mean", "running_var", "num_batches_tracked"):
                    torch.testing.assert_close(getattr(getattr(ours.latent, name), stat),
                                               getattr(getattr(ref, name), stat), atol=1e-6, rtol=0)


@pytest.mark.parametrize("case", [CASES[0], CASES[4]], ids=["conv_dy", "conv_basic_dy"])
def test_gradients_equal_the_official_layer_in_float64(case):
    ours, ref = _pair(*case, dtype=torch.float64)
    x = torch.randn(3, case[0], 10, 7, dtype=torch.float64)
    grad = torch.randn_like(ref(x))
    xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    (ours(xo) * grad).sum().backward()
    (ref(xr) * grad).sum().backward()
    torch.testing.assert_close(xo.grad, xr.grad, atol=1e-10, rtol=1e-10)
    ref_grads = {k: p.grad for k, p in ref.named_parameters()}
    torch.testing.assert_close(ours.weight.grad, ref_grads["conv.weight"], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ours.latent.q.weight.grad, ref_grads["q.weight"], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ours.router.excite.act.fc.weight.grad, ref_grads["fc.1.fc.0.weight"], atol=1e-10,
                               rtol=1e-10)
    head = torch.cat([ref_grads["fc_scale.weight"], ref_grads["fc_phi.weight"]])
    torch.testing.assert_close(ours.router.excite.fc2.weight.grad, head, atol=1e-10, rtol=1e-10)


def test_a_train_step_keeps_the_layers_equal():
    ours, ref = _pair(33, 47, 3, 2, 1, 1)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (ours, ref)]
    x = torch.randn(4, 33, 9, 9)
    for module, opt in zip((ours, ref), opts):
        module(x).square().mean().backward()
        opt.step()
    ours.eval()
    ref.eval()
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


def test_loading_checks_before_copying():
    ours, ref = _pair(33, 47, 3, 2, 1, 1)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    wrong = DCDReference(33, 40, 3, 2, 1).state_dict()
    with pytest.raises(SpecError, match=r"fc_scale|conv\.weight|shape"):
        load_dcd_weights(ours, wrong)
    for key, value in ours.state_dict().items():
        assert torch.equal(value, before[key]), key
    with pytest.raises(SpecError, match=r"not a dynamic conv built from AttnSpec\.dcd"):
        load_dcd_weights(DynamicConv2d(33, 47, 3, padding=1, spec="dyconv"), ref.state_dict())
    with pytest.raises(SpecError, match=r"fc_phi\.weight"):
        load_dcd_weights(ours, {k: v for k, v in ref.state_dict().items() if k != "fc_phi.weight"})


@pytest.mark.parametrize("grid", [1, 2])
@pytest.mark.parametrize("train", [False, True])
def test_from_conv_gives_the_static_conv(grid, train):
    torch.manual_seed(1)
    conv = nn.Conv2d(33, 47, 3, stride=2, padding=1).train(train)
    dyn = DynamicConv2d.from_conv(conv, AttnSpec.dcd(pool_grid=grid))
    x = torch.randn(3, 33, 12, 10)
    torch.testing.assert_close(dyn(x), conv(x), atol=1e-5, rtol=0)
    assert dyn.training == train and dyn.spec.init == "identity"
    same = build(AttnSpec.dcd(pool_grid=grid), conv=conv)  # build upcycles too
    torch.testing.assert_close(same(x), conv(x), atol=1e-5, rtol=0)


def test_upcycled_layer_learns_a_dynamic_kernel():
    """From the static conv, one step moves the latent path (p from zero) and Lambda (its mix from zero)."""
    torch.manual_seed(2)
    dyn = DynamicConv2d.from_conv(nn.Conv2d(16, 16, 3, padding=1), "dcd")
    opt = torch.optim.SGD(dyn.parameters(), lr=0.5)
    dyn(torch.randn(4, 16, 8, 8)).square().mean().backward()
    opt.step()
    assert dyn.latent.p.weight.abs().sum() > 0 and dyn.router.out_mix.item() != 0


def test_a_conv_checkpoint_loads_into_dcd():
    conv = nn.Conv2d(24, 32, 3, padding=1)
    dyn = DynamicConv2d(24, 32, 3, padding=1, spec="dcd").eval()
    result = dyn.load_state_dict(conv.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert {k.split(".")[0] for k in result.missing_keys} == {"router", "latent"}
    assert torch.equal(dyn.weight, conv.weight) and torch.equal(dyn.bias[0], conv.bias)


@pytest.mark.parametrize(("cls", "conv", "shape"), [(DynamicConv1d, nn.Conv1d(12, 20, 5, 2, 2), (3, 12, 17)),
                                                    (DynamicConv3d, nn.Conv3d(12, 20, 3, 1, 1), (3, 12, 5, 6, 4))])
@pytest.mark.parametrize("grid", [1, 2])
def test_other_ranks(cls, conv, shape, grid):
    """The official code is 2-D; its 1x1 projections and norms are the same at any rank."""
    dyn = cls.from_conv(conv, AttnSpec.dcd(pool_grid=grid))
    x = torch.randn(*shape)
    torch.testing.assert_close(dyn(x), conv(x), atol=1e-5, rtol=0)
    assert dyn.router.latent_dim == int((12 * grid ** (len(shape) - 2)) ** 0.5)
    fresh = cls(12, 20, conv.kernel_size, conv.stride, conv.padding, spec=AttnSpec.dcd(pool_grid=grid))
    fresh(x).sum().backward()  # trains
    assert fresh.latent.q.weight.grad is not None and fresh.router.excite.fc1.weight.grad is not None


def test_resnet18_conversion_trains_and_is_far_smaller_than_dyconv():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    expected = model(x)
    dcd = insert_attention(model, AttnSpec.dcd(), example_inputs=x)
    torch.testing.assert_close(dcd.eval()(x), expected, atol=1e-4, rtol=1e-4)  # upcycled: the same network
    assert sum(isinstance(m, DynamicConv2d) for m in dcd.modules()) == len(report(dcd).records) == 20
    dcd.train()
    dcd(x).sum().backward()
    assert all(p.grad is not None for n, p in dcd.named_parameters() if ".latent.p." in n)
    dyconv = insert_attention(model, AttnSpec.dyconv(), example_inputs=x)
    params = [sum(p.numel() for p in m.parameters()) for m in (model, dcd, dyconv)]
    assert params[0] < params[1] < params[0] + (params[2] - params[0]) / 4


def test_threads_get_the_serial_outputs():
    ours, _ = _pair(33, 47, 3, 2, 1, 1)
    ours.eval()
    inputs = [torch.randn(1 + i % 3, 33, 9, 7, generator=torch.Generator().manual_seed(i)) for i in range(16)]
    with torch.no_grad():
        serial = [ours(x) for x in inputs]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            threaded = list(pool.map(ours, inputs))
    for got, want in zip(threaded, serial):
        torch.testing.assert_close(got, want)


def test_preset_is_listed_and_spec_errors_name_the_field():
    assert "dcd" in dynattn.list_presets()
    assert dynattn.get_spec("dcd", pool_grid=2) == AttnSpec.dcd(pool_grid=2)
    cases = [
        (lambda: AttnSpec.dcd(latent_dim=0), "AttnSpec.latent_dim=0"),
        (lambda: AttnSpec.dcd().replace(scale_gate="softmax"), "AttnSpec.scale_gate='softmax'"),
        (lambda: AttnSpec.dcd().replace(pool_grid=2, pool=("max",)), "AttnSpec.pool=('max',)"),
        (lambda: AttnSpec.se().replace(act="self_gate", excite="conv1d"), "AttnSpec.act='self_gate'"),
        (lambda: AttnSpec.dyconv().replace(latent_dim=4), "AttnSpec.latent_dim=4"),
        (lambda: AttnSpec.se().replace(pool_grid=2), "AttnSpec.pool_grid=2"),
        (lambda: AttnSpec(target="kernel", heads=("kernel", "latnt")), "did you mean 'latent'"),
        (lambda: DynamicConv2d(16, 16, 3, padding=0, spec="dcd"), "DynamicConv2d.padding=0"),
    ]
    for make, text in cases:
        with pytest.raises(SpecError) as err:
            make()
        assert text in str(err.value), str(err.value)


def test_pickle_and_deepcopy_keep_the_layer():
    ours, _ = _pair(33, 47, 3, 2, 1, 2)
    ours.eval()
    x = torch.randn(2, 33, 9, 7)
    for clone in (pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours)):
        torch.testing.assert_close(clone(x), ours(x))
        assert clone.router.latent_dim == ours.router.latent_dim == 11  # int(sqrt(4 * 33))


@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 7, 9), (2, 3, 5, 6, 7), (2, 3, 1, 1)])
@pytest.mark.parametrize("grid", [2, 3])
def test_grid_means_for_the_onnx_exporter_equal_adaptive_pooling(shape, grid):
    """The einsum form the TorchScript-based ONNX exporter runs (overlapping cells where g does not divide n)."""
    from dynattn.compiler import ops

    x = torch.randn(*shape, dtype=torch.float64)
    cells = [ops._cell_means(n, grid, x) for n in x.shape[2:]]
    torch.testing.assert_close(torch.einsum(ops._GRID_EINSUM[x.dim() - 2], x, *cells), ops.grid_mean(x, grid))
