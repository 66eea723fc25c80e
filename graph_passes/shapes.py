"""Shapes and layouts of every node, by propagation on meta tensors (no real compute).

Following torch.fx's own passes (``torch/fx/passes/shape_prop.py``), every node that produces a
tensor gets ``node.meta["tensor_meta"]``, a ``torch.fx.passes.shape_prop.TensorMetadata``; the
two facts fx has no key for are namespaced: ``node.meta["dynattn_layout"]`` (the axes, below) and
``node.meta["dynattn_carries_tensors"]`` (False for shape arithmetic such as ``x.shape[0]``). A
failure names the node it happened at, for every fallback that was tried.

Parameters and buffers are swapped for meta tensors of the same shape while the graph runs
on a meta input, so a billion-parameter model costs nothing and nothing of the model is
touched (train-mode BatchNorm updates land on the meta copies). Where an op has no meta
kernel, propagation falls back to fake tensors, and where a leaf's control flow needs
tensor values, to real zeros.

Layouts follow the axes: a 4-D placeholder and the outputs of 2-D convs, norms and
pooling are NCHW; likewise NCL for 1-D and NCDHW for 3-D conv nets (a 3-D or 5-D placeholder
only in a model that has a 1-D or 3-D conv, so a transformer's (B, N, D) tokens are no feature
map); element-wise ops keep their input's layout; ``permute``/``transpose`` move axes; reshapes
forget them. Sites are only ever chosen at feature-map tensors (NCL, NCHW, NCDHW).
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import TensorMetadata

from dynattn._deprecated import moved_attribute
from dynattn._passes_api import CONVS, ModelError, leaf_modules

__all__ = ["propagate", "shape_of", "TENSOR_META", "DATA", "LAYOUT", "NCHW", "NCL", "NCDHW", "FEATURE_LAYOUTS",
           "is_feature_map", "ACTIVATIONS", "guess_input_sizes", "example_for", "has_conv", "NoInputGuess",
           "DEFAULT_SIZES", "DEFAULT_SIZES_BY_SPATIAL_DIMS", "is_conv_module", "conv_spatial_dims"]

#: torch.fx's key (ShapeProp, FakeTensorProp-based passes read it too).
TENSOR_META = "tensor_meta"
DATA = "dynattn_carries_tensors"
LAYOUT = "dynattn_layout"
NCHW = ("n", "c", "h", "w")
NCL = ("n", "c", "l")
NCDHW = ("n", "c", "d", "h", "w")
#: The layout of a feature map by its number of dims.
FEATURE_LAYOUTS = {3: NCL, 4: NCHW, 5: NCDHW}
_FEATURE_SET = frozenset(FEATURE_LAYOUTS.values())


def is_feature_map(n: fx.Node) -> bool:
    """True when ``n`` produces a feature map (NCL, NCHW or NCDHW) computed from the input."""
    return n.meta.get(LAYOUT) in _FEATURE_SET and n.op not in ("placeholder", "get_attr", "output")


def shape_of(n: fx.Node) -> tuple[int, ...] | None:
    """The shape of the tensor ``n`` produces (None when it produces no single tensor)."""
    meta = n.meta.get(TENSOR_META)
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


#: The convs of 1-D, 2-D and 3-D networks (``dynattn.layers.CONVS``: spatial dims -> class).
_CONV_TYPES = tuple(CONVS.values())


def is_conv_module(module: object) -> bool:
    """An ``nn.Conv1d/2d/3d`` (or subclass) or a module registered with ``role="conv"`` (DynamicConv2d)."""
    return isinstance(module, (*_CONV_TYPES, *leaf_modules("conv")))


def conv_spatial_dims(module: object) -> int | None:
    """The spatial dims of a conv: 1, 2 or 3 for an ``nn.Conv1d/2d/3d`` (or subclass), the ``spatial_dims``
    attribute of a module registered with ``role="conv"`` (``dims`` for a class written before it had that
    name); None for anything else."""
    for spatial_dims, cls in CONVS.items():
        if isinstance(module, cls):
            return spatial_dims
    if not isinstance(module, leaf_modules("conv")):
        return None
    spatial_dims = getattr(module, "spatial_dims", None)
    if spatial_dims is None:
        spatial_dims = getattr(module, "dims", None)
    return spatial_dims if spatial_dims in CONVS else None


# modules whose 3-D / 4-D / 5-D output is a feature map (NCL / NCHW / NCDHW)
_NCHW_MODULES = (
    *_CONV_TYPES, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.BatchNorm1d, nn.BatchNorm2d,
    nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm, nn.LocalResponseNorm,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.LPPool1d, nn.LPPool2d, nn.Upsample, nn.PixelShuffle, nn.ZeroPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d,
    nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReplicationPad1d,
    nn.ReplicationPad3d,
)
_NCHW_FUNCTIONS = {
    F.conv1d, F.conv2d, F.conv3d, F.batch_norm, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d,
    F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.interpolate, F.pad, torch.conv1d,
    torch.conv2d, torch.conv3d, torch.batch_norm, torch.max_pool1d, torch.max_pool2d, torch.max_pool3d,
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
#: Element-wise activation modules (sites.py's "conv" site rule extends a conv block over them).
ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
    nn.ELU, nn.Mish, nn.PReLU,
)
_KEEP_MODULES = (*ACTIVATIONS, nn.Dropout, nn.Dropout2d, nn.Identity, nn.LayerNorm, nn.Linear, nn.Softmax)


@contextlib.contextmanager
def _swapped_state(module: nn.Module, convert, *, parameters: bool = True) -> Iterator[None]:
    """Temporarily replace every buffer, and every parameter unless ``parameters=False``, by
    ``convert(tensor)`` (a tensor shared by several modules is converted once). Plain attributes that a forward
    run meanwhile sets are restored too: torchvision's ``AnchorGenerator`` caches its anchors on itself, which
    would otherwise keep meta tensors in the caller's model."""
    saved: list[tuple[dict, str, torch.Tensor]] = []
    seen: dict[int, torch.Tensor] = {}
    attributes = [(mod, dict(mod.__dict__)) for mod in module.modules()]
    try:
        for store, key, value in _state_slots(module, parameters):
            saved.append((store, key, value))
            if id(value) not in seen:
                seen[id(value)] = _converted(value, convert)
            store[key] = seen[id(value)]
        yield
    finally:
        for store, key, value in saved:
            store[key] = value
        for mod, kept in attributes:  # the same objects as before (their parameter / buffer dicts restored above)
            if mod.__dict__.keys() != kept.keys() or any(mod.__dict__[k] is not v for k, v in kept.items()):
                mod.__dict__.clear()
                mod.__dict__.update(kept)


def _state_slots(module: nn.Module, parameters: bool) -> Iterator[tuple[dict, str, torch.Tensor]]:
    """(store, key, tensor) for every buffer, and every parameter when ``parameters``, of every submodule."""
    for mod in module.modules():
        for store in ((mod._parameters, mod._buffers) if parameters else (mod._buffers,)):
            yield from ((store, key, value) for key, value in list(store.items()) if value is not None)


def _converted(value: torch.Tensor, convert) -> torch.Tensor:
    """``convert(value)``, a parameter again (with the same ``requires_grad``) where ``value`` is one."""
    new = convert(value)
    return nn.Parameter(new, requires_grad=value.requires_grad) if isinstance(value, nn.Parameter) else new


# modules whose output has their input's shape and dtype: propagation skips running them
# (on meta tensors BatchNorm alone runs through a Python decomposition, ~5 ms a call)
_SHAPE_KEEPING = (
    nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm, nn.Identity, nn.Dropout,
    nn.Dropout2d, *ACTIVATIONS,
)


def _nchw_modules() -> tuple[type, ...]:
    return (*_NCHW_MODULES, *leaf_modules("conv"), *leaf_modules("attention"))


def _shape_keeping() -> tuple[type, ...]:
    return (*_SHAPE_KEEPING, *leaf_modules("attention"))


def _has_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_has_tensor(v) for v in value.values())
    return False


def _tensor_meta(t: torch.Tensor) -> TensorMetadata:
    return TensorMetadata(t.shape, t.dtype, t.requires_grad, t.stride(), None, False, {})


class NodeFailure(Exception):
    """Running ``node`` failed with ``error``."""

    def __init__(self, node: fx.Node, error: Exception) -> None:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        super().__init__(f"at node {node.format_node()}: {type(error).__name__}: {first_line}")
        self.node, self.error = node, error


class _ShapeProp(fx.Interpreter):
    """fx's ShapeProp without its printed tracebacks, skipping modules that keep the shape."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.keep = _shape_keeping()

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        mod = self.fetch_attr(target)
        if isinstance(mod, self.keep) and len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor):
            return args[0]
        return super().call_module(target, args, kwargs)

    def run_node(self, n: fx.Node) -> Any:
        try:
            result = super().run_node(n)
        except NodeFailure:
            raise
        except Exception as exc:
            raise NodeFailure(n, exc) from exc
        if isinstance(result, torch.Tensor):
            n.meta[TENSOR_META] = _tensor_meta(result)
        else:
            n.meta.pop(TENSOR_META, None)
        n.meta[DATA] = _has_tensor(result)  # False for shape arithmetic such as x.shape[0]
        return result


def map_tensors(fn, value: Any) -> Any:
    """``value`` with ``fn`` applied to every tensor in it (through lists, tuples and dicts)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(fn, v) for v in value)
    if isinstance(value, dict):
        return {k: map_tensors(fn, v) for k, v in value.items()}
    return value


def _tensors(value: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    map_tensors(out.append, value)
    return out


def capture_calls(model: nn.Module, inputs: Sequence[Any]) -> tuple[dict[str, tuple], set[str]]:
    """The positional arguments (as meta tensors) of each submodule called exactly once, without keyword
    arguments, when ``model`` runs on ``inputs`` with its state swapped for meta tensors (nothing is
    computed or changed), and the submodules whose output is (in) the model's output (a segmentation head);
    both empty when that run fails (an op with no meta kernel)."""
    seen: dict[str, list[tuple | None]] = {}
    made: dict[str, set[int]] = {}

    def record(name: str):
        return lambda _m, args, kwargs: seen.setdefault(name, []).append(None if kwargs else args)

    def produced(name: str):
        return lambda _m, _args, output: made.setdefault(name, set()).update(id(t) for t in _tensors(output))

    named = [(name, m) for name, m in model.named_modules() if name]
    handles = [m.register_forward_pre_hook(record(name), with_kwargs=True) for name, m in named]
    handles += [m.register_forward_hook(produced(name)) for name, m in named]
    try:
        with _swapped_state(model, _to_meta), torch.no_grad():
            output = {id(t) for t in _tensors(model(*map_tensors(_to_meta, tuple(inputs))))}
    except Exception:  # the model's own code decides; no input is captured then
        return {}, set()
    finally:
        for h in handles:
            h.remove()
    calls = {name: calls[0] for name, calls in seen.items() if len(calls) == 1 and calls[0] is not None}
    return calls, {name for name, ids in made.items() if ids & output}


def _fake_on(mode: Any, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A fake tensor of ``x`` (a meta input: on ``device``, like the parameters; nothing allocated)."""
    if x.device.type != "meta":
        return mode.from_tensor(x)
    with mode:
        return torch.empty(x.shape, dtype=x.dtype, device=device)


def _to_meta(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


#: ``stop(how, failure)`` after a failed attempt ("meta tensors", "fake tensors"): True when the caller mends
#: that failure otherwise, so that the next attempts are not made.
Stop = Callable[[str, NodeFailure], bool]


def _run(gm: fx.GraphModule, inputs: Sequence[Any], max_bytes: int | None = None, stop: Stop | None = None) -> None:
    """Meta tensors first; fake tensors where an op has no meta kernel; real tensors (zeros,
    with the buffers cloned so that nothing is updated) where a leaf's control flow needs
    values, e.g. ``if x.mean() > 0``; ``stop`` may end it after meta or fake tensors.
    Raises a ``PropagationFailure`` with one ``NodeFailure`` per attempt when all fail."""
    failures: list[tuple[str, NodeFailure]] = []
    meta_inputs = map_tensors(_to_meta, inputs)
    try:
        with _swapped_state(gm, _to_meta), torch.no_grad():
            _ShapeProp(gm).run(*meta_inputs)
        return
    except NodeFailure as exc:
        failures.append(("meta tensors", exc))
        if stop is not None and stop("meta tensors", exc):
            raise PropagationFailure(failures) from None
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    device = next((p.device for p in gm.parameters()), torch.device("cpu"))
    fake_inputs = map_tensors(lambda x: _fake_on(mode, x, device), inputs)
    try:
        with _swapped_state(gm, mode.from_tensor), mode, torch.no_grad():
            _ShapeProp(gm).run(*fake_inputs)
        return
    except NodeFailure as exc:
        failures.append(("fake tensors", exc))
        if stop is not None and stop("fake tensors", exc):
            raise PropagationFailure(failures) from None
    if not any(p.device.type == "meta" for p in gm.parameters()):
        _check_budget(gm, inputs, max_bytes, failures)
        real_inputs = map_tensors(lambda x: torch.zeros(x.shape, dtype=x.dtype, device=device)
                                  if x.device.type == "meta" else x, inputs)
        try:
            with _swapped_state(gm, torch.clone, parameters=False), torch.no_grad():  # nothing is updated
                _ShapeProp(gm).run(*real_inputs)
            return
        except NodeFailure as exc:
            failures.append(("real zeros", exc))
    raise PropagationFailure(failures)


def values_may_mend(gm: fx.GraphModule, failure: NodeFailure) -> bool:
    """Whether real tensors may run ``failure.node`` where fake tensors failed: the op's result depends on values
    (fake tensors raise an error of their own, or the op has no fake kernel), or the node runs code that may read
    them (a module or function not from torch). A torch op or module failing on shapes (a conv given the wrong
    number of channels) fails on real tensors too."""
    error, n = failure.error, failure.node
    if isinstance(error, NotImplementedError) or type(error).__module__.startswith(_FAKE_ERROR_MODULES):
        return True
    if n.op == "call_module":
        owner = type(gm.get_submodule(n.target)).__module__
    elif n.op == "call_function":
        owner = getattr(n.target, "__module__", None) or ""
    else:
        return False  # a tensor method
    return not owner.startswith(_SHAPE_ONLY_MODULES)


# where fake tensors' own errors (data-dependent output, unsupported op) are defined
_FAKE_ERROR_MODULES = ("torch._subclasses", "torch.fx.experimental")
# the code of torch's own modules and functions (and of Python's operators) decides on shapes, never on values
_SHAPE_ONLY_MODULES = ("torch.", "_operator", "operator", "builtins", "math")


def _check_budget(gm: fx.GraphModule, inputs: Sequence[Any], max_bytes: int | None,
                  failures: list[tuple[str, NodeFailure]]) -> None:
    """Raise ``ProbeBudget`` when a run on real zeros could take more than ``max_bytes``."""
    need = real_run_bytes(gm, inputs) if max_bytes is not None else 0
    if max_bytes is not None and need > max_bytes:
        shapes = [tuple(x.shape) for x in inputs if isinstance(x, torch.Tensor)]
        err = ProbeBudget("example_inputs", None, f"guessing an input ({shapes}) would need up to {need / 2**30:.1f} "
                          f"GiB on real tensors, over the probe budget of {max_bytes / 2**30:.1f} GiB",
                          hint="pass example_inputs=(tensor,) of the shape the model expects")
        err.details, err.node = str(PropagationFailure(failures)), failures[0][1].node  # where meta tensors failed
        raise err


class PropagationFailure(Exception):
    """Every way of running the graph failed; ``failures`` says how each failed, and where."""

    def __init__(self, failures: list[tuple[str, NodeFailure]]) -> None:
        self.failures = failures
        self.node = failures[-1][1].node
        super().__init__("; ".join(f"on {how} {exc}" for how, exc in failures))


def _tensor_args(n: fx.Node) -> list[fx.Node]:
    return [a for a in n.all_input_nodes if shape_of(a) is not None]


def _layout(n: fx.Node, modules: dict[str, nn.Module], map_ndims: frozenset[int]) -> tuple[str, ...] | None:
    """The axes of ``n``'s output; ``map_ndims``: the numbers of dims of the feature maps the model's convs
    read (a 3-D or 5-D input is a feature map only where a 1-D or 3-D conv will read it)."""
    shape = shape_of(n)
    if shape is None or len(shape) not in FEATURE_LAYOUTS:
        return None
    layout = FEATURE_LAYOUTS[len(shape)]
    if n.op == "placeholder" or _from_input_list(n):
        return layout if len(shape) == 4 or len(shape) in map_ndims else None
    inputs = _tensor_args(n)
    # the layout an element-wise op keeps: that of an input of the output's own shape
    same = [a.meta.get(LAYOUT) for a in inputs if shape_of(a) == shape and a.meta.get(LAYOUT)]
    first = same[0] if same else (inputs[0].meta.get(LAYOUT) if inputs else None)
    if n.op == "call_module":
        mod = modules.get(n.target)
        if isinstance(mod, _nchw_modules()):
            return layout
        if isinstance(mod, _KEEP_MODULES):
            return first
        # an opaque leaf: trust it to keep a feature-map input one when it keeps the rank
        return first if first == layout else None
    if n.op == "call_function":
        if n.target in _NCHW_FUNCTIONS:
            return layout
        if n.target in _KEEP_FUNCTIONS:
            return first
        if n.target in (torch.permute,) and first is not None:
            return tuple(first[d] for d in n.args[1])
        if n.target in (torch.transpose, torch.swapaxes) and first is not None:
            return _swap(first, n.args[1], n.args[2])
        return first if inputs and shape_of(inputs[0]) == shape and n.target is operator.getitem else None
    if n.op == "call_method":
        if n.target in _KEEP_METHODS:
            return first
        if n.target == "permute" and first is not None:
            order = n.args[1:] if not isinstance(n.args[1], (tuple, list)) else n.args[1]
            return tuple(first[d] for d in order)
        if n.target in ("transpose", "swapaxes") and first is not None:
            return _swap(first, n.args[1], n.args[2])
        if n.target in ("view", "reshape") and inputs and shape_of(inputs[0]) == shape:
            return first
    return None


def _from_input_list(n: fx.Node, steps: int = 8) -> bool:
    """``n`` takes a tensor out of an input that is a list or tuple of them (a decoder's features), through any
    slicing: it is an input as a tensor placeholder is."""
    for _ in range(steps):
        if n.op != "call_function" or n.target is not operator.getitem or not isinstance(n.args[0], fx.Node):
            return False
        n = n.args[0]
        if shape_of(n) is not None:
            return False  # indexing a tensor, not a list
        if n.op == "placeholder":
            return True
    return False


def _swap(layout: tuple[str, ...], a: int, b: int) -> tuple[str, ...]:
    out = list(layout)
    out[a], out[b] = out[b], out[a]
    return tuple(out)


def propagate(gm: fx.GraphModule, example_inputs: Sequence[Any], max_bytes: int | None = None,
              stop: Stop | None = None) -> None:
    """Write ``meta["tensor_meta"]`` and ``meta[LAYOUT]`` on every node of ``gm``'s graph.

    Raises ``ModelError`` naming the node where the graph failed to run on the example inputs (its
    ``node`` attribute; every attempt in ``details``). ``max_bytes`` bounds the memory of a run on real
    zeros (a ``ProbeBudget`` error past it). ``stop(how, failure)``, called after a failed run on meta or
    fake tensors, may end there: the caller mends that failure otherwise (the analysis makes a branching module
    a leaf, where a run on real zeros, seconds on a full-size guessed input, would fail the same way)."""
    try:
        _run(gm, example_inputs, max_bytes, stop)
    except PropagationFailure as exc:
        raise _propagation_error(example_inputs, exc) from exc.failures[-1][1].error
    modules = dict(gm.named_modules())
    map_ndims = frozenset(spatial_dims + 2 for spatial_dims, conv in CONVS.items()
                          if any(isinstance(m, conv) for m in modules.values()))
    for n in gm.graph.nodes:
        n.meta[LAYOUT] = _layout(n, modules, map_ndims)


def module_stack(n: fx.Node) -> list[str]:
    """The modules ``n`` runs in, outermost first (a called module's own path last)."""
    stack = [path for path, _ in n.meta.get("nn_module_stack", {}).values() if path]
    if n.op == "call_module" and str(n.target) not in stack:
        stack.append(str(n.target))
    return stack


def _propagation_error(example_inputs: Sequence[Any], exc: PropagationFailure) -> ModelError:
    """One short first line (the node, its module, the cause, what to try); every attempt in ``details``."""
    shapes = [tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__ for x in example_inputs]
    error = exc.failures[-1][1].error
    stack = module_stack(exc.node)
    inside = f" in {stack[-1]!r}" if stack and exc.node.op != "call_module" else ""  # else the node names it
    hint = "pass example_inputs of the shape the model expects"
    if stack:
        hint += f", or leaf_modules=[{stack[0]!r}]"
    cause = " ".join(str(error).split())
    base = f"example_inputs={shapes!r}: shape propagation failed at node {exc.node.name!r}{inside} () ({hint})"
    room = max(12, 196 - len(base) - len(type(error).__name__))
    cause = cause if len(cause) <= room else cause[:room - 3] + "..."
    err = ModelError("example_inputs", shapes, f"shape propagation failed at node {exc.node.name!r}{inside} "
                     f"({type(error).__name__}: {cause})", hint=hint)
    err.details, err.node = str(exc), exc.node
    return err


class ProbeBudget(ModelError):
    """Running a guessed input on real tensors would take more memory than the probe budget."""


#: The most memory a probe on real zeros may take (an upper bound, every intermediate kept), in bytes:
#: ``DYNATTN_PROBE_BYTES``, default 1 GiB. Meta and fake tensors cost nothing and are not bounded.
PROBE_BYTES = int(os.environ.get("DYNATTN_PROBE_BYTES", str(1 << 30)))


def _bytes(meta: Any) -> int:
    return math.prod(meta.shape) * meta.dtype.itemsize if isinstance(meta, TensorMetadata) else 0


def real_run_bytes(gm: fx.GraphModule, inputs: Sequence[Any]) -> int:
    """An upper bound on the memory of running ``gm`` on real tensors after a meta run that stopped part
    way: the inputs, the buffers (cloned), every intermediate seen, and each node not reached counted
    as the largest tensor seen (a node's output kept to the end)."""
    seen = [_bytes(n.meta.get(TENSOR_META)) for n in gm.graph.nodes]
    largest = max([*seen, *(x.numel() * x.element_size() for x in _tensors(inputs))])
    unseen = sum(1 for n in gm.graph.nodes if TENSOR_META not in n.meta and n.op not in ("output", "get_attr"))
    buffers = sum(b.numel() * b.element_size() for b in gm.buffers())
    inputs_bytes = sum(x.numel() * x.element_size() for x in _tensors(inputs))
    return inputs_bytes + buffers + sum(seen) + unseen * largest


#: Image sizes tried, in order, when no example input is given (after timm's ``pretrained_cfg`` size).
DEFAULT_SIZES = (224, 299, 384, 512)
#: The same for a 1-D conv net's first Conv1d (signal lengths) and a 3-D one's first Conv3d (clips and volumes:
#: 16 frames of 112 x 112, torchvision's video models; then cubes).
DEFAULT_SIZES_BY_SPATIAL_DIMS: dict[int, tuple[tuple[int, ...], ...]] = {
    1: ((1024,), (4096,), (16000,)),
    2: tuple((s, s) for s in DEFAULT_SIZES),
    3: ((16, 112, 112), (96, 96, 96), (32, 224, 224), (128, 128, 128)),
}


class NoInputGuess(ModelError):
    """No example input can be guessed for a module (it does not start from one image feeding a conv)."""


def _first_conv(gm: fx.GraphModule, module: nn.Module) -> nn.Module | None:
    """The first conv the graph runs: a called conv module, or one whose forward was traced through
    (a ``Conv2d`` subclass such as timm's ``ScaledStdConv2d``, found by its place in the module stack)."""
    modules = dict(module.named_modules())
    for n in gm.graph.nodes:
        if n.op == "call_module" and is_conv_module(modules.get(n.target)):
            return modules[n.target]
        for path, _ in reversed(list(n.meta.get("nn_module_stack", {}).values())):
            if is_conv_module(modules.get(path)):
                return modules[path]
    return None


def has_conv(module: nn.Module) -> bool:
    return any(is_conv_module(m) for m in module.modules())


def guess_input_sizes(gm: fx.GraphModule, module: nn.Module) -> tuple[tuple[int, ...], ...]:
    """Plausible input shapes, best first: batch 2, the first conv's input channels, timm's
    ``pretrained_cfg["input_size"]`` when the module has one, then each of ``DEFAULT_SIZES``."""
    required = [n for n in gm.graph.nodes if n.op == "placeholder" and not n.args]  # no default value
    conv = _first_conv(gm, module)
    if conv is None or len(required) != 1:
        why = "no conv" if conv is None else f"{len(required)} required inputs"
        raise NoInputGuess("example_inputs", None, f"cannot guess an input for {type(module).__name__} ({why}): "
                           "its forward does not start from one image tensor feeding a conv",
                           hint="pass example_inputs=(torch.randn(2, 3, 224, 224),)")
    channels = conv.in_channels
    spatial_dims = len(conv.kernel_size) if isinstance(getattr(conv, "kernel_size", None), tuple) else 2
    shapes: list[tuple[int, ...]] = []
    cfg = getattr(module, "pretrained_cfg", None)
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if isinstance(size, (tuple, list)) and len(size) == spatial_dims + 1 and size[0] == channels:
        shapes.append((2, *map(int, size)))
    candidates = ((2, channels, *s) for s in DEFAULT_SIZES_BY_SPATIAL_DIMS.get(spatial_dims, ()))
    shapes.extend(s for s in candidates if s not in shapes)
    return tuple(shapes)


def example_for(gm: fx.GraphModule, shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """An input of ``shape`` on the meta device (no memory), with the dtype of the module's first parameter;
    propagation makes it real zeros on the parameters' device only where it must, within its budget."""
    param = next(iter(gm.parameters()), None)
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    return (torch.empty(shape, dtype=dtype, device="meta"),)


def __getattr__(name: str):
    if name == "DEFAULT_SIZES_BY_DIMS":
        return moved_attribute(__name__, name, __name__, "DEFAULT_SIZES_BY_SPATIAL_DIMS")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
