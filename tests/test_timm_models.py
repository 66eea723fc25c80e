"""timm models of several families, one with Conv2dSame (tf_efficientnet_b0, which needs leaves)."""

import warnings

import pytest
import torch

timm = pytest.importorskip("timm")

from tests.zoo import check_model  # noqa: E402

LIGHT = ["resnet18", "tf_efficientnet_b0", "mobilenetv3_small_100", "convnext_atto", "regnety_002", "mixnet_s",
         "dla34", "ghostnet_100"]
HEAVY = ["efficientnet_b0", "rexnet_100", "cspresnet50", "resnest14d", "densenet121"]


@pytest.mark.parametrize("name", LIGHT + [pytest.param(n, marks=pytest.mark.heavy) for n in HEAVY])
def test_timm_model(name):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model(name, pretrained=False)
    result = check_model(model, 64)
    assert result["sites"] >= 1
    if name == "tf_efficientnet_b0":
        from timm.layers import Conv2dSame

        assert sum(isinstance(m, Conv2dSame) for m in model.modules()) == 5 and result["leaves"] > 0
