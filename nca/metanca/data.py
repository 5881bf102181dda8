"""Task data for MetaNCA: iris (vendored CSV, 80/20 split) and MNIST (80/20 re-split of the
training set, as the abstract). Inputs are flat float32 vectors, labels int32."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nca import data as mnist_data

IRIS_CSV = Path(__file__).resolve().parent / "iris.csv"


def split_indices(n: int, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random split of `range(n)`: (train indices, held-out indices)."""
    perm = np.random.default_rng(seed).permutation(n)
    cut = int(round(train_fraction * n))
    return np.sort(perm[:cut]), np.sort(perm[cut:])


def load_iris(split_seed: int = 0, train_fraction: float = 0.8) -> dict[str, np.ndarray]:
    """Iris, standardised with the training split's mean and std.

    Returns `{"train_x": (120, 4), "train_y": (120,), "test_x": (30, 4), "test_y": (30,)}`.
    """
    table = np.loadtxt(IRIS_CSV, delimiter=",", skiprows=1)
    x, y = table[:, :4].astype(np.float32), table[:, 4].astype(np.int32)
    train, test = split_indices(len(x), train_fraction, split_seed)
    mean, std = x[train].mean(0), x[train].std(0)
    x = (x - mean) / std
    return {"train_x": x[train], "train_y": y[train], "test_x": x[test], "test_y": y[test]}


def load_mnist_resplit(
    mnist_dir: str | None = None,
    split_seed: int = 0,
    train_fraction: float = 0.8,
    max_images: int = 0,
) -> dict[str, np.ndarray]:
    """The MNIST training set (first `max_images` if set) split 80/20 into train and test;
    images flattened to `(N, 784)`, grey in [0, 1] standardised with the training split's
    global mean and std (zero-mean inputs: a weight change then moves logits by the pattern,
    not by the amount of ink)."""
    images, labels = mnist_data.load_training_digits(mnist_dir, max_images)
    x = images.reshape(len(images), -1)
    train, test = split_indices(len(x), train_fraction, split_seed)
    x = (x - x[train].mean()) / x[train].std()
    return {
        "train_x": x[train],
        "train_y": labels[train],
        "test_x": x[test],
        "test_y": labels[test],
    }


def load_task(config) -> dict[str, np.ndarray]:
    """The data set named by `config.data.task` ("iris" or "mnist")."""
    if config.data.task == "iris":
        return load_iris(config.data.split_seed)
    return load_mnist_resplit(
        config.data.mnist_dir, config.data.split_seed, max_images=config.data.max_images
    )
