"""insert_attention on 1-D and 3-D conv nets: torchvision's video models, MONAI's 3-D and 1-D networks and a
1-D ResNet written here. Sites are found with the same site rules as on 2-D nets (on NCL / NCDHW maps), each
module is built for its site's spatial dims, identity init leaves the outputs unchanged, the model keeps its class
and every original state_dict key, and the result trains."""

import pytest
import torch
import torchvision
from torch import nn

from dynattn import AttnSpec
from graph_passes import insert_attention, list_sites, report

mn = pytest.importorskip("monai.networks.nets")


class BasicBlock1d(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv1d(cin, cout, 7, stride, padding=3, bias=False)
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv2 = nn.Conv1d(cout, cout, 7, padding=3, bias=False)
        self.bn2 = nn.BatchNorm1d(cout)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv1d(cin, cout, 1, stride, bias=False), nn.BatchNorm1d(cout))

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + identity)


class ResNet1d(nn.Module):
    """An ECG-style 1-D ResNet: (B, 12 leads, L) -> class logits."""

    def __init__(self, leads: int = 12, classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(leads, 32, 15, 2, padding=7, bias=False), nn.BatchNorm1d(32), nn.ReLU())
        self.layer1 = nn.Sequential(BasicBlock1d(32, 32), BasicBlock1d(32, 32))
        self.layer2 = nn.Sequential(BasicBlock1d(32, 64, 2), BasicBlock1d(64, 64))
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        return self.fc(self.layer2(self.layer1(self.stem(x))).mean(-1))

    def embed(self, x):  # a method of the user's own, which must survive insertion
        return self.layer2(self.layer1(self.stem(x))).mean(-1)


MODELS = {
    "r3d_18": (lambda: torchvision.models.video.r3d_18(num_classes=4), (2, 3, 8, 32, 32), 8),
    "mc3_18": (lambda: torchvision.models.video.mc3_18(num_classes=4), (2, 3, 8, 32, 32), 8),
    "r2plus1d_18": (lambda: torchvision.models.video.r2plus1d_18(num_classes=4), (2, 3, 8, 32, 32), 8),
    "monai_resnet18_3d": (lambda: mn.resnet18(spatial_dims=3, n_input_channels=1, num_classes=2), (2, 1, 24, 24, 24),
                          8),
    "monai_densenet121_3d": (lambda: mn.DenseNet121(spatial_dims=3, in_channels=1, out_channels=2), (2, 1, 32, 32, 32),
                             4),  # stage outputs (no residual adds); the last is 1 x 1 x 1 at 32^3
    "monai_seresnet50_3d": (lambda: mn.SEResNet50(spatial_dims=3, in_channels=1, num_classes=2), (2, 1, 32, 32, 32),
                            16),
    "monai_resnet18_1d": (lambda: mn.resnet18(spatial_dims=1, n_input_channels=2, num_classes=2), (2, 2, 256), 8),
    "resnet1d": (lambda: ResNet1d(), (2, 12, 500), 4),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("preset", ["se", "cbam"])
def test_identity_attention_leaves_1d_3d_models_unchanged(name, preset):
    make, shape, sites = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(shape)
    spec = getattr(AttnSpec, preset)(init="identity")
    new = insert_attention(model, spec, example_inputs=(x,))
    assert type(new) is type(model) or isinstance(new, type(model))
    assert new is not model and not any("_se" in k or "_cbam" in k for k in model.state_dict())  # caller's untouched
    assert set(model.state_dict()) <= set(new.state_dict())
    records = report(new).records
    assert len(records) == sites
    dims = len(shape) - 2
    for module in (m for n, m in new.named_modules() if n.endswith(f"_{preset}")):
        assert module.spatial_dims == dims
    with torch.no_grad():
        torch.testing.assert_close(new.eval()(x), model(x), atol=0, rtol=0)


def test_guessed_input_for_a_video_model():
    """Without example_inputs, a Conv3d net is probed with a clip (16 frames of 112 x 112)."""
    model = torchvision.models.video.r3d_18()
    sites = list_sites(model, AttnSpec.se())
    assert [s.name for s in sites][:2] == ["layer1.0.conv2.1", "layer1.1.conv2.1"]  # the BN ending each branch
    assert sites[0].shape == (2, 64, 16, 56, 56) and sites[-1].channels == 512


def test_guessed_input_for_a_1d_model():
    sites = list_sites(ResNet1d(), AttnSpec.eca(), where="stage")
    assert sites and all(len(s.shape) == 3 for s in sites)


def test_1d_model_keeps_its_methods_and_trains():
    torch.manual_seed(0)
    model = ResNet1d()
    new = insert_attention(model, AttnSpec.cbam(), where="conv")
    x, y = torch.randn(4, 12, 300), torch.randint(0, 5, (4,))
    assert new.embed(x).shape == (4, 64)
    opt = torch.optim.SGD(new.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in new.state_dict().items() if "_cbam" in k and "mlp" not in k}
    loss = nn.functional.cross_entropy(new.train()(x), y)
    loss.backward()
    opt.step()
    changed = [k for k, v in new.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert changed  # the attention's own weights learn


def test_mixed_rank_model_gets_a_module_per_rank():
    """A model with a 1-D and a 2-D branch: each site's module is built for its own map."""

    class TwoBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.audio = nn.Sequential(nn.Conv1d(1, 16, 9, 4), nn.BatchNorm1d(16), nn.ReLU())
            self.image = nn.Sequential(nn.Conv2d(3, 16, 3, 2), nn.BatchNorm2d(16), nn.ReLU())
            self.head = nn.Linear(32, 2)

        def forward(self, wave, image):
            return self.head(torch.cat([self.audio(wave).mean(-1), self.image(image).mean((-2, -1))], 1))

    model = TwoBranch()
    wave, image = torch.randn(2, 1, 400), torch.randn(2, 3, 32, 32)
    new = insert_attention(model, AttnSpec.se(reduction=4), where="conv", example_inputs=(wave, image))
    dims = sorted(m.spatial_dims for n, m in new.named_modules() if n.endswith("_se"))
    assert dims == [1, 2]
    assert new(wave, image).shape == (2, 2)


@pytest.mark.heavy
def test_s3d_takes_attention():
    model = torchvision.models.video.s3d(num_classes=3).eval()
    x = torch.randn(1, 3, 16, 224, 224)
    new = insert_attention(model, AttnSpec.se(init="identity"))
    assert len(report(new).records) > 0
    with torch.no_grad():
        torch.testing.assert_close(new.eval()(x), model(x), atol=0, rtol=0)
