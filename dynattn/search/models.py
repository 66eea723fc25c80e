"""The small default networks of the proxy tasks, and models named on the command line.

A name is ``module:function`` (a function that returns an ``nn.Module``, called with ``classes=`` and
``in_channels=`` where it takes them), ``timm:NAME``, or a torchvision classification model name; these
are built from scratch (no weights), with the task's input channels and classes.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import warnings
from collections.abc import Callable

import torch
from torch import nn

from ..errors import SpecError

__all__ = ["BasicBlock", "SmallResNet", "load_callable", "model_factory"]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A stem and three basic blocks (16-32-64 channels by default), the second and third at stride 2.

    With the default 5x5 stride-2 stem, 40x40 -> 20, 20, 10, 5 (cluttered digits); ``stem_stride=1`` and
    ``stem_kernel=3`` keep an 8x8 digit at 8, 8, 4, 2. Residual adds give ``where="residual"`` three sites,
    the size changes ``where="stage"`` its sites."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), classes: int = 10, in_channels: int = 1,
                 stem_kernel: int = 5, stem_stride: int = 2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], stem_kernel, stem_stride, stem_kernel // 2,
                                            bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.layer1 = BasicBlock(widths[0], widths[0])
        self.layer2 = BasicBlock(widths[0], widths[1], stride=2)
        self.layer3 = BasicBlock(widths[1], widths[2], stride=2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[2], classes))

    def forward(self, x):
        return self.head(self.layer3(self.layer2(self.layer1(self.stem(x)))))


def load_callable(text: str, what: str) -> Callable:
    """The function ``module:function`` names (a user's task or model); SpecError naming what is missing."""
    module_name, sep, attr = text.partition(":")
    if not (sep and module_name and attr):
        raise SpecError(what, text, "is not module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(what, text, f"cannot import module {module_name!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise SpecError(what, text, f"{module_name} has no function {attr!r}", names)
    return fn


def _call_with(fn: Callable, **kwargs) -> nn.Module:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    taken = {k: v for k, v in kwargs.items() if k in params or any(p.kind == p.VAR_KEYWORD for p in params.values())}
    return fn(**taken)


def _zoo_factory(name: str, classes: int, in_channels: int) -> Callable[[], nn.Module]:
    if name.startswith("timm:"):
        try:
            import timm
        except ImportError:
            raise SpecError("model", name, "timm models need timm: pip install timm") from None
        known = timm.list_models()
        if name[5:] not in known:
            raise SpecError("model", name[5:], "timm has no such model", hint=_close(name[5:], known))
        return lambda: timm.create_model(name[5:], pretrained=False, num_classes=classes, in_chans=in_channels)
    try:
        import torchvision
    except ImportError:
        raise SpecError("model", name, "torchvision models need torchvision: pip install torchvision") from None
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise SpecError("model", name, "is not a torchvision classification model, timm:NAME or module:function",
                        hint=_close(name, known))

    def make() -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torchvision.models.get_model(name, weights=None, num_classes=classes)
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        if first.in_channels != in_channels:  # a grey-scale task: the first conv takes its channels
            first.in_channels = in_channels
            first.weight = nn.Parameter(first.weight.detach()[:, :in_channels].clone())
        return model
    return make


def _close(name: str, known: list[str]) -> str | None:
    close = difflib.get_close_matches(name, known, n=3)
    return f"did you mean {', '.join(close)}?" if close else None


class _Factory:
    """A picklable model factory (worker processes build their own models)."""

    def __init__(self, model: str | Callable[..., nn.Module], classes: int, in_channels: int):
        self.model, self.classes, self.in_channels = model, classes, in_channels
        if isinstance(model, str):
            self._make()  # check the name now: a SpecError before any trial

    def _make(self) -> Callable[..., nn.Module]:
        if callable(self.model):
            return self.model
        if ":" in self.model and not self.model.startswith("timm:"):
            return load_callable(self.model, "model")
        return _zoo_factory(self.model, self.classes, self.in_channels)

    def __call__(self) -> nn.Module:
        return _call_with(self._make(), classes=self.classes, in_channels=self.in_channels)


def model_factory(model: str | Callable[..., nn.Module], classes: int, in_channels: int) -> Callable[[], nn.Module]:
    """A function that builds a fresh model: from a name (see the module docstring) or a callable."""
    return _Factory(model, classes, in_channels)
