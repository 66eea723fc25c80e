"""Train on real data: scikit-learn's handwritten digits (8x8 images, 10 classes), a small CNN with
and without attention inserted by graph_passes, same seed and budget, test accuracy and size.

    python examples/train_digits.py            # 12 epochs; writes outputs/train_digits/results.md
    python examples/train_digits.py --quick    # 3 epochs
    python examples/train_digits.py --out DIR  # writes DIR/results.md

DYNATTN_QUICK=1 (the test suite's smoke run): 200 training images, 1 epoch; it checks that everything runs,
its accuracies mean nothing.

Every variant starts from the same CNN weights (SE and CBAM are inserted identity-initialised,
dynamic convs upcycled), then trains with the same optimiser, order and number of steps.
"""

import argparse
import os
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="3 epochs instead of 12: about 15 s on one core (12 epochs: 40 s)")
    p.add_argument("--out", default="outputs/train_digits", help="folder for results.md (default %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the network is small, and a busy machine slows several a lot)")
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and mistakes in the arguments answer now, before the imports below take seconds

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from dynattn import AttnSpec
from graph_passes import insert_attention

SETTINGS = {"full": (None, 12), "quick": (None, 3), "smoke": (200, 1)}  # training images (None: all), epochs


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(out)))


def cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        Block(32), nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        Block(64), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


def data():
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target)
    return train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)


def train_and_test(model, epochs, x_train, x_test, y_train, y_test):
    torch.manual_seed(1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((len(x_train) + 63) // 64))
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x_train))
        for i in range(0, len(order), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        return (model(x_test).argmax(1) == y_test).float().mean().item()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "smoke" if os.environ.get("DYNATTN_QUICK") else "quick" if args.quick else "full"
    train_images, epochs = SETTINGS[mode]
    torch.set_num_threads(args.threads)
    x_train, x_test, y_train, y_test = data()
    x_train, y_train = x_train[:train_images], y_train[:train_images]
    variants = {
        "CNN": lambda: cnn(),
        "+ SE (residual)": lambda: insert_attention(cnn(), AttnSpec.se(reduction=8, init="identity")),
        "+ CBAM (residual)": lambda: insert_attention(cnn(), AttnSpec.cbam(reduction=8, kernel_size=3,
                                                                         init="identity")),
        "+ DyConv (3x3 convs)": lambda: insert_attention(cnn(), AttnSpec.dyconv(experts=4, temperature=4.0),
                                                         where=lambda node, m: m.kernel_size == (3, 3)
                                                         and m.in_channels > 1),
    }
    t0 = time.process_time()
    lines = [f"digits: {len(x_train)} train / {len(x_test)} test images, {epochs} epochs each ({mode} run)\n",
             "| model | parameters | test accuracy |", "|---|---:|---:|"]
    print("\n".join(lines), flush=True)
    for name, make in variants.items():
        model = make()
        acc = train_and_test(model, epochs, x_train, x_test, y_train, y_test)
        lines.append(f"| {name} | {sum(p.numel() for p in model.parameters()):,} | {100 * acc:.2f}% |")
        print(lines[-1], flush=True)
    lines.append(f"\ntraining took {time.process_time() - t0:.0f} s of CPU time")
    print(lines[-1])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
