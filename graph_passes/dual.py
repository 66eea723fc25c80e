"""A GraphModule with a training graph and an eval graph, for models whose forward itself
branches on ``self.training`` (auxiliary classifiers used only in training).

``train()`` / ``eval()`` switch the active graph (and recompile), so the rewritten model
does in each mode what the original did. Copies and pickles keep both graphs.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from dynattn.compiler.emit import copy_graph

__all__ = ["DualGraphModule", "copy_path"]


def copy_path(src: nn.Module, dst: nn.Module, target: str) -> None:
    """Make ``dst.<target>`` the object ``src.<target>`` is, creating plain containers on the way."""
    *parents, leaf = target.split(".")
    s, d = src, dst
    for name in parents:
        s = getattr(s, name)
        nxt = getattr(d, name, None)
        if nxt is None:
            nxt = nn.Module()
            setattr(d, name, nxt)
        if nxt is s:
            return
        d = nxt
    if hasattr(d, leaf) and getattr(d, leaf) is getattr(s, leaf):
        return
    value = getattr(s, leaf)
    if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
        d.register_buffer(leaf, value)
    else:
        setattr(d, leaf, value)


class DualGraphModule(fx.GraphModule):
    """Runs ``train_graph`` in training mode and ``eval_graph`` in eval mode."""

    def __init__(self, root: nn.Module, train_graph: fx.Graph, eval_graph: fx.Graph,
                 class_name: str = "GraphModule") -> None:
        super().__init__(root, eval_graph, class_name)
        for node in train_graph.nodes:
            if node.op in ("call_module", "get_attr"):
                copy_path(root, self, node.target)
        self._dual_graphs = {"train": train_graph, "eval": eval_graph}
        self._dual_mode = "eval"
        self.eval()

    def set_graphs(self, train_graph: fx.Graph, eval_graph: fx.Graph) -> None:
        """Replace both graphs (their targets must already exist on this module)."""
        self._dual_graphs = {"train": train_graph, "eval": eval_graph}
        self.graph = self._dual_graphs[self._dual_mode]

    def train(self, mode: bool = True) -> DualGraphModule:
        super().train(mode)
        graphs = self.__dict__.get("_dual_graphs")
        key = "train" if mode else "eval"
        if graphs is not None and self.__dict__.get("_dual_mode") != key:
            self.__dict__["_dual_mode"] = key
            self.graph = graphs[key]
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> DualGraphModule:
        root = nn.Module()
        root._modules = copy.deepcopy(self._modules, memo)
        root._parameters = copy.deepcopy(self._parameters, memo)
        root._buffers = copy.deepcopy(self._buffers, memo)
        graphs = {k: copy_graph(g) for k, g in self._dual_graphs.items()}
        res = DualGraphModule(root, graphs["train"], graphs["eval"], type(self).__name__)
        res.meta = copy.deepcopy(self.meta, memo)
        return res.train(self.training)

    def __reduce__(self) -> tuple[Any, ...]:
        from torch.fx.graph_module import _format_import_block
        from torch.package import sys_importer

        bodies = {}
        current = self._dual_mode
        for key in ("train", "eval"):
            self.__dict__["_dual_mode"] = key
            self.graph = self._dual_graphs[key]
            code = self.recompile()
            body = {k: v for k, v in self.__dict__.items() if k not in ("_graph", "_dual_graphs")}
            bodies[key] = (body, _format_import_block(code.globals, sys_importer))
        self.__dict__["_dual_mode"] = current
        self.graph = self._dual_graphs[current]
        return (_rebuild_dual, (bodies, type(self).__name__, self.training))


def _rebuild_dual(bodies: dict[str, tuple[dict, str]], class_name: str, training: bool) -> DualGraphModule:
    from torch.fx.graph_module import reduce_graph_module

    modules = {key: reduce_graph_module(dict(body), block) for key, (body, block) in bodies.items()}
    res = DualGraphModule(modules["eval"], modules["train"].graph, modules["eval"].graph, class_name)
    for key in ("train", "eval"):
        for node in modules[key].graph.nodes:
            if node.op in ("call_module", "get_attr"):
                copy_path(modules[key], res, node.target)
    res.meta = bodies["eval"][0].get("meta", {})
    return res.train(training)

