"""graph_passes: sites, selectors, insertion, chaining, conversion, tracing, reports."""

import copy
import operator
import pickle
import warnings

import pytest
import torch
import torch.fx as fx
import torchvision
from torch import nn

from dynattn import AttnSpec, DynamicConv2d, SpecError
from dynattn.builder import is_attention
from dynattn.conv_placement import conv_placement
from dynattn.errors import ModelError
from graph_passes import InsertionReport, LeafTracer, TraceFailure, insert_attention, list_sites, report
from graph_passes.sites import NameSelector, RuleSelector, parse_selector, parse_where


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _graph(model):
    """The rewritten model's graph, traced again with the inserted modules and its leaves as leaves."""
    return LeafTracer(report(model).leaves).trace(model)


def _unchanged(model, snap):
    sd = model.state_dict()
    return set(sd) == set(snap) and all(torch.equal(sd[k], v) for k, v in snap.items())


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()


@pytest.fixture()
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def test_se_resnet_placement_on_resnet50(resnet50):
    sites = list_sites(resnet50, AttnSpec.se(), where="residual")
    assert len(sites) == 16
    blocks = [f"layer{i}.{j}" for i, n in enumerate((3, 4, 6, 3), start=1) for j in range(n)]
    assert [s.name for s in sites] == [f"{b}.bn3" for b in blocks]
    expected_channels = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    assert [s.channels for s in sites] == expected_channels
    out = insert_attention(resnet50, AttnSpec.se(), where="residual")
    inserted = [n for n in _graph(out).nodes if n.op == "call_module" and is_attention(out.get_submodule(n.target))]
    assert len(inserted) == 16
    for node, block, channels in zip(inserted, blocks, expected_channels):
        assert node.target == f"{block}.bn3_se"
        assert node.args[0].target == f"{block}.bn3"  # right after the branch's last BN
        (user,) = node.users
        assert user.op == "call_function" and user.target in (operator.add, operator.iadd)  # the residual add
        assert out.get_submodule(node.target).channels == channels


def test_identity_cbam_leaves_outputs_unchanged_and_keeps_every_key(resnet50):
    snap = _snapshot(resnet50)
    out = insert_attention(resnet50, AttnSpec.cbam(init="identity"))
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(out(x), resnet50(x), atol=1e-6, rtol=1e-6)
    assert _unchanged(resnet50, snap)  # the caller's model
    sd = out.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in snap.items())  # every original key and value
    result = out.load_state_dict(snap, strict=False)
    assert not result.unexpected_keys and all("_cbam." in k for k in result.missing_keys)
    # (BatchNorm fills in a missing num_batches_tracked itself)
    assert len(result.missing_keys) == len([k for k in sd if "_cbam." in k and "num_batches_tracked" not in k])


def test_result_traces_again_and_trains(resnet18):
    out = insert_attention(resnet18, AttnSpec.cbam(init="identity"))
    x = torch.randn(2, 3, 64, 64)
    traced = fx.symbolic_trace(out)
    torch.testing.assert_close(traced(x), out(x))
    out.train()
    out(x).sum().backward()
    assert all(p.grad is not None for n, p in out.named_parameters() if "_cbam." not in n or "mix" in n)


def test_site_rules_and_selectors(resnet18):
    conv = list_sites(resnet18, "se", where="conv")
    assert len(conv) == 20 and conv[0].name == "relu" and conv[1].name == "layer1.0.relu"
    assert {s.producer for s in conv} >= {"ReLU", "BatchNorm2d"}  # conv-bn-relu, or conv-bn before an add
    stage = list_sites(resnet18, "se", where="stage")
    assert [s.name for s in stage] == ["relu", "layer1.1.relu:2", "layer2.1.relu:2", "layer3.1.relu:2",
                                       "layer4.1.relu:2"]
    assert stage[1].aliases == ("layer1", "layer1.1") and stage[-1].shape[2:] == (7, 7)
    assert [s.name for s in list_sites(resnet18, "se", where="layer*.*.bn2")][:2] == ["layer1.0.bn2", "layer1.1.bn2"]
    assert [s.name for s in list_sites(resnet18, "se", where="layer[23]")] == ["layer2.1.relu:2", "layer3.1.relu:2"]
    assert len(list_sites(resnet18, "se", where=r"re:layer4\.\d\.bn\d")) == 4
    assert [s.name for s in list_sites(resnet18, "se", where="residual:layer4.*")] == ["layer4.0.bn2", "layer4.1.bn2"]
    pred = list_sites(resnet18, "se",
                      where=lambda node, mod: isinstance(mod, nn.BatchNorm2d) and mod.num_features == 512)
    assert len(pred) == 5
    union = list_sites(resnet18, "se", where=["layer1.0.bn1", "stage"])
    assert [s.name for s in union][:3] == ["relu", "layer1.0.bn1", "layer1.1.relu:2"]
    default = list_sites(resnet18, "se")
    assert [s.rule for s in default] == ["residual"] * 8


def test_selector_that_matches_nothing_points_to_list_sites(resnet18):
    snap = _snapshot(resnet18)
    with pytest.raises(ModelError, match=r"where='layer9\.\*'.*matches no site in ResNet.*list_sites"):
        insert_attention(resnet18, "se", where="layer9.*")
    with pytest.raises(SpecError, match="is not a valid regular expression"):
        insert_attention(resnet18, "se", where="re:([")
    with pytest.raises(SpecError, match="is not a selector"):
        insert_attention(resnet18, "se", where=42)
    assert _unchanged(resnet18, snap)


def test_where_is_parsed_once_into_selectors():
    assert parse_selector("re:layer[12].*") is parse_selector("re:layer[12].*")  # parsed once, then cached
    assert parse_where(["residual:layer1*", "layer*", None, "stage"]) == (
        RuleSelector("residual", "layer1*"), NameSelector("layer*"), RuleSelector(None), RuleSelector("stage"))
    assert parse_selector(r"re:a\.b").test("a.b") and not parse_selector(r"re:a\.b").test("a.bc")
    with pytest.raises(SpecError, match="is not a valid regular expression"):
        parse_selector("re:([")
    with pytest.raises(SpecError, match="is not a selector"):
        parse_where(["stage", 42])


def test_renamed_site_names_still_read_warning_once(resnet18, monkeypatch):
    import graph_passes
    from dynattn import _deprecated
    from graph_passes import sites

    monkeypatch.setattr(sites, "_warned", set())
    monkeypatch.setattr(_deprecated, "_warned", set())
    site = list_sites(resnet18, "se")[0]
    with pytest.warns(DeprecationWarning, match=r"Site\.node is now Site\.node_name"):
        assert site.node == site.node_name
    with pytest.warns(DeprecationWarning, match=r"Site\.strategy is now Site\.rule"):
        assert site.strategy == site.rule == "residual"
    record = report(insert_attention(resnet18, "se")).records[0]
    with pytest.warns(DeprecationWarning, match=r"SiteRecord\.strategy is now SiteRecord\.rule"):
        assert record.strategy == record.rule == "residual"
    with pytest.warns(DeprecationWarning, match="SITE_STRATEGIES moved to graph_passes.sites.SITE_RULES"):
        assert graph_passes.SITE_STRATEGIES == sites.SITE_RULES == (
            "residual", "conv", "stage", "decoder", "skip", "encoder")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once each
        assert site.node == site.node_name and site.strategy == site.rule and record.strategy == record.rule


def test_registered_conv_spatial_dims_read_from_spatial_dims_or_dims(monkeypatch):
    from dynattn import registry
    from graph_passes.shapes import conv_spatial_dims

    class NewConv(nn.Conv2d):  # an nn.ConvNd subclass: its class decides
        spatial_dims = 3

    class Conv1dOld(nn.Module):
        dims = 1

    class Conv3dNew(nn.Module):
        spatial_dims = 3

    for cls in (Conv1dOld, Conv3dNew):
        monkeypatch.setitem(registry._LEAVES, cls, "conv")
    assert [conv_spatial_dims(m) for m in (NewConv(1, 1, 1), Conv1dOld(), Conv3dNew(), nn.ReLU())] == [2, 1, 3, None]


def test_default_is_stage_without_residual_adds():
    vgg = torchvision.models.vgg11(weights=None).eval()
    sites = list_sites(vgg, "cbam")
    assert [s.rule for s in sites] == ["stage"] * len(sites)
    assert [s.shape[2] for s in sites] == [224, 112, 56, 28, 14, 7]  # before each pool, and the 7x7 output


def test_chained_specs_run_in_order(resnet18):
    out = insert_attention(resnet18, [AttnSpec.se(init="identity"), AttnSpec.triplet(init="identity")],
                           where="residual:layer1.0*")
    node = next(n for n in _graph(out).nodes if n.target == "layer1.0.bn2")
    (se,) = node.users
    (triplet,) = se.users
    (add,) = triplet.users
    assert se.target == "layer1.0.bn2_se" and triplet.target == "layer1.0.bn2_triplet"
    assert add.target in (operator.add, operator.iadd)
    # a second pass chains after the first one, never on the same input
    again = insert_attention(out, AttnSpec.eca(), where="residual:layer1.0*")
    node = next(n for n in _graph(again).nodes if n.target == "layer1.0.bn2_triplet")
    assert [u.target for u in node.users] == ["layer1.0.bn2_triplet_eca"]
    assert [r.module for r in report(out).records] == ["layer1.0.bn2_se", "layer1.0.bn2_triplet"]


def test_inplace_shares_modules_and_the_default_copies(resnet18):
    out = insert_attention(resnet18, "se")
    assert out.conv1 is not resnet18.conv1
    assert not any("_se" in k for k in resnet18.state_dict())  # the caller's model is not touched
    shared = insert_attention(resnet18, "se", inplace=True)
    assert shared is resnet18 and shared.conv1 is resnet18.conv1
    assert sum("_se." in k for k in resnet18.state_dict()) == sum("_se." in k for k in out.state_dict()) > 0


def test_report(resnet18):
    out = insert_attention(resnet18, AttnSpec.se())
    rep = report(out)
    assert isinstance(rep, InsertionReport) and len(rep.records) == 8
    first = rep.records[0]
    assert (first.site, first.module, first.spec, first.channels) == ("layer1.0.bn2", "layer1.0.bn2_se", "SE", 64)
    assert first.params_added == sum(p.numel() for p in out.get_submodule("layer1.0.bn2_se").parameters())
    assert rep.params_added == sum(p.numel() for p in out.parameters()) - sum(p.numel() for p in resnet18.parameters())
    text = rep.table()
    assert "layer1.0.bn2_se" in text and "8 sites in ResNet" in text and "%" in text
    assert report(copy.deepcopy(out)).records == rep.records
    assert report(pickle.loads(pickle.dumps(out))).records == rep.records
    with pytest.raises(LookupError):
        report(resnet18)


def test_kernel_target_converts_convs_and_keeps_outputs(resnet18):
    snap = _snapshot(resnet18)
    out = insert_attention(resnet18, AttnSpec.dyconv())
    assert type(out) is type(resnet18) and isinstance(out.layer1[0].conv1, DynamicConv2d)
    assert _unchanged(resnet18, snap)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = resnet18(x)
        torch.testing.assert_close(out(x), ref, atol=1e-4 * ref.abs().max().item(), rtol=0)
    assert set(snap) <= set(out.state_dict())
    fresh = insert_attention(resnet18, AttnSpec.dyconv())
    result = fresh.load_state_dict(snap, strict=False)  # conv-shaped weights fill every expert
    assert not result.unexpected_keys and all(".router." in k for k in result.missing_keys)
    torch.testing.assert_close(fresh.layer1[0].conv1.expert_weights[2], snap["layer1.0.conv1.weight"])
    assert len(report(out).records) == 19  # DyConv's placement: every conv but the stem
    assert len(report(insert_attention(resnet18, AttnSpec.dyconv(), where="conv")).records) == 20
    only = insert_attention(resnet18, AttnSpec.condconv(), where="layer4.*")
    assert [r.site for r in report(only).records] == ["layer4.0.conv1", "layer4.0.conv2", "layer4.0.downsample.0",
                                                       "layer4.1.conv1", "layer4.1.conv2"]
    with pytest.raises(SpecError, match="the residual and stage strategies place feature attention"):
        insert_attention(resnet18, AttnSpec.dyconv(), where="residual")


def _names(model, spec, **kw):
    return [s.name for s in list_sites(model, spec, **kw)]


def test_kernel_presets_place_dynamic_convs_as_their_papers_do(resnet18):
    """DyConv: every conv but the stem; ODConv: also the 1x1 projection shortcuts static; CondConv:
    the later stages (output stride >= 16) without shortcuts; SE's convs on 1x1 maps never."""
    convs = [n for n, m in resnet18.named_modules() if isinstance(m, nn.Conv2d)]
    dy, od, cc = (_names(resnet18, s) for s in (AttnSpec.dyconv(), AttnSpec.odconv(), AttnSpec.condconv()))
    assert dy == [n for n in convs if n != "conv1"]
    assert od == [n for n in dy if "downsample" not in n]
    assert cc == [n for n in od if n.startswith(("layer3", "layer4"))]
    assert _names(resnet18, AttnSpec.dyconv(experts=8)) == dy  # the preset's placement, by its name
    assert _names(resnet18, AttnSpec(target="kernel")) == convs  # a spec of your own: every conv
    assert _names(resnet18, AttnSpec.condconv(), where="conv") == convs  # where= overrides
    assert conv_placement(AttnSpec.odconv()).reference.startswith("OSVAI/ODConv")
    assert "except the stem" in conv_placement(AttnSpec.dyconv()).describe()

    mnv3 = torchvision.models.mobilenet_v3_small()
    se_convs = {n for n, m in mnv3.named_modules() if isinstance(m, nn.Conv2d) and ".fc" in n}
    assert se_convs and not se_convs & set(_names(mnv3, AttnSpec.dyconv()))
    assert "features.0.0" not in _names(mnv3, AttnSpec.dyconv())  # the stem
    last = [n for n, m in mnv3.named_modules() if isinstance(m, nn.Conv2d)][-1]
    assert last in _names(mnv3, AttnSpec.odconv()) and last not in _names(mnv3, AttnSpec.condconv())  # the head
    # the stride rule needs a forward pass: example_inputs set its size, an unrunnable one says so
    small = _names(resnet18, AttnSpec.condconv(), example_inputs=(torch.randn(1, 3, 64, 64),))
    assert small == cc


def test_default_placement_errors_say_what_to_do():
    class NoMeta(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 8, 3, stride=2), nn.Conv2d(8, 8, 3, stride=2), nn.Conv2d(8, 8, 1)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent: no meta tensors
                x = x + 1
            return self.c(self.b(self.a(x)))

    with pytest.raises(ModelError, match=r"default placement of CondConv.*needs each conv's output stride.*where="):
        list_sites(NoMeta(), AttnSpec.condconv())
    with pytest.warns(UserWarning, match="did not run on meta tensors"):
        assert _names(NoMeta(), AttnSpec.dyconv()) == ["b", "c"]
    assert _names(NoMeta(), AttnSpec.condconv(), where="conv") == ["a", "b", "c"]
    only_stem = nn.Sequential(nn.Conv2d(3, 8, 16, stride=16), nn.Flatten(), nn.Linear(8 * 14 * 14, 10))
    with pytest.raises(ModelError, match=r"no conv that the default placement of DyConv.*stem.*where='conv'"):
        insert_attention(only_stem, AttnSpec.dyconv())
    assert len(report(insert_attention(only_stem, AttnSpec.dyconv(), where="conv")).records) == 1


def test_kernel_target_skips_conv_subclasses_with_their_own_forward():
    class StdConv(nn.Conv2d):
        def forward(self, x):
            w = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
            return self._conv_forward(x, w, self.bias)

    model = nn.Sequential(StdConv(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    with pytest.warns(UserWarning, match=r"skipping 1 Conv2d subclass.*0 \(StdConv\)"):
        out = insert_attention(model, AttnSpec.dyconv())
    assert isinstance(out[0], StdConv) and isinstance(out[2], DynamicConv2d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ModelError, match=r"has no plain nn\.Conv2d to replace"):
            insert_attention(nn.Sequential(StdConv(3, 8, 3)), AttnSpec.dyconv())


class _Gate(nn.Module):
    """Data-dependent control flow: does not trace."""

    def forward(self, x):
        if x.mean() > 0:
            return x * 2
        return x


class _WithUntraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = _Gate()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.conv2(self.gate(self.conv(x)))


def test_untraceable_submodules_become_leaves():
    model = _WithUntraceable().eval()
    out = insert_attention(model, AttnSpec.se(reduction=2, init="identity"), where="conv")
    assert any(n.op == "call_module" and n.target == "gate" for n in _graph(out).nodes)
    x = torch.randn(2, 3, 10, 10)
    torch.testing.assert_close(out(x), model(x))


def test_root_control_flow_raises_a_trace_failure_with_the_fix():
    class Root(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            if x.sum() > 0:
                return self.conv(x)
            return self.conv(-x)

    with pytest.raises(TraceFailure, match=r"model='Root'.*Root\.forward itself.*leaf_modules"):
        insert_attention(Root(), "se")


def test_user_leaf_modules():
    model = _WithUntraceable().eval()
    sites = list_sites(model, "se", where="re:.*", leaf_modules=["gate"])
    assert [s.name for s in sites] == ["conv", "gate", "conv2"]
    sites = list_sites(model, "se", where="re:.*", leaf_modules=[_Gate])
    assert "gate" in [s.name for s in sites]
    with pytest.raises(SpecError, match="leaf_modules"):
        list_sites(model, "se", leaf_modules=[3])


class _Aux(nn.Module):
    """An auxiliary head used only in training, decided in the root's forward."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU())
        self.aux = nn.Sequential(nn.Conv2d(16, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))

    def forward(self, x):
        x = self.stem(x)
        out = self.head(self.body(x))
        if self.training:
            return out, self.aux(x)
        return out


def test_forward_that_branches_on_training_keeps_both_graphs():
    torch.manual_seed(0)
    model = _Aux().eval()
    out = insert_attention(model, AttnSpec.cbam(reduction=4, init="identity"), where="conv")
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(out(x), model(x))
    out.train()
    model.train()
    a, b = out(x), model(x)
    assert isinstance(a, tuple) and len(a) == 2
    torch.testing.assert_close(a[1], b[1])
    for clone in (copy.deepcopy(out), pickle.loads(pickle.dumps(out))):
        assert isinstance(clone.train()(x), tuple) and isinstance(clone.eval()(x), torch.Tensor)


def test_stochastic_depth_becomes_a_leaf_not_a_frozen_branch():
    model = torchvision.models.efficientnet_b0(weights=None)
    out = insert_attention(model, "se")
    assert type(out) is type(model)
    leaves = [n.target for n in _graph(out).nodes if n.op == "call_module" and n.target.endswith("stochastic_depth")]
    assert len(leaves) == 9 and len(report(out).records) == 9


def test_bad_arguments_change_nothing(resnet18):
    snap = _snapshot(resnet18)
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        insert_attention("resnet18", "se")
    with pytest.raises(ModelError, match=r"example_inputs=\[\(2, 5, 64, 64\)\].*shape propagation.*failed at node"):
        insert_attention(resnet18, "se", example_inputs=torch.randn(2, 5, 64, 64))
    with pytest.raises(SpecError, match="mixes kernel and feature targets"):
        insert_attention(resnet18, [AttnSpec.se(), AttnSpec.dyconv()])
    with pytest.raises(SpecError, match="preset='sqeeze'"):
        insert_attention(resnet18, "sqeeze")
    with pytest.raises(SpecError, match="inplace='yes'"):
        insert_attention(resnet18, "se", inplace="yes")
    assert _unchanged(resnet18, snap)


def test_example_inputs_are_used_for_shapes(resnet18):
    sites = list_sites(resnet18, "se", where="stage", example_inputs=(torch.randn(1, 3, 96, 128),))
    assert sites[0].shape == (1, 64, 48, 64)


def test_meta_device_model_costs_no_memory():
    with torch.device("meta"):
        model = torchvision.models.resnet152(weights=None)
    out = insert_attention(model, AttnSpec.cbam())
    assert len(report(out).records) == 50
    assert all(p.device.type == "meta" for p in out.parameters())
    converted = insert_attention(model, AttnSpec.dyconv(), where="layer4.*")
    assert converted.layer4[0].conv2.weight.device.type == "meta"


def test_list_sites_for_a_kernel_target(resnet18):
    sites = list_sites(resnet18, AttnSpec.dyconv(), where="conv:layer1.*")
    assert [s.name for s in sites] == ["layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2"]
    assert all(s.rule == "conv" for s in sites)
