"""Train on real data: scikit-learn's handwritten digits (8x8 images, 10 classes), a small CNN with
and without attention inserted by graph_passes, same seed and budget, test accuracy and size.

    python examples/train_digits.py            # DYNATTN_QUICK=1 for a 2-epoch smoke run

Every variant starts from the same CNN weights (SE and CBAM are inserted identity-initialised,
dynamic convs upcycled), then trains with the same optimiser, order and number of steps.
"""

import os

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from dynattn import AttnSpec
from graph_passes import insert_attention

EPOCHS = 2 if os.environ.get("DYNATTN_QUICK") else 12
torch.set_num_threads(min(2, os.cpu_count() or 1))


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


def train_and_test(model, x_train, x_test, y_train, y_test):
    torch.manual_seed(1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=EPOCHS * ((len(x_train) + 63) // 64))
    for _ in range(EPOCHS):
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


def main():
    x_train, x_test, y_train, y_test = data()
    variants = {
        "CNN": lambda: cnn(),
        "+ SE (residual)": lambda: insert_attention(cnn(), AttnSpec.se(reduction=8, init="identity")),
        "+ CBAM (residual)": lambda: insert_attention(cnn(), AttnSpec.cbam(reduction=8, kernel_size=3,
                                                                         init="identity")),
        "+ DyConv (3x3 convs)": lambda: insert_attention(cnn(), AttnSpec.dyconv(experts=4, temperature=4.0),
                                                         where=lambda node, m: m.kernel_size == (3, 3)
                                                         and m.in_channels > 1),
    }
    print(f"digits: {len(x_train)} train / {len(x_test)} test images, {EPOCHS} epochs each\n")
    print("| model | parameters | test accuracy |")
    print("|---|---:|---:|")
    for name, make in variants.items():
        model = make()
        acc = train_and_test(model, x_train, x_test, y_train, y_test)
        print(f"| {name} | {sum(p.numel() for p in model.parameters()):,} | {100 * acc:.2f}% |", flush=True)


if __name__ == "__main__":
    main()
