"""GateMaps.plot: the recorded spatial gates drawn over the input image, labelled, with a colour bar."""

import sys

import pytest
import torch
from torch import nn

import dynattn
from dynattn import AttnSpec, build
from dynattn.errors import InputError


def _recorded(spec: AttnSpec) -> tuple[dynattn.GateMaps, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), build(spec, channels=16),
                          nn.Conv2d(16, 16, 3, stride=2, padding=1), build(spec, channels=16)).eval()
    images = torch.rand(2, 3, 24, 24)
    with dynattn.record_gates(model) as gates, torch.no_grad():
        model(images)
    return gates, images


def test_plot_draws_each_spatial_gate_over_the_image_to_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    gates, images = _recorded(AttnSpec.cbam(reduction=4))
    names = [n for n, t in gates.spatial().items() if t.dim() == 4]
    assert len(names) == 2  # one spatial gate per CBAM, at 24x24 and 12x12
    figure = gates.plot(tmp_path / "gates.png", images, index=1)
    assert (tmp_path / "gates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    drawn = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in drawn] == names
    for ax in drawn:  # the image, then the gate resized to it (24x24 both), half transparent
        image, gate = ax.get_images()
        assert image.get_array().shape[:2] == gate.get_array().shape == (24, 24) and gate.get_alpha() == 0.55
    bars = [ax for ax in figure.axes if ax.get_ylabel() == "gate value"]
    assert len(bars) == len(names)  # a colour bar per gate
    first = gates.spatial()[names[1]][1, 0]
    resized = torch.nn.functional.interpolate(first[None, None], size=(24, 24), mode="bilinear")[0, 0]
    assert torch.allclose(torch.as_tensor(drawn[1].get_images()[1].get_array()), resized)  # sample 1's gate
    plt.close(figure)


def test_plot_onto_an_axes_and_without_images():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    gates, _ = _recorded(AttnSpec.cbam(reduction=4))
    figure, ax = plt.subplots()
    assert gates.plot(ax=ax) is figure
    (gate,) = ax.get_images()  # the first gate alone, at its own size
    name, first = next(iter(gates.spatial().items()))
    assert gate.get_array().shape == (24, 24) and ax.get_title() == name
    assert torch.allclose(torch.as_tensor(gate.get_array()), first[0, 0])
    plt.close(figure)


def test_plot_errors_say_what_is_missing(monkeypatch):
    gates, _ = _recorded(AttnSpec.se(reduction=4))  # a channel gate: nothing spatial to draw
    pytest.importorskip("matplotlib")
    with pytest.raises(InputError, match="no 2-D spatial gate"):
        gates.plot()
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # as if matplotlib were not installed
    with pytest.raises(ImportError, match="pip install matplotlib"):
        _recorded(AttnSpec.cbam(reduction=4))[0].plot()
