"""Out-of-distribution digits for the robustness experiments: scaled, stretched, thickened or
thinned strokes, and chimeras of two digits; and the per-digit outcome after a rollout.

Images are grey `(N, H, W)` float32 in [0, 1]; the transforms return digits centred on a square
canvas (a larger grid than MNIST's 28x28, so a 2x digit still fits).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nca.selforg_mnist import fast, losses, model


def place(images: np.ndarray, canvas: int) -> np.ndarray:
    """Centres `(N, h, w)` images on a `canvas x canvas` grid of zeros (cropping if larger)."""
    n, h, w = images.shape
    out = np.zeros((n, canvas, canvas), np.float32)
    top, left = (canvas - h) // 2, (canvas - w) // 2
    src_t, src_l = max(0, -top), max(0, -left)
    dst_t, dst_l = max(0, top), max(0, left)
    hh, ww = min(h - src_t, canvas - dst_t), min(w - src_l, canvas - dst_l)
    out[:, dst_t : dst_t + hh, dst_l : dst_l + ww] = images[
        :, src_t : src_t + hh, src_l : src_l + ww
    ]
    return out


def resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize (antialiased when shrinking), clipped to [0, 1]."""
    resized = jax.image.resize(jnp.asarray(images), (images.shape[0], height, width), "linear")
    return np.clip(np.asarray(resized), 0.0, 1.0)


def stretch(images: np.ndarray, sx: float, sy: float, canvas: int = 56) -> np.ndarray:
    """Scales width by `sx` and height by `sy`, centred on the canvas (sx = sy: plain scale)."""
    _, h, w = images.shape
    return place(resize(images, max(1, round(h * sy)), max(1, round(w * sx))), canvas)


def stroke(images: np.ndarray, amount: int) -> np.ndarray:
    """Thicker (`amount` > 0: grey dilation, 3x3 max, that many times) or thinner (< 0: erosion)
    strokes."""
    out = np.asarray(images, np.float32)
    for _ in range(abs(amount)):
        padded = np.pad(out, ((0, 0), (1, 1), (1, 1)))
        h, w = out.shape[1:]
        windows = [padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)]
        out = np.max(windows, axis=0) if amount > 0 else np.min(windows, axis=0)
    return out


def chimera(first: np.ndarray, second: np.ndarray, split: str) -> np.ndarray:
    """`split="left_right"`: left half of `first` + right half of `second`; `"top_bottom"`: top
    half of `first` + bottom half of `second`."""
    out = np.array(first, np.float32)
    if split == "left_right":
        half = out.shape[2] // 2
        out[:, :, half:] = second[:, :, half:]
    elif split == "top_bottom":
        half = out.shape[1] // 2
        out[:, half:] = second[:, half:]
    else:
        raise ValueError(f"unknown split {split!r}; use left_right or top_bottom.")
    return out


def majority_labels(state: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(B,)` each: the label most alive cells vote for (ties to the lowest), and its votes."""
    alive = model.alive_mask(state)[..., 0]
    votes = jax.nn.one_hot(model.cell_labels(state), model.NUM_CLASSES) * alive[..., None]
    per_label = jnp.sum(votes, axis=(1, 2))
    return jnp.argmax(per_label, axis=-1), jnp.max(per_label, axis=-1)


@functools.partial(
    jax.jit,
    static_argnames=("num_steps", "fire_rate", "noise_std", "impl", "capacity_fraction"),
)
def outcome(
    params: model.Params,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    num_steps: int,
    fire_rate: float,
    noise_std: float,
    impl: str = "auto",
    capacity_fraction: float = fast.DEFAULT_CAPACITY_FRACTION,
) -> dict[str, jax.Array]:
    """Per digit after `num_steps` from zero state: correct and alive cells, agreement, the
    majority label, and label flips of alive cells summed over the last half of the steps."""
    rollout = fast.get_rollout(impl, capacity_fraction)

    def observe(previous, state):
        changed = model.cell_labels(previous) != model.cell_labels(state)
        return jnp.sum(changed & model.alive_mask(state)[..., 0], axis=(1, 2))

    final, flips = rollout(
        params, model.seed_state(images), key, num_steps, fire_rate, noise_std, observe
    )
    correct, alive = losses.correct_and_alive(final, labels)
    majority, majority_votes = majority_labels(final)
    return {
        "correct_cells": correct,
        "alive_cells": alive,
        "agrees": losses.agreement(final),
        "majority": majority,
        "majority_votes": majority_votes,
        "late_flips": jnp.sum(flips[num_steps // 2 :], axis=0),
    }


def capacity_for(images: np.ndarray, margin: float = 1.1) -> float:
    """An `alive` index-table size (share of all cells) that fits these images' alive cells,
    rounded up to a power of two so that few sizes (and compiles) are used."""
    fraction = float(np.mean(images > model.ALIVE_THRESHOLD)) * margin + 1e-3
    return float(min(1.0, 2.0 ** np.ceil(np.log2(fraction))))
