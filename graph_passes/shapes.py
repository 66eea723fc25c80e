"""Shapes and layouts of every node, by propagation on meta tensors (no real compute).

Parameters and buffers are swapped for meta tensors of the same shape while the graph runs
on a meta input, so a billion-parameter model costs nothing and nothing of the model is
touched (train-mode BatchNorm updates land on the meta copies). Where an op has no meta
kernel, propagation falls back to fake tensors, and where a leaf's control flow needs
tensor values, to real zeros.

Layouts follow the axes: a 4-D placeholder and the outputs of 2-D convs, norms and
pooling are NCHW; element-wise ops keep their input's layout; ``permute``/``transpose``
move axes; reshapes forget them. Sites are only ever chosen at NCHW tensors.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from dynattn.compiler.module import SpecModule
from dynattn.dynamic_conv import DynamicConv2d
from dynattn.errors import SpecError

__all__ = ["propagate", "SHAPE", "DATA", "LAYOUT", "NCHW", "ACTIVATIONS", "default_example_inputs", "DEFAULT_SIZES"]

SHAPE = "dynattn_shape"
DATA = "dynattn_carries_tensors"
LAYOUT = "dynattn_layout"
NCHW = ("n", "c", "h", "w")

# modules whose 4-D output is NCHW
_NCHW_MODULES = (
    nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LocalResponseNorm,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d, nn.Upsample,
    nn.PixelShuffle, nn.ZeroPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ConstantPad2d,
    DynamicConv2d, SpecModule,
)
_NCHW_FUNCTIONS = {
    F.conv2d, F.batch_norm, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
    F.interpolate, F.pad, torch.conv2d, torch.batch_norm, torch.max_pool2d,
}
# ops that keep the layout of their first tensor input (element-wise, or along existing axes)
_KEEP_FUNCTIONS = {
    operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, operator.isub, operator.truediv,
    operator.itruediv, operator.neg, torch.add, torch.mul, torch.sub, torch.div, torch.relu, torch.sigmoid,
    torch.tanh, torch.clamp, torch.cat, torch.where, F.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.hardsigmoid,
    F.sigmoid, F.leaky_relu, F.elu, F.mish, F.dropout, F.dropout2d, F.layer_norm, F.linear, torch.flip,
}
_KEEP_METHODS = {
    "add", "add_", "mul", "mul_", "sub", "div", "relu", "relu_", "sigmoid", "sigmoid_", "clamp", "contiguous",
    "clone", "to", "float", "half", "type_as", "mean", "sum", "amax", "max", "softmax", "expand_as", "__add__",
    "__mul__", "__sub__", "__truediv__",
}
#: Element-wise activation modules (sites.py's "conv" strategy extends a conv block over them).
ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
    nn.ELU, nn.Mish, nn.PReLU,
)
_KEEP_MODULES = (*ACTIVATIONS, nn.Dropout, nn.Dropout2d, nn.Identity, nn.LayerNorm, nn.Linear, nn.Softmax)


@contextlib.contextmanager
def _swapped_state(module: nn.Module, convert, *, parameters: bool = True) -> Iterator[None]:
    """Temporarily replace every buffer, and every parameter unless ``parameters=False``, by
    ``convert(tensor)`` (a tensor shared by several modules is converted once)."""
    saved: list[tuple[dict, str, torch.Tensor]] = []
    seen: dict[int, torch.Tensor] = {}
    try:
        for mod in module.modules():
            for store in ((mod._parameters, mod._buffers) if parameters else (mod._buffers,)):
                for key, value in list(store.items()):
                    if value is None:
                        continue
                    saved.append((store, key, value))
                    new = seen.get(id(value))
                    if new is None:
                        new = convert(value)
                        if isinstance(value, nn.Parameter):
                            new = nn.Parameter(new, requires_grad=value.requires_grad)
                        seen[id(value)] = new
                    store[key] = new
        yield
    finally:
        for store, key, value in saved:
            store[key] = value


# modules whose output has their input's shape and dtype: propagation skips running them
# (on meta tensors BatchNorm alone runs through a Python decomposition, ~5 ms a call)
_SHAPE_KEEPING = (
    nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm, nn.Identity, nn.Dropout,
    nn.Dropout2d, *ACTIVATIONS, SpecModule,
)


def _has_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_has_tensor(v) for v in value.values())
    return False


class _Recorder(fx.Interpreter):
    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        mod = self.fetch_attr(target)
        if isinstance(mod, _SHAPE_KEEPING) and len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor):
            return args[0]
        return super().call_module(target, args, kwargs)

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        n.meta[SHAPE] = tuple(result.shape) if isinstance(result, torch.Tensor) else None
        n.meta[DATA] = _has_tensor(result)  # False for shape arithmetic such as x.shape[0]
        return result


def _to_meta(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def _run(gm: fx.GraphModule, inputs: Sequence[Any]) -> None:
    """Meta tensors first; fake tensors where an op has no meta kernel; real tensors (zeros,
    with the buffers cloned so that nothing is updated) where a leaf's control flow needs
    values, e.g. ``if x.mean() > 0``."""
    meta_inputs = [_to_meta(x) if isinstance(x, torch.Tensor) else x for x in inputs]
    try:
        with _swapped_state(gm, _to_meta), torch.no_grad():
            _Recorder(gm).run(*meta_inputs)
        return
    except Exception:
        pass
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fake_inputs = [mode.from_tensor(x) if isinstance(x, torch.Tensor) else x for x in inputs]
    try:
        with _swapped_state(gm, mode.from_tensor), mode, torch.no_grad():
            _Recorder(gm).run(*fake_inputs)
        return
    except Exception:
        if any(p.device.type == "meta" for p in gm.parameters()):
            raise
    real_inputs = [torch.zeros(x.shape, dtype=x.dtype, device=x.device) if isinstance(x, torch.Tensor) and
                   x.device.type == "meta" else x for x in inputs]
    with _swapped_state(gm, torch.clone, parameters=False), torch.no_grad():  # nothing is updated
        _Recorder(gm).run(*real_inputs)


def _tensor_args(n: fx.Node) -> list[fx.Node]:
    return [a for a in n.all_input_nodes if a.meta.get(SHAPE) is not None]


def _layout(n: fx.Node, modules: dict[str, nn.Module]) -> tuple[str, ...] | None:
    shape = n.meta.get(SHAPE)
    if shape is None or len(shape) != 4:
        return None
    if n.op == "placeholder":
        return NCHW
    inputs = _tensor_args(n)
    # the layout an element-wise op keeps: that of an input of the output's own shape
    same = [a.meta.get(LAYOUT) for a in inputs if a.meta.get(SHAPE) == shape and a.meta.get(LAYOUT)]
    first = same[0] if same else (inputs[0].meta.get(LAYOUT) if inputs else None)
    if n.op == "call_module":
        mod = modules.get(n.target)
        if isinstance(mod, _NCHW_MODULES):
            return NCHW
        if isinstance(mod, _KEEP_MODULES):
            return first
        # an opaque leaf: trust it to keep an NCHW input NCHW when it keeps the rank
        return first if first == NCHW else None
    if n.op == "call_function":
        if n.target in _NCHW_FUNCTIONS:
            return NCHW
        if n.target in _KEEP_FUNCTIONS:
            return first
        if n.target in (torch.permute,) and first is not None:
            return tuple(first[d] for d in n.args[1])
        if n.target in (torch.transpose, torch.swapaxes) and first is not None:
            return _swap(first, n.args[1], n.args[2])
        return first if inputs and inputs[0].meta.get(SHAPE) == shape and n.target is operator.getitem else None
    if n.op == "call_method":
        if n.target in _KEEP_METHODS:
            return first
        if n.target == "permute" and first is not None:
            dims = n.args[1:] if not isinstance(n.args[1], (tuple, list)) else n.args[1]
            return tuple(first[d] for d in dims)
        if n.target in ("transpose", "swapaxes") and first is not None:
            return _swap(first, n.args[1], n.args[2])
        if n.target in ("view", "reshape") and inputs and inputs[0].meta.get(SHAPE) == shape:
            return first
    return None


def _swap(layout: tuple[str, ...], a: int, b: int) -> tuple[str, ...]:
    out = list(layout)
    out[a], out[b] = out[b], out[a]
    return tuple(out)


def propagate(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> None:
    """Write ``meta[SHAPE]`` and ``meta[LAYOUT]`` on every node of ``gm``'s graph."""
    try:
        _run(gm, example_inputs)
    except Exception as exc:
        shapes = [tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__ for x in example_inputs]
        raise SpecError(
            "example_inputs", shapes, f"shape propagation through {type(gm).__name__} failed "
            f"({type(exc).__name__}: {exc})",
            hint="pass example_inputs=(tensor,) with the shape the model expects (channels, size)",
        ) from exc
    modules = dict(gm.named_modules())
    for n in gm.graph.nodes:
        n.meta[LAYOUT] = _layout(n, modules)


#: Image sizes tried, in order, when no example input is given.
DEFAULT_SIZES = (224, 299, 384, 512)


def default_example_inputs(gm: fx.GraphModule, size: int = 224) -> tuple[torch.Tensor, ...]:
    """A plausible input: batch 2, the first conv's input channels, size x size, its dtype and device."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    modules = dict(gm.named_modules())
    for n in gm.graph.nodes:
        mod = modules.get(n.target) if n.op == "call_module" else None
        if isinstance(mod, (nn.Conv2d, DynamicConv2d)):
            weight = mod.weight
            if len(placeholders) != 1:
                break
            return (torch.empty(2, mod.in_channels, size, size, dtype=weight.dtype, device=weight.device),)
    raise SpecError("example_inputs", None, "cannot guess an input: the model's forward does not start from "
                    "one image tensor feeding a conv", hint="pass example_inputs=(torch.randn(2, 3, 224, 224),)")

