"""Whole networks with dynamic convolution against the static network, in one run.

    python -m dynattn.bench.networks                          # the grid below (takes a while)
    python -m dynattn.bench.networks --models resnet18 --specs dyconv --batch 8 --size 128
    python -m dynattn.bench.networks --layers --models resnet18 --specs dyconv --batch 8 --size 128
    dynattn bench --network resnet18 --spec dyconv            # the same, from the command line

For each model (torchvision ResNet-18, ResNet-50, MobileNetV3-Large), input size and batch size,
the static network and the network with each kernel preset inserted
(``graph_passes.insert_attention(model, AttnSpec.<preset>())``, the preset's default placement, or
``--where conv`` for every conv) are timed round-robin in the same run (medians of ``--repeats``),
in eval mode (no grad) and for one training step (forward, cross-entropy, backward). Reported per
variant: time and its ratio to the static network, parameters, and the peak tensor memory one call
allocates (the input excluded). Writes ``networks.md`` and ``networks.png`` to ``--out``.

``--layers`` times every dynamic conv of one converted network on the input it sees in the
network, against the static conv of the same shape, each strategy, and the floor of a dynamic conv
on that layer: the larger of (a) the static conv's time scaled by ``1 + K / (H_out * W_out)``, the
mixing's own multiply-adds (per sample K per weight, where the conv does H_out * W_out per weight),
and (b) the time to read its K expert banks once (``expert_bank.sum()``, measured in the same run):
every formulation must do the conv's arithmetic and read every expert, so none can beat that.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from graph_passes import insert_attention

from ..dynamic_conv import CostModel, DynamicConv2d, calibrated_model, use_cost_model
from ..dynamic_conv.costs import fitted_model
from ..presets import get_spec
from .timing import (
    add_allocator_option,
    allocator_line,
    interleaved_medians,
    machine_summary,
    no_grad_call,
    peak_allocated_mb,
)

MODELS = ("resnet18", "resnet50", "mobilenet_v3_large")
SPECS = ("condconv", "dyconv", "odconv", "dcd", "kw", "kw4x")
#: Bench names of presets with arguments: KernelWarehouse at its 4x budget (``kw`` is its 1x).
SPEC_ARGUMENTS: dict[str, tuple[str, dict]] = {"kw4x": ("kw", {"budget": 4})}


def make_model(name: str) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(name, weights=None)


def convert(model: nn.Module, spec: str, where: str | None) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        preset, arguments = SPEC_ARGUMENTS.get(spec, (spec, {}))
        return insert_attention(model, get_spec(preset, **arguments), where=where)


def _train_step(model: nn.Module, x: torch.Tensor, target: torch.Tensor):
    def step():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), target).backward()
    return step


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Cell:
    model: str
    size: int
    batch: int
    train: bool
    times: dict[str, float]
    params: dict[str, int]
    memory: dict[str, float] = field(default_factory=dict)

    def ratio(self, variant: str) -> float:
        return self.times[variant] / self.times["static"]


def run_networks(models, specs, batches, sizes, modes, *, where=None, repeats=7, memory=True,
                 progress=True, clock=time.perf_counter, cost_models: dict[str, CostModel] | None = None
                 ) -> list[Cell]:
    """Time each model, static and with each spec, per size, batch and mode; with ``cost_models`` (name ->
    constants) each converted network runs once under each, as variants ``"<spec> <name>"``, in the same
    interleaved run."""
    cells = []
    for name in models:
        base = make_model(name)
        variants = {"static": (base, None)}
        for spec in specs:
            converted = convert(base, spec, where)
            for label, model in (cost_models or {"": None}).items():
                variants[f"{spec} {label}".strip()] = (converted, model)
        params = {v: _params(m) for v, (m, _) in variants.items()}
        for size in sizes:
            for b in batches:
                x = torch.randn(b, 3, size, size)
                target = torch.randint(0, 1000, (b,))
                for train in modes:
                    fns = {v: _under(model, _train_step(m.train(train), x, target) if train
                                     else no_grad_call(m.train(train), x)) for v, (m, model) in variants.items()}
                    times = interleaved_medians(fns, repeats=repeats, warmup=2, clock=clock)
                    mem = {v: peak_allocated_mb(fn) for v, fn in fns.items()} if memory else {}
                    cells.append(Cell(name, size, b, train, times, params, mem))
                    if progress:
                        ratios = ", ".join(f"{v} {times[v] / times['static']:.2f}x" for v in variants if v != "static")
                        print(f"... {name} {size}px B={b} {'train' if train else 'eval'}: static "
                              f"{times['static'] * 1e3:.1f} ms; {ratios}", file=sys.stderr, flush=True)
    return cells


def _under(model: CostModel | None, fn):
    """``fn`` run under the cost model ``model`` (None: the one in force)."""
    if model is None:
        return fn

    def run():
        with use_cost_model(model):
            return fn()
    return run


def table(cells: list[Cell], specs) -> str:
    head = "| model | px | B | mode | static ms | " + " | ".join(f"{s} ms | {s} / static" for s in specs) + " |"
    lines = [head, "|---|---:|---:|---|---:|" + "---:|---:|" * len(specs)]
    for c in cells:
        row = f"| {c.model} | {c.size} | {c.batch} | {'train' if c.train else 'eval'} | {c.times['static'] * 1e3:.1f} |"
        for s in specs:
            row += f" {c.times[s] * 1e3:.1f} | {c.ratio(s):.2f}x |"
        lines.append(row)
    return "\n".join(lines)


def params_table(cells: list[Cell], specs) -> str:
    seen = {}
    for c in cells:
        seen.setdefault(c.model, c.params)
    lines = ["| model | static parameters | " + " | ".join(f"{s} (added)" for s in specs) + " |",
             "|---|---:|" + "---:|" * len(specs)]
    for model, p in seen.items():
        row = f"| {model} | {p['static'] / 1e6:.1f}M |"
        for s in specs:
            row += f" {p[s] / 1e6:.1f}M (+{100 * (p[s] / p['static'] - 1):.0f}%) |"
        lines.append(row)
    return "\n".join(lines)


def memory_table(cells: list[Cell], specs) -> str:
    if not any(c.memory for c in cells):
        return ""
    lines = ["| model | px | B | mode | static MB | " + " | ".join(f"{s} MB" for s in specs) + " |",
             "|---|---:|---:|---|---:|" + "---:|" * len(specs)]
    for c in cells:
        row = f"| {c.model} | {c.size} | {c.batch} | {'train' if c.train else 'eval'} | {c.memory['static']:.0f} |"
        row += "".join(f" {c.memory[s]:.0f} |" for s in specs)
        lines.append(row)
    return "\n".join(lines)


def plot(cells: list[Cell], specs, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [f"{c.model.replace('mobilenet_v3_large', 'mnv3-L')}\n{c.size}px B{c.batch}\n"
              f"{'train' if c.train else 'eval'}" for c in cells]
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(cells) * max(1, len(specs)) / 2), 4.8))
    width = 0.8 / max(1, len(specs))
    for j, s in enumerate(specs):
        ax.bar([i + (j - (len(specs) - 1) / 2) * width for i in range(len(cells))], [c.ratio(s) for c in cells],
               width, label=s)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(cells)), labels, fontsize=6)
    ax.set_ylabel("time / static network (lower is better)")
    ax.set_title("dynamic-conv networks vs the static network (CPU)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- per layer
@dataclass
class LayerRow:
    name: str
    shape: str
    strategy: str
    times: dict[str, float]
    experts: int = 1
    positions: int = 1  #: H_out * W_out

    @property
    def arithmetic_floor(self) -> float:
        """The static conv plus mixing's own multiply-adds: per sample, K per weight where the conv
        does H_out * W_out per weight."""
        return self.times["static"] * (1 + self.experts / self.positions)

    @property
    def floor(self) -> float:
        return max(self.arithmetic_floor, self.times["bank read"])


def run_layers(model_name: str, spec: str, batch: int, size: int, *, where=None, repeats=7,
               train: bool = False, clock=time.perf_counter) -> list[LayerRow]:
    net = convert(make_model(model_name), spec, where).train(train)
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: inputs.setdefault(n, args[0].detach()))
             for n, m in net.named_modules() if isinstance(m, DynamicConv2d)]
    with torch.no_grad():
        net(torch.randn(batch, 3, size, size))
    for h in hooks:
        h.remove()
    rows = []
    for name, x in inputs.items():
        layer = net.get_submodule(name)
        static = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                           layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode).train(train)
        bank = layer.weight.detach()
        dyn = copy.deepcopy(layer)

        def with_strategy(s, m=dyn, x=x):
            def run():
                m.strategy = s
                if train:
                    m(x).sum().backward()
                    return None
                with torch.no_grad():
                    return m(x)
            return run

        def static_call(m=static, x=x):
            if train:
                m(x).sum().backward()
                return None
            with torch.no_grad():
                return m(x)

        fns = {"static": static_call, "bank read": bank.sum}
        fns.update({s: with_strategy(s) for s in ("auto", "kernel", "blocked", "output")})
        times = interleaved_medians(fns, repeats=repeats, warmup=2, clock=clock)
        dyn.strategy = "auto"
        chosen = dyn.chosen_strategy(x) if not DynamicConv2d.benchmark else "measured"
        shape = (f"{layer.in_channels}->{layer.out_channels} {layer.kernel_size[0]}x{layer.kernel_size[1]}"
                 f"{' s' + str(layer.stride[0]) if layer.stride[0] > 1 else ''}"
                 f"{' g' + str(layer.groups) if layer.groups > 1 else ''} @{x.shape[2]}x{x.shape[3]}")
        with torch.no_grad():
            positions = static(x[:1]).shape[2:].numel()
        experts = layer.experts if "kernel" in layer.router.heads else 1
        rows.append(LayerRow(name, shape, chosen, times, experts, positions))
    return rows


def layers_table(rows: list[LayerRow]) -> str:
    lines = ["| layer | shape | static ms | K banks read ms | floor ms | auto ms (strategy) | auto / static "
             "| auto / floor | kernel | blocked | output |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    tot = {"static": 0.0, "floor": 0.0, "auto": 0.0, "bank read": 0.0}
    for r in rows:
        t = r.times
        tot["static"] += t["static"]
        tot["bank read"] += t["bank read"]
        tot["floor"] += r.floor
        tot["auto"] += t["auto"]
        lines.append(f"| {r.name} | {r.shape} | {t['static'] * 1e3:.2f} | {t['bank read'] * 1e3:.2f} | "
                     f"{r.floor * 1e3:.2f} | "
                     f"{t['auto'] * 1e3:.2f} ({r.strategy}) | {t['auto'] / t['static']:.2f}x | "
                     f"{t['auto'] / r.floor:.2f}x | {t['kernel'] * 1e3:.2f} | {t['blocked'] * 1e3:.2f} | "
                     f"{t['output'] * 1e3:.2f} |")
    lines.append(f"| all | | {tot['static'] * 1e3:.1f} | {tot['bank read'] * 1e3:.1f} | {tot['floor'] * 1e3:.1f} | "
                 f"{tot['auto'] * 1e3:.1f} | "
                 f"{tot['auto'] / tot['static']:.2f}x | {tot['auto'] / tot['floor']:.2f}x | | | |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- entry point
def _cost_models(names: list[str]) -> dict[str, CostModel] | None:
    """The constants each name stands for at torch's thread count (calibrating now where none is cached)."""
    if not names:
        return None
    found = {"fitted": lambda: fitted_model(torch.get_num_threads()), "calibrated": calibrated_model}
    return {name: found[name]() for name in names}



def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _names(text: str, allowed: tuple[str, ...], p: argparse.ArgumentParser, what: str) -> list[str]:
    names = [v for v in text.split(",") if v]
    unknown = [v for v in names if v not in allowed]
    if unknown:
        p.error(f"unknown {what} {unknown}; choose from {', '.join(allowed)}")
    return names


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dynattn.bench.networks", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", "--network", default=",".join(MODELS), help="comma-separated: " + ",".join(MODELS))
    p.add_argument("--specs", "--spec", default=",".join(SPECS), help="comma-separated: " + ",".join(SPECS))
    p.add_argument("--batch", default="1,8,32")
    p.add_argument("--size", default="128,224")
    p.add_argument("--modes", default="eval,train", help="eval, train or both")
    p.add_argument("--where", default=None, help="conversion sites (default: each preset's placement; "
                   "'conv': every conv)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: the process's CPU time (with --threads 1, steady on a machine shared with other jobs)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    p.add_argument("--benchmark-strategies", action="store_true",
                   help="DynamicConv2d.benchmark = True (time the strategies per shape instead of the cost model)")
    p.add_argument("--cost-models", default="", help="'fitted,calibrated': each converted network under the "
                   "fitted table and under this machine's calibration, in one interleaved run")
    p.add_argument("--layers", action="store_true", help="per-layer times against the floor (first model, spec, "
                   "batch and size)")
    p.add_argument("--out", default="outputs/bench/networks", help="folder for networks.md and networks.png")
    add_allocator_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    models = _names(args.models, MODELS, p, "model(s)")
    specs = _names(args.specs, SPECS, p, "spec(s)")
    modes = [m == "train" for m in _names(args.modes, ("eval", "train"), p, "mode(s)")]
    allocator = allocator_line(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    DynamicConv2d.benchmark = args.benchmark_strategies
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    header = (f"{machine_summary()}; {allocator}; medians of {args.repeats} interleaved runs ({args.clock} clock); "
              f"placement: {args.where or 'each preset default'}"
              f"{'; strategies timed per shape' if args.benchmark_strategies else ''}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.layers:
        b, s = _ints(args.batch)[0], _ints(args.size)[0]
        rows = run_layers(models[0], specs[0], b, s, where=args.where, repeats=args.repeats, train=modes[0],
                          clock=clock)
        text = (f"{models[0]} with {specs[0]}, B={b}, {s}px, {'train' if modes[0] else 'eval'}, per dynamic conv; "
                f"{header}\n\n{layers_table(rows)}\n")
        print(text)
        (out / "layers.md").write_text(text)
        return 0
    cost_models = _cost_models(_names(args.cost_models, ("fitted", "calibrated"), p, "cost model(s)"))
    cells = run_networks(models, specs, _ints(args.batch), _ints(args.size), modes, where=args.where,
                         repeats=args.repeats, memory=not args.no_memory, clock=clock, cost_models=cost_models)
    variants = [v for v in cells[0].times if v != "static"] if cells else specs
    parts = [f"dynamic-conv networks vs static; {header}", table(cells, variants),
             "Parameters:\n\n" + params_table(cells, variants)]
    mem = memory_table(cells, variants)
    if mem:
        parts.append("Peak tensor memory one call allocates (input excluded):\n\n" + mem)
    text = "\n\n".join(parts) + "\n"
    print(text)
    (out / "networks.md").write_text(text)
    if plot(cells, variants, out / "networks.png"):
        print(f"wrote {out / 'networks.md'} and {out / 'networks.png'}")
    else:
        print(f"wrote {out / 'networks.md'} (pip install matplotlib for the plot)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
