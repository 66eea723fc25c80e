"""Can attention be added to a trained network without wrecking it? Measured on cluttered MNIST.

    python examples/pretrained_attention.py              # full: about 6 minutes on 2 CPU cores
    python examples/pretrained_attention.py --quick      # about 2 minutes
    python examples/pretrained_attention.py --out DIR    # where results.md and results.png go

Needs the examples extra (``pip install -e ".[examples]"``); the images are those of
``examples/cluttered_digits.py``. A plain SmallResNet is trained first (the "pretrained"
network). Then each attention is inserted into a copy of it in two ways and fine-tuned for the
same steps on the same batches, the test accuracy measured from step 0:

- (a) ``init="identity"`` (``AttnSpec.se(init="identity")``): the inserted module is exactly the
  identity, so step 0 is the pretrained network's accuracy, to the last image;
- (b) the default initialisation (``AttnSpec.se()``): the gates start near 0.5, the residual
  branches are rescaled, and the network loses what it had learnt until fine-tuning recovers it.

For dynamic convolution, (a) is ``insert_attention(model, AttnSpec.dyconv())``, which upcycles
each 3x3 conv (every expert starts as the trained kernel), and (b) replaces each by a freshly
initialised ``DynamicConv2d``, as converting a network by hand does. The control row fine-tunes
the pretrained network itself for the same steps.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1,000 train digits, 100 fine-tuning steps: measured "
                   "109 s of CPU time on one thread, 3.5 to 5 minutes wall on 2 cores shared with other jobs")
    p.add_argument("--smoke", action="store_true",
                   help="100 train and 100 test digits, 2 steps: seconds, checks that everything runs "
                        "(also DYNATTN_QUICK=1)")
    p.add_argument("--out", default="outputs/pretrained_attention",
                   help="folder for results.md and results.png (default outputs/pretrained_attention)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the network is small, and a busy machine slows several a lot)")
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and mistakes in the arguments answer now, before the imports below take seconds

import torch
from cluttered_digits import CANVAS, Data, cluttered_mnist, evaluate, make_model, train, variants
from torch import nn

from dynattn import AttnSpec, DynamicConv2d, TemperatureSchedule
from graph_passes import insert_attention

SETTINGS = {  # train digits, test digits, pretraining epochs, fine-tuning steps, steps the accuracy is taken at
    "full": (None, None, 3, 300, (0, 10, 25, 50, 100, 200, 300)),
    "quick": (1000, None, 3, 100, (0, 10, 25, 50, 100)),
    "smoke": (100, 100, 1, 2, (0, 2)),
}


def replace_with_fresh(model: nn.Module, spec: AttnSpec) -> nn.Module:
    """Every DynamicConv2d of ``model`` replaced by a new one of the same shape, default initialised."""
    for name, module in list(model.named_modules()):
        if isinstance(module, DynamicConv2d):
            parent, _, leaf = name.rpartition(".")
            fresh = DynamicConv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                                  module.padding, bias=module.bias is not None, spec=spec)
            setattr(model.get_submodule(parent), leaf, fresh)
    return model


def model_temperature(model: nn.Module) -> float:
    return max(float(m.temperature) for m in model.modules() if isinstance(m, DynamicConv2d))


def arms(pretrained: nn.Module) -> dict[str, dict[str, nn.Module]]:
    """attention -> {"identity" | "default": the pretrained network with it inserted}."""
    out: dict[str, dict[str, nn.Module]] = {}
    for label, (spec, where) in variants().items():
        if spec is None:
            continue
        torch.manual_seed(1)
        name = label.removeprefix("+ ")
        if spec.kind == "kernel":
            upcycled = insert_attention(pretrained, spec, where=where)
            torch.manual_seed(1)
            out[name] = {"identity": upcycled, "default": replace_with_fresh(copy.deepcopy(upcycled), spec)}
        else:
            identity = insert_attention(pretrained, spec.replace(init="identity"), where=where)
            torch.manual_seed(1)
            out[name] = {"identity": identity, "default": insert_attention(pretrained, spec, where=where)}
    return out


def fine_tune(model: nn.Module, data: Data, steps: int, checkpoints: tuple[int, ...], *, anneal: bool,
              lr: float = 1e-3, batch: int = 64, seed: int = 0) -> list[float]:
    """AdamW with cosine decay over ``steps``; the same batches for every model. Returns the test
    accuracy at each checkpoint (step 0 before any update)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    temperature = TemperatureSchedule(model, start=30, end=1, steps=max(1, steps // 3)) if anneal else None
    gen = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(data.x_train), generator=gen)
                       for _ in range(steps * batch // len(data.x_train) + 1)])
    accuracies = [evaluate(model, data.x_test, data.y_test)] if 0 in checkpoints else []
    for step in range(1, steps + 1):
        model.train()
        idx = order[(step - 1) * batch:step * batch]
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
        opt.step()
        sched.step()
        if temperature is not None:
            temperature.step()
        if step in checkpoints:
            accuracies.append(evaluate(model, data.x_test, data.y_test))
    return accuracies


def markdown(rows: list[tuple[str, str, list[float]]], checkpoints: tuple[int, ...], header: str) -> str:
    lines = [header, "", "| attention | inserted with | " + " | ".join(f"step {s}" for s in checkpoints) + " |",
             "|---|---|" + "---:|" * len(checkpoints)]
    for name, how, accs in rows:
        lines.append(f"| {name} | {how} | " + " | ".join(f"{100 * a:.2f}" for a in accs) + " |")
    return "\n".join(lines) + "\n"


def plot(rows, checkpoints, pretrained_acc: float, title: str, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    control = next(accs for name, _, accs in rows if name == "none")
    names = list(dict.fromkeys(name for name, _, _ in rows if name != "none"))
    cols = min(3, len(names))
    nrows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), sharex=True, sharey=True,
                             squeeze=False)
    x = list(checkpoints)
    for ax, name in zip(axes.flat, names):
        for _, how, accs in (r for r in rows if r[0] == name):
            style = {"linestyle": "-", "marker": "o"} if how.startswith("identity") or how.startswith("upcycled") \
                else {"linestyle": "--", "marker": "s"}
            ax.plot(x, [100 * a for a in accs], label=how, markersize=4, **style)
        ax.plot(x, [100 * a for a in control], color="grey", linewidth=5, alpha=0.35, zorder=1,
                label="no attention (control)")  # a wide band: the identity-initialised lines run inside it
        ax.axhline(100 * pretrained_acc, color="black", linewidth=0.7)
        ax.set_title(name, fontsize=10)
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xticks(x, [str(s) for s in x], fontsize=7)
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("fine-tuning step")
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy (%)")
    handles, labels = [], []
    for ax in axes.flat[:len(names)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(title + f"\n(black line: the pretrained network, {100 * pretrained_acc:.2f}%)", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "smoke" if args.smoke or os.environ.get("DYNATTN_QUICK") else "quick" if args.quick else "full"
    train_digits, test_digits, epochs, steps, checkpoints = SETTINGS[mode]
    torch.set_num_threads(args.threads)

    t0, cpu0 = time.perf_counter(), time.process_time()
    data = cluttered_mnist(train_digits, test_digits=test_digits)
    pretrained = make_model(None, None, seed=0)
    seconds = train(pretrained, data, epochs, seed=0)
    pretrained_acc = evaluate(pretrained, data.x_test, data.y_test)
    print(f"{data.describe()}; pretrained SmallResNet ({epochs} epochs, {seconds:.1f} CPU s/epoch): "
          f"{100 * pretrained_acc:.2f}% test accuracy", flush=True)

    rows = [("none", "(the pretrained network, fine-tuned)",
             fine_tune(copy.deepcopy(pretrained), data, steps, checkpoints, anneal=False))]
    x = data.x_test[:256]
    with torch.no_grad():
        reference = pretrained.eval()(x)
    for name, models in arms(pretrained).items():
        for init, model in models.items():
            kernel = any(isinstance(m, DynamicConv2d) for m in model.modules())
            how = {("identity", False): "identity init", ("default", False): "default init",
                   ("identity", True): "upcycled", ("default", True): "fresh dynamic convs"}[init, kernel]
            with torch.no_grad():
                change = (model.eval()(x) - reference).abs().max().item()
            accs = fine_tune(model, data, steps, checkpoints, anneal=kernel and model_temperature(model) > 1)
            if init == "identity" and not kernel:  # identity init: the very same outputs, so the same accuracy
                assert change == 0 and accs[0] == pretrained_acc, (name, change, accs[0], pretrained_acc)
            rows.append((name, how, accs))
            print(f"{name:<28} {how:<20} max |logit change| at insertion {change:.2e}   "
                  + "  ".join(f"{s}: {100 * a:.2f}" for s, a in zip(checkpoints, accs)), flush=True)
    header = (f"{data.describe()}; SmallResNet pretrained {epochs} epochs to {100 * pretrained_acc:.2f}%, then "
              f"fine-tuned {steps} steps (batch 64, AdamW 1e-3, cosine); test accuracy (%) by step; "
              f"torch {torch.__version__.split('+')[0]}, {torch.get_num_threads()} CPU threads; "
              f"run time {time.perf_counter() - t0:.0f} s wall, {time.process_time() - cpu0:.0f} s CPU")
    text = markdown(rows, checkpoints, header)
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    drawn = plot(rows, checkpoints, pretrained_acc,
                 f"attention inserted into a trained ResNet, cluttered MNIST {CANVAS}x{CANVAS}",
                 out / "results.png")
    print(f"wrote {out / 'results.md'}" + (f" and {out / 'results.png'}" if drawn else " (no matplotlib: no plot)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
