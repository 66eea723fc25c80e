"""Optimisation passes over an emitted graph. Each keeps the output unchanged (tested in
``tests/test_compiler_passes.py`` against the unoptimised graph) and is switched off with
``build(..., optimize=False)``.

- :func:`batch_shared_excitation`: several pooled descriptors through one shared excitation
  become one call on their concatenation (CBAM's MLP on avg and max: one batched call, then a
  sum), where the excitation treats the rows of a batch alike (no BatchNorm).
- :func:`eliminate_common_subexpressions`: a pure node computed twice is computed once
  (reductions are emitted in canonical axis order, so two branches pooling the same axes of
  the same tensor share the pooled value, each then viewing it in its own order).

Pooling is emitted as ``mean`` / ``amax`` reductions (never adaptive pooling modules), and
rotations are folded into the pooling patterns (no permute copies of x): those need no pass.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx

from .. import einops_calls
from .graph_writer import BATCHABLE, ROLE

__all__ = ["optimize_graph", "batch_shared_excitation", "eliminate_common_subexpressions", "PURE_FUNCTIONS"]

#: Functions without side effects whose result depends only on their arguments.
PURE_FUNCTIONS = frozenset({
    einops_calls.reduce, einops_calls.rearrange, torch.logsumexp, torch.linalg.vector_norm, torch.std, torch.cat,
    torch.stack, torch.sigmoid, torch.tanh, torch.softmax, torch.nn.functional.hardsigmoid, operator.add,
    operator.sub, operator.mul, operator.truediv, operator.getitem,
})


def _key(node: fx.Node, canon: dict[fx.Node, fx.Node]) -> Any:
    def norm(a: Any) -> Any:
        if isinstance(a, fx.Node):
            return ("node", canon.get(a, a).name)
        if isinstance(a, (list, tuple)):
            return (type(a).__name__, tuple(norm(x) for x in a))
        if isinstance(a, dict):
            return ("dict", tuple(sorted((k, norm(v)) for k, v in a.items())))
        return ("const", type(a).__name__, repr(a))

    return node.op, node.target, norm(node.args), norm(node.kwargs)


def eliminate_common_subexpressions(graph: fx.Graph) -> int:
    """Merge identical pure ``call_function`` and ``get_attr`` nodes; returns how many were removed."""
    seen: dict[Any, fx.Node] = {}
    canon: dict[fx.Node, fx.Node] = {}
    removed = 0
    for node in list(graph.nodes):
        pure = (node.op == "call_function" and node.target in PURE_FUNCTIONS) or node.op == "get_attr"
        if not pure:
            continue
        key = _key(node, canon)
        if key in seen:
            keep = seen[key]
            node.replace_all_uses_with(keep)
            if keep.meta.get(ROLE) is None and node.meta.get(ROLE) is not None:
                keep.meta[ROLE] = node.meta[ROLE]
            graph.erase_node(node)
            canon[node] = keep
            removed += 1
        else:
            seen[key] = node
    return removed


def _add_tree(root: fx.Node, leaves: set[fx.Node]) -> list[fx.Node] | None:
    """The add nodes of a tree rooted at ``root`` whose leaves are exactly ``leaves`` (each inner
    node used only inside the tree), or None."""
    adds, found, stack = [], set(), [root]
    while stack:
        n = stack.pop()
        if n in leaves:
            found.add(n)
        elif n.op == "call_function" and n.target is operator.add and (n is root or len(n.users) == 1):
            adds.append(n)
            stack.extend(a for a in n.args if isinstance(a, fx.Node))
            if any(not isinstance(a, fx.Node) for a in n.args):
                return None
        else:
            return None
    return adds if found == leaves else None


def _add_chain_root(calls: list[fx.Node]) -> tuple[fx.Node, list[fx.Node]] | None:
    """The smallest add tree summing exactly ``calls`` (as emit.add_all writes it)."""
    if any(len(c.users) != 1 for c in calls):
        return None
    node = calls[0]
    while len(node.users) == 1:
        (user,) = node.users
        if user.op != "call_function" or user.target is not operator.add:
            return None
        adds = _add_tree(user, set(calls))
        if adds is not None:
            return user, adds
        node = user
    return None


def batch_shared_excitation(graph: fx.Graph) -> int:
    """``f(a) + f(b) + ...`` -> ``reduce(f(cat([a, b, ...])), '(pool b) ... -> b ...', 'sum')`` for a
    shared, batchable excitation ``f``; returns how many groups were batched."""
    groups: dict[str, list[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module" and node.meta.get(BATCHABLE):
            groups.setdefault(node.target, []).append(node)
    done = 0
    for target, calls in groups.items():
        if len(calls) < 2 or any(len(c.args) != 1 or c.kwargs for c in calls):
            continue
        found = _add_chain_root(calls)
        if found is None:
            continue
        root, adds = found
        prefix = root.name
        with graph.inserting_before(calls[0]):
            stacked = graph.create_node("call_function", torch.cat, ([c.args[0] for c in calls], 0), {},
                                        name=f"{prefix}_inputs")
            batched = graph.create_node("call_module", target, (stacked,), {}, name=f"{prefix}_batched")
            batched.meta[ROLE] = "excite"
            # one einops reduction (a reshape with the batch left free: exports with a dynamic batch)
            total = graph.create_node("call_function", einops_calls.reduce,
                                      (batched, "(pool b) ... -> b ...", "sum"), {"pool": len(calls)},
                                      name=f"{prefix}_summed")
        total.meta[ROLE] = root.meta.get(ROLE)
        root.replace_all_uses_with(total)
        for node in [*adds, *reversed(calls)]:  # root first: users before what they use
            graph.erase_node(node)
        done += 1
    if done:
        graph.lint()
    return done


def optimize_graph(graph: fx.Graph) -> fx.Graph:
    """Run every pass, in order, in place."""
    batch_shared_excitation(graph)
    eliminate_common_subexpressions(graph)
    graph.lint()
    return graph
