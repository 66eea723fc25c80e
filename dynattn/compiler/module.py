"""``AttentionModule``: the ``torch.fx.GraphModule`` that ``build`` returns for feature targets.

A GraphModule whose graph is determined by ``(spec, channels)``. That lets it pickle the
way einops layers do: the spec, not the derived graph, so an unpickled module has the
same readable ``.code`` (fx's own pickling re-traces the code and renames every node),
and ``copy.deepcopy`` keeps the class name (fx resets it to "GraphModule").
"""

from __future__ import annotations

from typing import Any

import torch.fx as fx

from ..spec import AttnSpec

__all__ = ["AttentionModule"]

# fx state that is derived from the graph and re-made when the module is rebuilt.
_DERIVED = frozenset({"_graph", "_code", "_lineno_map", "_prologue_start"})


class AttentionModule(fx.GraphModule):
    """A feature-map attention built from ``spec`` for ``channels`` input channels.

    ``spec``, ``channels`` and the generated ``code`` describe it completely; parameters,
    buffers, hooks and training flags are ordinary ``nn.Module`` state.
    """

    spec: AttnSpec
    channels: int

    def __deepcopy__(self, memo: dict[int, Any]) -> AttentionModule:
        res = super().__deepcopy__(memo)
        type(res).__name__ = type(self).__name__
        res.spec, res.channels = self.spec, self.channels
        res.meta["dynattn_code"] = self.meta.get("dynattn_code")
        return res

    def __reduce__(self) -> tuple[Any, ...]:
        if self.code != self.meta.get("dynattn_code"):
            return super().__reduce__()  # the graph was edited after build: keep fx's generic path
        state = {k: v for k, v in self.__dict__.items() if k not in _DERIVED}
        return (_rebuild, (self.spec, self.channels), state)


def _rebuild(spec: AttnSpec, channels: int) -> AttentionModule:
    from . import build_feature

    return build_feature(spec, channels)
