"""The ``torch.fx.GraphModule`` subclasses the compiler returns.

Their graph is determined by a spec and a few sizes. That lets them pickle the way einops
layers do: the spec, not the derived graph, so an unpickled module has the same readable
``.code`` (fx's own pickling re-traces the code and renames every node), and
``copy.deepcopy`` keeps the class name (fx resets it to "GraphModule").
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.fx as fx

from ..spec import AttnSpec

__all__ = ["SpecModule"]

# fx state that is derived from the graph and re-made when the module is rebuilt; a compiled
# call (nn.Module.compile) refers to the module it was made for and is made again instead.
_DERIVED = frozenset({"_graph", "_code", "_lineno_map", "_prologue_start", "_compiled_call_impl"})


def _recompile_if_needed(module: fx.GraphModule) -> None:
    options = module.meta.get("dynattn_compile")
    if options is not None:
        module.__dict__.pop("_compiled_call_impl", None)
        module.compile(**options)


class SpecModule(fx.GraphModule):
    """A GraphModule made by the compiler from ``spec`` and the sizes in ``_SIZE_ATTRS``."""

    spec: AttnSpec
    #: The sizes the module is rebuilt from, after the spec.
    _SIZE_ATTRS: ClassVar[tuple[str, ...]] = ()
    #: Further plain attributes that copies keep.
    _EXTRA_ATTRS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def rebuild(cls, spec: AttnSpec, *sizes: Any) -> SpecModule:
        """A fresh module of this class from ``spec`` and the ``_SIZE_ATTRS`` values (pickling)."""
        raise NotImplementedError

    def __deepcopy__(self, memo: dict[int, Any]) -> SpecModule:
        res = super().__deepcopy__(memo)
        type(res).__name__ = type(self).__name__
        for attr in ("spec", *self._SIZE_ATTRS, *self._EXTRA_ATTRS):
            setattr(res, attr, getattr(self, attr))
        res.meta["dynattn_code"] = self.meta.get("dynattn_code")
        _recompile_if_needed(res)
        return res

    def __reduce__(self) -> tuple[Any, ...]:
        state = {k: v for k, v in self.__dict__.items() if k not in _DERIVED}
        if self.code != self.meta.get("dynattn_code"):
            if "_compiled_call_impl" in self.__dict__:
                raise TypeError("a compiled dynattn module whose graph was edited cannot be pickled")
            return super().__reduce__()  # the graph was edited after build: keep fx's generic path
        sizes = tuple(getattr(self, a) for a in self._SIZE_ATTRS)
        return (type(self)._rebuild_base().rebuild, (self.spec, *sizes), state)

    @classmethod
    def _rebuild_base(cls) -> type[SpecModule]:
        """The importable class that defines ``rebuild`` (fx gives every instance a class of its own)."""
        for klass in cls.__mro__:
            if "rebuild" in vars(klass):
                return klass
        raise TypeError(f"{cls.__name__} defines no rebuild")

    def __prepare_scriptable__(self) -> SpecModule:  # torch.jit.script calls it on every submodule first
        raise TypeError(
            f"{type(self).__name__}: dynattn modules cannot be compiled by torch.jit.script (their graphs call "
            "einops and take Python-level specs): use torch.jit.trace(model, example), torch.export.export or "
            "torch.onnx.export, which all keep a dynamic batch")

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        _recompile_if_needed(self)
