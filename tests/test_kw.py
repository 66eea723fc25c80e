"""KernelWarehouse (``AttnSpec.kw()``) against the official code (tests/reference/kw.py, written from
OSVAI/KernelWarehouse's ``KWconvNd`` / ``Warehouse_Manager``), with the official weights loaded through
``dynattn.interop.load_kw_weights``: outputs in train and eval at the official temperatures, gradients, the
temperature initialisation and the warehouse's sizes; warehouses shared by several convs; upcycling; ResNet-18
with one warehouse per stage (the official budgets' parameter counts); the spec's errors."""

import copy
import pickle

import pytest
import torch
import torchvision
from torch import nn

import dynattn
from dynattn import AttnSpec, DynamicConv1d, DynamicConv2d, DynamicConv3d, SpecError, build
from dynattn.dynamic_conv.warehouse import Warehouse, plan_warehouse
from dynattn.interop import load_kw_weights
from dynattn.temperature import TemperatureSchedule, set_temperature
from graph_passes import insert_attention, report
from tests.reference.kw import KWNet
from tests.weights import randomize_norms, randomize_parameters

#: (in, out, kernel, stride, padding, groups, bias, budget, cell ratio): odd channel counts, 1x1 and 5x5 kernels,
#: stride 2, groups, and the official budgets 1x, 4x, 2x, 1/2x, 1/4x; on 11x9 maps the convs with fewer output
#: positions than inputs run by kernel position (mixing.position_kernels_conv), the others with the batch folded
#: into the conv's groups, as the official code.
CASES = [(33, 47, 3, 2, 1, 1, True, 1, 1), (33, 47, 1, 1, 0, 1, False, 4, 1), (64, 64, 3, 1, 1, 1, False, 0.5, 0.5),
         (32, 48, 3, 1, 1, 2, True, 1, 1), (64, 32, 3, 2, 1, 1, False, 0.25, 0.5), (8, 12, 5, 1, 2, 1, True, 2, 1)]
DIMS = {1: (DynamicConv1d, "conv1d"), 2: (DynamicConv2d, "conv2d"), 3: (DynamicConv3d, "conv3d")}


def _pair(layers, budget=1, ratio=1, dims=2, dtype=torch.float32, seed=0):
    """The official convs of one warehouse with random weights and norm statistics, and ours sharing one warehouse
    with their state_dicts and cells loaded. ``layers``: (in, out, kernel, stride, padding, groups, bias) each."""
    torch.manual_seed(seed)
    ref = KWNet([((i, o, k), dict(stride=s, padding=p, groups=g, bias=b), "stage0") for i, o, k, s, p, g, b in layers],
                layer_type=DIMS[dims][1], cell_num_ratio=budget, cell_ratio=ratio).to(dtype)
    randomize_parameters(ref, seed=seed)
    randomize_norms(ref, seed=seed)
    spec = AttnSpec.kw(budget, cell_ratio=ratio)
    warehouse = Warehouse(plan_warehouse(spec, [(o, i // g, *(k,) * dims) for i, o, k, _, _, g, _ in layers]),
                          dtype=dtype)
    ours = nn.ModuleList(
        DIMS[dims][0](i, o, k, s, p, groups=g, bias=b, spec=spec, warehouse=(warehouse, n), dtype=dtype)
        for n, (i, o, k, s, p, g, b) in enumerate(layers))
    cells = ref.warehouse_manager.take_cell(0)
    for mine, theirs in zip(ours, ref.convs):
        load_kw_weights(mine, theirs.state_dict(), cells)
    return ours, ref


def _set_temperature(ours, ref, t):
    ref.net_update_temperature(t)
    for layer in ours:
        layer.temperature = t


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_one_conv_equals_the_official_layer_in_train_and_eval(case):
    (ours,), ref = _pair([case[:7]], budget=case[7], ratio=case[8])
    assert torch.equal(ours.router.cell_one_hot, ref.convs[0].attention.temp_bias)  # init_temperature
    assert ours.warehouse.cells.shape == ref.warehouse_manager.weights[0].shape
    for t in (1.0, 0.3, 0.0):
        _set_temperature([ours], ref, t)
        for train in (True, False):
            ours.train(train)
            ref.train(train)
            x = torch.randn(3, case[0], 11, 9) * 2
            torch.testing.assert_close(ours(x), ref.convs[0](x), atol=1e-5, rtol=1e-5,
                                       msg=lambda m, t=t, train=train: f"t={t}, train={train}: {m}")
    norm, theirs = ours.router.excite.bn, ref.convs[0].attention.norm1  # train forwards moved both alike
    for stat in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(norm, stat), getattr(theirs, stat), atol=1e-6, rtol=0)


def test_a_shared_warehouse_equals_the_official_manager():
    """Three convs of one warehouse (ResNet's stage 0: 3x3 convs, a strided 3x3 to more channels, its 1x1
    shortcut): each takes its range of cells, and every conv mixes all of them."""
    layers = [(16, 16, 3, 1, 1, 1, False), (16, 32, 3, 2, 1, 1, False), (16, 32, 1, 2, 0, 1, False)]
    for budget, ratio in ((1, 1), (4, 1), (0.5, 0.5)):
        ours, ref = _pair(layers, budget=budget, ratio=ratio)
        assert ours[0].warehouse is ours[2].warehouse
        assert ours[0].warehouse.plan.starts == tuple(
            int(torch.nonzero(c.attention.temp_bias.view(-1, c.attention.kw_planes_per_mixture)[0])[0])
            for c in ref.convs)
        _set_temperature(ours, ref, 0.4)
        x = torch.randn(2, 16, 8, 8)
        for mine, theirs in zip(ours, ref.convs):
            torch.testing.assert_close(mine(x), theirs(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dims", [1, 3])
def test_other_ranks_equal_the_official_kwconv1d_and_3d(dims):
    (ours,), ref = _pair([(12, 20, 3, 2, 1, 1, True)], budget=2, dims=dims)
    _set_temperature([ours], ref, 0.5)
    x = torch.randn(3, 12, *(7, 6, 5)[:dims] if dims == 3 else (17,))
    torch.testing.assert_close(ours(x), ref.convs[0](x), atol=1e-5, rtol=1e-5)


def test_loading_checks_before_copying():
    (ours,), ref = _pair([(33, 47, 3, 2, 1, 1, True)])
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    _, wrong = _pair([(33, 40, 3, 2, 1, 1, True)])
    with pytest.raises(SpecError, match="shape"):
        load_kw_weights(ours, wrong.convs[0].state_dict(), wrong.warehouse_manager.take_cell(0))
    with pytest.raises(SpecError, match="not a key of KernelWarehouse's KWconvNd"):
        load_kw_weights(ours, {**ref.convs[0].state_dict(), "conv.weight": torch.zeros(1)})
    for key, value in ours.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize(("conv", "shape"), [(nn.Conv1d(12, 20, 5, 2, 2), (3, 12, 17)),
                                           (nn.Conv3d(12, 20, 3, 1, 1, padding_mode="circular"), (3, 12, 5, 6, 4))])
def test_other_ranks_upcycle(conv, shape):
    dyn = build(AttnSpec.kw(2), conv=conv)
    x = torch.randn(*shape)
    torch.testing.assert_close(dyn(x), conv(x), atol=1e-5, rtol=0)
    assert type(dyn) is {1: DynamicConv1d, 3: DynamicConv3d}[len(shape) - 2]


def test_gradients_equal_the_official_layers_in_float64():
    layers = [(33, 47, 3, 2, 1, 1, True), (33, 47, 1, 2, 0, 1, False)]
    ours, ref = _pair(layers, budget=2, dtype=torch.float64)
    _set_temperature(ours, ref, 0.3)
    x = torch.randn(3, 33, 10, 7, dtype=torch.float64)
    grad = torch.randn(3, 47, 5, 4, dtype=torch.float64)
    xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    sum((m(xo) * grad).sum() for m in ours).backward()
    sum((m(xr) * grad).sum() for m in ref.convs).backward()
    close = dict(atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(xo.grad, xr.grad, **close)
    torch.testing.assert_close(ours[0].warehouse.cells.grad, ref.warehouse_manager.weights[0].grad, **close)
    for mine, theirs in zip(ours, ref.convs):
        torch.testing.assert_close(mine.router.excite.fc2.weight.grad, theirs.attention.fc2.weight.grad, **close)
        torch.testing.assert_close(mine.router.excite.fc1.weight.grad, theirs.attention.fc1.weight.grad, **close)
    torch.testing.assert_close(ours[0].bias.grad[0], ref.convs[0].bias.grad, **close)


def test_initialisation_follows_the_official_one():
    """Each conv's cells kaiming-normal over its cells' output channels (std sqrt(2 / (n c_out))), the router's
    linear layers kaiming-normal (fan_out), zero biases."""
    torch.manual_seed(0)
    layer = DynamicConv2d(64, 64, 3, padding=1, spec=AttnSpec.kw(4))
    ref = KWNet([((64, 64, 3), dict(padding=1, bias=False), "a")], cell_num_ratio=4)
    for ours, theirs in ((layer.warehouse.cells, ref.warehouse_manager.weights[0]),
                         (layer.router.excite.fc2.weight, ref.convs[0].attention.fc2.weight)):
        assert ours.shape == theirs.shape
        assert abs(ours.std().item() / theirs.std().item() - 1) < 0.05
    assert not layer.router.excite.fc2.bias.any() and not layer.router.excite.fc1.bias.any()


@pytest.mark.parametrize("budget", [1, 4])
@pytest.mark.parametrize("train", [False, True])
def test_from_conv_gives_the_static_conv_at_temperature_one(budget, train):
    torch.manual_seed(1)
    conv = nn.Conv2d(33, 47, 3, stride=2, padding=1).train(train)
    dyn = DynamicConv2d.from_conv(conv, AttnSpec.kw(budget))
    x = torch.randn(3, 33, 12, 10)
    torch.testing.assert_close(dyn(x), conv(x), atol=1e-5, rtol=0)
    assert dyn.training == train and dyn.temperature == 1.0
    torch.testing.assert_close(build(AttnSpec.kw(budget), conv=conv)(x), conv(x), atol=1e-5, rtol=0)
    dyn.temperature = 0.5  # the gap: as the temperature anneals, the learnt attention mixes other cells in
    assert (dyn(x) - conv(x)).abs().max() > 1e-3


def test_from_conv_below_1x_starts_with_the_zero_cells_pieces_at_zero():
    """At 1/2x the temperature initialisation gives half of the kernel's pieces the zero cell: the upcycled
    layer is the conv with those pieces zeroed (the documented gap)."""
    torch.manual_seed(2)
    conv = nn.Conv2d(64, 64, 3, padding=1, bias=False)
    dyn = DynamicConv2d.from_conv(conv, AttnSpec.kw(0.5)).eval()
    plan, co, ci = dyn.warehouse.plan, *dyn.warehouse.plan.cell_shape[:2]
    spatial, go, gi = plan.grid(0)
    kept = torch.tensor([c is not None for c in plan.own_cells(0)], dtype=conv.weight.dtype)
    mask = kept.view(spatial, go, 1, gi, 1).expand(spatial, go, co, gi, ci).permute(1, 2, 3, 4, 0)
    masked = nn.Conv2d(64, 64, 3, padding=1, bias=False)
    with torch.no_grad():
        masked.weight.copy_(conv.weight * mask.reshape(conv.weight.shape))
    x = torch.randn(2, 64, 6, 6)
    torch.testing.assert_close(dyn(x), masked(x), atol=1e-5, rtol=0)
    assert 0.4 < kept.mean() < 0.6


def test_resnet18_one_warehouse_per_stage_at_the_official_budgets():
    """The official kw_resnet18 shares a warehouse per stage, the stage's first strided conv and shortcut in the
    stage before (whose maps they read): 56, 47, 47 and 27 cells at 1x, the paper's 11.93M parameters for
    ResNet-18's 11.69M."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    kw1 = insert_attention(model, AttnSpec.kw())
    stages = {id(m.warehouse): m.warehouse for m in kw1.modules() if isinstance(m, DynamicConv2d)}
    assert [w.plan.cells for w in stages.values()] == [56, 47, 47, 27]
    assert kw1.layer2[0].conv1.warehouse is kw1.layer1[0].conv1.warehouse is kw1.layer2[0].downsample[0].warehouse
    torch.testing.assert_close(kw1.eval()(x), model(x), atol=1e-4, rtol=1e-4)  # upcycled, temperature 1
    count = [sum(p.numel() for p in m.parameters()) for m in (model, kw1)]
    assert [round(c / 1e6, 2) for c in count] == [11.18, 11.42]  # 10 classes: fc 4.6M smaller
    assert count[0] + sum(r.params_added for r in report(kw1).records) == count[1]  # each warehouse counted once
    kw1.train()
    opt = torch.optim.SGD(kw1.parameters(), lr=1e-3)
    kw1.layer1[0].conv1.temperature = 0.5
    kw1(x).square().mean().backward()
    opt.step()
    assert kw1.layer1[0].conv1.warehouse.cells.grad.abs().sum() > 0
    assert torch.isfinite(kw1.eval()(x)).all()
    fresh = insert_attention(torchvision.models.resnet18(num_classes=10), AttnSpec.kw())
    fresh.load_state_dict(kw1.state_dict())
    layer = kw1.layer3[1].conv1.eval()
    y = layer(torch.randn(2, 256, 4, 4, generator=torch.Generator().manual_seed(0)))
    for clone in (copy.deepcopy(kw1), pickle.loads(pickle.dumps(kw1)), fresh):
        assert clone.layer2[0].conv1.warehouse is clone.layer1[0].conv2.warehouse
        assert clone.layer2[0].conv2.warehouse is clone.layer3[0].conv1.warehouse
        assert sum(p.numel() for p in clone.parameters()) == count[1]
        torch.testing.assert_close(clone.layer3[1].conv1.eval()(torch.randn(2, 256, 4, 4, generator=torch.Generator()
                                                                           .manual_seed(0))), y)


@pytest.mark.heavy
def test_resnet18_parameters_at_the_official_budgets():
    """The paper's 45.86M (4x) and 7.43M (1/2x); 1x has fewer than DyConv's conversion."""
    model = torchvision.models.resnet18()
    count = [sum(p.numel() for p in insert_attention(model, spec).parameters())
             for spec in (AttnSpec.kw(4), AttnSpec.kw(0.5), AttnSpec.kw(), AttnSpec.dyconv())]
    assert [round(c / 1e6, 2) for c in count[:3]] == [45.86, 7.43, 11.93] and count[2] < count[3]


def test_the_official_schedule_anneals_the_blend_from_1_to_0():
    model = nn.Sequential(DynamicConv2d(8, 8, 3, padding=1, spec="kw"), DynamicConv2d(8, 8, 1, spec="kw"))
    schedule = TemperatureSchedule(model, start=1.0, end=0.0, steps=4)
    assert [schedule.step() for _ in range(5)] == [0.75, 0.5, 0.25, 0.0, 0.0]
    assert model[0].temperature == model[1].temperature == 0.0
    with pytest.raises(SpecError, match=r"\[0, 1\]"):
        set_temperature(model, 30.0)
    with pytest.raises(SpecError, match="> 0"):  # a softmax temperature is not a blend
        set_temperature(nn.Sequential(model, DynamicConv2d(8, 8, 1, spec="dyconv")), 0.0)


def test_sharing_layer_gives_each_conv_its_own_warehouse_and_depthwise_convs_share_apart():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 16, 1), nn.Conv2d(16, 16, 3, padding=1,
                                                                                                groups=16))
    for sharing, count in (("layer", 5), ("stage", 2)):
        converted = insert_attention(model, AttnSpec.kw(sharing=sharing), where="conv")
        assert len({id(m.warehouse) for m in converted.modules() if isinstance(m, DynamicConv2d)}) == count
    assert converted[3].warehouse is converted[5].warehouse and converted[3].warehouse.plan.cell_shape[1] == 1
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(converted(x), model(x), atol=1e-5, rtol=0)


def test_preset_is_listed_and_spec_errors_name_the_field():
    assert "kw" in dynattn.list_presets() and dynattn.get_spec("kw", budget=4) == AttnSpec.kw(4)
    cases = [
        (lambda: AttnSpec.kw(1.5), "AttnSpec.budget=1.5"),
        (lambda: AttnSpec.kw(0.3), "AttnSpec.budget=0.3"),
        (lambda: AttnSpec.kw(cell_ratio=2), "AttnSpec.cell_in_ratio=2"),
        (lambda: AttnSpec.kw(sharing="model"), "AttnSpec.sharing='model'"),
        (lambda: AttnSpec.kw(temperature=2), "AttnSpec.temperature=2"),
        (lambda: AttnSpec.dyconv().replace(budget=2), "AttnSpec.budget=2"),
        (lambda: AttnSpec.kw().replace(heads=("cells", "out")), "AttnSpec.heads"),
        (lambda: AttnSpec(target="kernel", heads=("cels",)), "did you mean 'cells'"),
        (lambda: DynamicConv2d(33, 47, 3, spec=AttnSpec.kw(0.5)), "cell_out_ratio=0.5: gives cells of 23 channels"),
        (lambda: DynamicConv2d(16, 16, 3, spec="dyconv", warehouse=(None, 0)), "warehouse"),
    ]
    for make, text in cases:
        with pytest.raises(SpecError) as err:
            make()
        assert text in str(err.value), str(err.value)
    layer = DynamicConv2d(16, 16, 3, spec="kw")
    with pytest.raises(SpecError, match="in \\[0, 1\\]"):
        layer.temperature = 1.5
    with pytest.raises(SpecError, match="has no place"):
        DynamicConv2d(16, 32, 3, spec="kw", warehouse=(layer.warehouse, 0))
    with pytest.raises(SpecError, match=r"not a dynamic conv built from AttnSpec\.kw"):
        load_kw_weights(DynamicConv2d(16, 16, 3, spec="dyconv"), {})
