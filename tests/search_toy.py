"""A toy task for the search tests (``--task search_toy:task``): a tiny ResNet on 96 random 8x8 images,
one epoch, a fraction of a second a trial."""

import functools
import os
import time
from pathlib import Path

import torch

from dynattn.search.data import Data
from dynattn.search.models import SmallResNet
from dynattn.search.tasks import Task


def task() -> Task:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 8, 8, generator=g)
    y = (x[:, :, :4].mean((1, 2, 3)) > x[:, :, 4:].mean((1, 2, 3))).long()  # top half brighter than bottom
    data = Data(x[:64], y[:64], x[80:], y[80:], x[64:80], y[64:80], name="toy")
    model = functools.partial(SmallResNet, widths=(16, 16, 16), classes=2, stem_kernel=3, stem_stride=1)
    return Task("toy", data, model, epochs=1, batch=32)


def objective_that_hangs(model, trial):
    """Scores by parameter count; from trial 2 on, when TOY_HANG names a file, writes it and hangs (to be killed)."""
    log = os.environ.get("TOY_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {trial.number}\n")
    marker = os.environ.get("TOY_HANG")
    if marker and trial.number >= 2:
        Path(marker).write_text(str(trial.number))
        time.sleep(600)
    return float(sum(p.numel() for p in model.parameters()))


def hanging_model(classes: int = 2, in_channels: int = 1):
    """The toy network, or, when TOY_HANG names a file, a hang after writing it (to be interrupted)."""
    marker = os.environ.get("TOY_HANG")
    if marker:
        Path(marker).write_text("building")
        time.sleep(600)
    return SmallResNet(widths=(16, 16, 16), classes=classes, in_channels=in_channels, stem_kernel=3, stem_stride=1)
