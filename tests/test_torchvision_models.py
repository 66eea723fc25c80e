"""Every torchvision classification model: sites found, caller untouched, keys kept, identity CBAM
and upcycled DyConv leave eval outputs unchanged, training runs, the result traces again.

A representative light set runs in CI; the rest is marked heavy (``--heavy``): all 80 models
pass (see the README for the figures).
"""

import warnings

import pytest
import torch
import torchvision

from tests.zoo import check_model

ALL = torchvision.models.list_models(module=torchvision.models)
LIGHT = {
    "resnet18", "mobilenet_v3_small", "efficientnet_b0", "googlenet", "squeezenet1_1", "shufflenet_v2_x0_5",
    "mnasnet0_5", "regnet_y_400mf", "densenet121", "convnext_tiny", "vit_b_32", "alexnet",
}


def _size(name: str) -> int:
    if "inception" in name:
        return 299
    return 224 if any(k in name for k in ("vit", "swin", "maxvit")) else 64


@pytest.mark.parametrize("name", [n if n in LIGHT else pytest.param(n, marks=pytest.mark.heavy) for n in ALL])
def test_torchvision_model(name):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.get_model(name, weights=None)
    giant = sum(p.numel() for p in model.parameters()) > 3e8
    # the 300M+ parameter models convert their stem / patch embedding only (4 experts of every
    # conv would not fit in this machine's memory next to the copies the test keeps)
    result = check_model(model, _size(name), convert_where="re:(conv_proj|stem.*|trunk_output.block1.*)"
                         if giant else None)
    assert result["sites"] >= 1


def test_every_torchvision_classifier_is_listed():
    assert len(ALL) >= 80 and LIGHT <= set(ALL)
