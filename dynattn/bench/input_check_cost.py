"""What the run-time input check costs: each built module against a copy of itself whose graph has
the check removed, interleaved in one run, eager and compiled.

    python -m dynattn.bench.input_check_cost [--repeats 30]
"""

from __future__ import annotations

import argparse
import copy

import torch

from ..builder import build
from ..checks import check_input
from ..spec import AttnSpec
from .timing import interleaved_medians, machine_summary, no_grad_call

SHAPES = ((1, 64, 14, 14), (32, 256, 28, 28))
PRESETS = {"SE": AttnSpec.se, "ECA": AttnSpec.eca, "CBAM": AttnSpec.cbam}


def without_check(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of a built module with its input-check node taken out of the graph."""
    clone = copy.deepcopy(module)
    for node in list(clone.graph.nodes):
        if node.target is check_input:
            clone.graph.erase_node(node)
    clone.recompile()
    return clone


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=30, help="timed calls per variant (medians reported)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd modules (slow to start)")
    args = p.parse_args(argv)
    print(machine_summary())
    print("| module | input | checked (ms) | unchecked (ms) | checked / unchecked |")
    print("|---|---|---:|---:|---:|")
    for name, preset in PRESETS.items():
        for shape in SHAPES:
            module = build(preset(), channels=shape[1]).eval()
            plain = without_check(module)
            variants = {"eager": (module, plain)}
            if args.compile:
                variants["compiled"] = (torch.compile(module, fullgraph=True), torch.compile(plain, fullgraph=True))
            x = torch.randn(shape)
            for mode, (checked, unchecked) in variants.items():
                t = interleaved_medians({"checked": no_grad_call(checked, x), "unchecked": no_grad_call(unchecked, x)},
                                        args.repeats)
                a, b = t["checked"], t["unchecked"]
                print(f"| {name} ({mode}) | {tuple(shape)} | {a * 1e3:.3f} | {b * 1e3:.3f} | {a / b:.3f} |")


if __name__ == "__main__":
    main()
