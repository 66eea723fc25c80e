"""The user's model stays the user's model: class, methods, checkpoints; whole detectors; timm families."""

import copy
import io
import warnings

import pytest
import timm
import torch
import torchvision
from torch import nn
from torchvision.models import detection

from dynattn import AttnSpec, SpecError
from dynattn.errors import ModelError
from graph_passes import insert_attention, is_rewritten, list_sites, original_class, report, rewritten_code


def _same_classes(model, out):
    return all(original_class(out.get_submodule(name)) is type(sub) for name, sub in model.named_modules())


def test_timm_fine_tuning_code_runs_on_the_result():
    torch.manual_seed(0)
    model = timm.create_model("resnet26d", pretrained=False).eval()
    out = insert_attention(model, AttnSpec.cbam(init="identity"))
    assert isinstance(out, timm.models.ResNet) and type(out) is type(model) and _same_classes(model, out)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(out(x), model(x))
        torch.testing.assert_close(out.forward_head(out.forward_features(x)), model(x))
    assert out.pretrained_cfg == model.pretrained_cfg and out.default_cfg == model.default_cfg
    assert is_rewritten(out.layer1[0]) and "bn3_cbam" in rewritten_code(out.layer1[0])
    out.reset_classifier(5)
    assert out.num_classes == 5 and out(x).shape == (2, 5)
    # the original checkpoint loads with only the new keys missing; copies and pickles keep the forward
    missing = out.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")},
                                  strict=False)
    assert not missing.unexpected_keys and all("_cbam." in k or k.startswith("fc.") for k in missing.missing_keys)
    buffer = io.BytesIO()
    torch.save(out, buffer)
    buffer.seek(0)
    for clone in (copy.deepcopy(out), torch.load(buffer, weights_only=False)):
        assert type(clone) is type(out) and isinstance(clone.layer1[0], timm.models.resnet.Bottleneck)
        with torch.no_grad():
            torch.testing.assert_close(clone(x), out(x))


def test_torchvision_attributes_survive():
    model = torchvision.models.mobilenet_v3_small(weights=None).eval()
    out = insert_attention(model, AttnSpec.eca(init="identity"), where="conv")
    assert type(out) is type(model) and isinstance(out.features, nn.Sequential) and out.classifier[-1].out_features
    out.classifier[-1] = nn.Linear(out.classifier[-1].in_features, 3)  # the usual fine-tuning edit
    assert out(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_a_detector_takes_attention_in_its_backbone():
    torch.manual_seed(0)
    model = detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    out = insert_attention(model, AttnSpec.se(init="identity"))
    rep = report(out)
    assert type(out) is type(model) and rep.traced == ("backbone",) and rep.untraced[0][0] == ""
    assert sum(r.site.startswith("backbone.body.layer") for r in rep.records) == 16
    assert "traced: backbone" in rep.table()
    assert [s.name for s in list_sites(model, "se")] == [r.site for r in rep.records]
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        a, b = model.backbone(x), out.backbone(x)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert isinstance(out([torch.rand(3, 96, 128)]), list)  # the detector still runs end to end
        # the caller's model too: the meta run that captures the children's calls leaves no meta tensor behind
        # (the anchor generator caches its anchors on itself)
        assert isinstance(model([torch.rand(3, 96, 128)]), list)
        assert all(t.device.type == "cpu" for t in model.rpn.anchor_generator.cell_anchors)


def test_a_site_too_narrow_for_the_spec_is_skipped_or_named():
    model = timm.create_model("dpn68", pretrained=False).eval()
    with pytest.warns(UserWarning, match=r"skipped 2 site\(s\).*10 channels.*strict=True"):
        out = insert_attention(model, AttnSpec.se(init="identity"))
    assert len(report(out).skipped) == 2 and report(out).skipped[0].channels == 10
    with pytest.raises(SpecError, match=r"site='.*': has 10 channels.*leaves 0 hidden units.*exclude it"):
        insert_attention(model, AttnSpec.se(), strict=True)


def test_an_input_is_guessed_through_a_conv2d_subclass():
    model = timm.create_model("nf_resnet26", pretrained=False).eval()
    sites = list_sites(model, "se")
    assert sites and sites[0].shape[2:] == (56, 56)  # pretrained_cfg's 224 x 224


def test_a_model_without_feature_maps_gets_one_error():
    mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    with pytest.raises(ModelError, match="has no 4-D feature maps"):
        insert_attention(mlp, "se")
    with pytest.raises(ModelError, match=r"no 4-D \(N, C, H, W\) feature map"):
        insert_attention(mlp, "se", example_inputs=torch.randn(2, 16))


def test_features_only_models():
    model = timm.create_model("resnet18", pretrained=False, features_only=True).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = insert_attention(model, AttnSpec.se(init="identity"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x), out(x)))
    assert type(out) is type(model) and len(report(out).records) == 8


DETECTORS = ["maskrcnn_resnet50_fpn", "retinanet_resnet50_fpn", "fcos_resnet50_fpn", "ssdlite320_mobilenet_v3_large"]
SEGMENTERS = ["deeplabv3_resnet50", "fcn_resnet50", "lraspp_mobilenet_v3_large"]


@pytest.mark.heavy
@pytest.mark.parametrize("name", DETECTORS + SEGMENTERS)
def test_detection_and_segmentation_models(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None).eval()
    out = insert_attention(model, AttnSpec.se(init="identity"))
    assert isinstance(out, type(model)) and _same_classes(model, out) and report(out).records
    with torch.no_grad():
        if name in DETECTORS:
            x = torch.randn(1, 3, 96, 128)
            a, b = model.backbone(x), out.backbone(x)
            assert all(torch.equal(a[k], b[k]) for k in a)
            out([torch.rand(3, 96, 128)])  # the whole detector still runs
        else:
            x = torch.randn(1, 3, 64, 64)
            torch.testing.assert_close(out(x)["out"], model(x)["out"], atol=0, rtol=0)


#: One model per family: residual, dense, dual-path, NFNet, RepVGG, HRNet, Res2Net, CSP, GhostNet, ReXNet,
#: SelecSLS, DLA, MixNet, EfficientNet (and tf_), MobileNetV3, RegNet, ConvNeXt, ResNeSt, and more.
TIMM_FAMILIES = [
    "resnet26d", "seresnext26d_32x4d", "densenet121", "dpn68", "nf_resnet26", "nfnet_f0", "repvgg_a0",
    "hrnet_w18_small", "res2net50_26w_4s", "cspresnet50", "cspdarknet53", "ghostnet_100", "rexnet_100",
    "selecsls42b", "dla34", "mixnet_s", "efficientnet_b0", "tf_efficientnet_b0", "mobilenetv3_large_100",
    "regnety_002", "regnetx_002", "convnext_atto", "resnest14d", "inception_v3", "xception41", "vovnet39a",
    "skresnet18", "tresnet_m", "hardcorenas_a", "gernet_s", "resnetv2_50", "mobilevit_xxs", "efficientvit_b0",
]


@pytest.mark.heavy
@pytest.mark.parametrize("name", TIMM_FAMILIES)
def test_timm_families_keep_their_class_and_outputs(name):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sites too narrow for SE are skipped with a warning (dpn68)
        out = insert_attention(model, AttnSpec.se(init="identity"))
    # a root whose own forward holds a site (HRNet's head adds its incre and downsample paths) is rewritten:
    # its class becomes a same-named subclass of the model's, so isinstance and methods hold
    assert isinstance(out, type(model)) and _same_classes(model, out) and report(out).records
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(out(x), model(x), atol=0, rtol=0)
    out.reset_classifier(7)
    assert out(x).shape == (1, 7)
