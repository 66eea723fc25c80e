"""Where each inserted module goes: the block whose own forward holds the site, and the edit there.

A site is a value in the analysed graph. The *owner* of a site is the innermost module whose own
``forward`` computes that edge of the data flow:

- after a value (``conv``, ``stage``, globs, ...): the module whose forward produced it (for the
  output of a submodule call, the module that made the call);
- a residual branch: the module whose forward holds the residual add, since only that input of
  the add is rewired.

Each owner is traced again on its own, with every submodule call kept as one node, the sites are
found there by their stable names, the built modules are inserted into its graph and registered on
it, and its forward is rewritten (:mod:`graph_passes.rewrite`): the owner keeps its class, and the
rest of the model is not touched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch.fx as fx
from torch import nn

from dynattn._passes_api import ModelError

from .analysis import Analysis
from .sites import Site, join_path, site_names
from .trace import TraceFailure, trace_model

__all__ = ["Anchor", "anchors", "owner_graphs", "insert_chains", "local_name"]


@dataclass(frozen=True)
class Anchor:
    """How to find a site in its owner's graph."""

    site: Site
    #: Qualified name of the owner module ("" for the model itself).
    owner: str
    #: The names the value answers to (its stable name and container aliases), for "after" sites.
    names: tuple[str, ...]
    #: For a residual site: the stable name of the add, and which of its inputs is the branch.
    consumer: str | None = None
    arg: int | None = None
    #: Submodules of the owner (qualified) traced through, not kept as calls: those between the
    #: owner and the module whose forward holds the site, when that one cannot be traced alone.
    inline: tuple[str, ...] = ()
    #: The owner's forward arguments its one call fixed to constants (defaults included).
    concrete: tuple[tuple[str, Any], ...] = ()


def _stack(node: fx.Node) -> list[str]:
    """The modules (relative to the traced part), outermost first, whose forward is running at ``node``."""
    stack = [path for path, _ in node.meta.get("nn_module_stack", {}).values()]
    if node.op == "call_module" and stack and stack[-1] == node.target:
        stack = stack[:-1]
    return [p for p in stack if p]


def _owner(node: fx.Node, single_calls: dict[str, dict]) -> tuple[str, list[str]]:
    """The innermost module around ``node`` that can be traced on its own (called once, with tensors
    and constants), and the modules between it and ``node`` that its trace must go through."""
    stack = _stack(node)
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] in single_calls:
            return stack[i], stack[i + 1:]
    return "", stack


def anchors(analysis: Analysis) -> list[Anchor]:
    """One anchor per site (each site name once, the first graph that has it)."""
    out: dict[str, Anchor] = {}
    for part in analysis.parts:
        single = part.traced.single_calls
        for mode, graph in part.traced.graphs.items():
            nodes = {n.name: n for n in graph.nodes}
            names = site_names(graph, part.path)
            for site in part.sites.get(mode, []):
                if site.name in out:
                    continue
                node = nodes[site.node_name]
                where = nodes[site.feeds] if site.feeds is not None else node
                owner, inline = _owner(where, single)
                common = dict(owner=join_path(part.path, owner), inline=tuple(join_path(part.path, p) for p in inline),
                              concrete=tuple(single.get(owner, {}).items()))
                if site.feeds is not None:
                    out[site.name] = Anchor(site, names=(), consumer=names[where][0],
                                            arg=list(where.args).index(node), **common)
                else:
                    out[site.name] = Anchor(site, names=(names[node][0], *names[node][1]), **common)
    return _merge_nested(list(out.values()))


def _merge_nested(placed: list[Anchor]) -> list[Anchor]:
    """An owner traced through by another owner's graph is rewritten there: its sites move up."""
    while True:
        inlined = {p: a.owner for a in placed for p in a.inline}
        moved = [a for a in placed if a.owner in inlined]
        if not moved:
            return placed
        new = []
        for a in placed:
            if a.owner in inlined:
                outer = next(b for b in placed if b.owner == inlined[a.owner])
                a = Anchor(a.site, outer.owner, a.names, a.consumer, a.arg, tuple(sorted({*outer.inline, *a.inline})),
                           outer.concrete)
            new.append(a)
        placed = new


def _relative(paths: Sequence[str], owner: str) -> list[str]:
    return [p[len(owner) + 1:] if owner else p for p in paths if not owner or p.startswith(owner + ".")]


def owner_graphs(model: nn.Module, owner: str, inline: Sequence[str], concrete: dict | None,
                 keep: Sequence[str]) -> dict[str, fx.Graph]:
    """The graph(s) of ``owner``'s own forward, every submodule call one node but for ``inline``.

    Where that does not trace (an inlined module takes a dict that a submodule call would hide, as
    FPN's forward does), ``owner`` is traced through everything but ``keep`` (the other owners and
    the analysis' leaves), which stay calls."""
    block = model.get_submodule(owner)
    try:
        return trace_model(block, own_forward_only=True, inline=_relative(inline, owner),
                           concrete_args=concrete).graphs
    except TraceFailure:
        return trace_model(block, _relative(keep, owner), concrete_args=concrete).graphs


def _find(names: dict[fx.Node, tuple[str, tuple[str, ...]]], anchor: Anchor) -> tuple[fx.Node, fx.Node | None] | None:
    """(the value, the residual add or None) of ``anchor`` among a graph's named nodes."""
    for node, (primary, aliases) in names.items():
        if anchor.consumer is not None:
            if primary == anchor.consumer:
                arg = node.args[anchor.arg] if anchor.arg < len(node.args) else None
                return (arg, node) if isinstance(arg, fx.Node) else None
        elif primary in anchor.names or any(a in anchor.names for a in aliases):
            return (node, None)
    return None


def local_name(anchor: Anchor, tag: str, taken: set[str]) -> str:
    """The attribute name of a module inserted for ``anchor`` in its owner: the site's name relative
    to the owner, made an identifier, with the spec's tag (``bn3_cbam``), unique in the owner."""
    name = anchor.site.name
    if anchor.owner and name.startswith(anchor.owner + "."):
        name = name[len(anchor.owner) + 1:]
    base = re.sub(r"\W", "_", name.replace(":", "_")) + f"_{tag}"
    path, i = base, 1
    while path in taken:
        i += 1
        path = f"{base}_{i}"
    taken.add(path)
    return path


def insert_chains(graphs: dict[str, fx.Graph], owner: str, placed: Sequence[tuple[Anchor, list[str]]]) -> None:
    """Insert, in each graph of ``owner``, the chain of module calls of every anchor after its value
    (or on the residual edge only); a site must be found in at least one graph."""
    names = {mode: site_names(graph, owner) for mode, graph in graphs.items()}  # before any insertion
    for anchor, chain in placed:
        found = False
        for mode, graph in graphs.items():
            hit = _find(names[mode], anchor)
            if hit is None:
                continue
            found = True
            value, consumer = hit
            prev = value
            for target in chain:
                with graph.inserting_after(prev):
                    new = graph.call_module(target, (prev,))
                if consumer is not None and prev is value:
                    consumer.replace_input_with(prev, new)  # only the residual add
                else:
                    prev.replace_all_uses_with(new, delete_user_cb=lambda user, new=new: user is not new)
                prev = new
        if not found:
            raise ModelError(
                "site", anchor.site.name,
                f"cannot be found again in the forward of {owner or 'the model'!r} (a module called more than once "
                "in the model's forward cannot be rewritten for one of its calls)",
                hint="exclude the site with where=..., or pass leaf_modules=[...] naming the shared module",
            )
    for graph in graphs.values():
        graph.lint()
