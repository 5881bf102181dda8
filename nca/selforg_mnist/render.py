"""Frames for videos of the CA: cells coloured by label, and the internal channels."""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nca.selforg_mnist import fast, model

# The article's palette for labels 0-9; dead cells are white.
ARTICLE_PALETTE = np.array(
    [[128, 0, 0], [230, 25, 75], [70, 240, 240], [210, 245, 60], [250, 190, 190],
     [170, 110, 40], [170, 255, 195], [165, 163, 159], [0, 128, 128], [128, 128, 0]],
    np.uint8,
)  # fmt: skip
WHITE = np.array([255, 255, 255], np.uint8)


@functools.partial(jax.jit, static_argnames=("num_steps", "fire_rate", "noise_std", "impl"))
def trajectory(params, images, new_images, key, num_steps, fire_rate, noise_std, impl="auto"):
    """`num_steps` on `images` from zero state, then (unless `new_images` is None) a true mutation
    into `new_images` and `num_steps` more. Returns per step `(T, B, H, W)` labels and alive
    masks, and the 19 mutable channels of digit 0 `(T, H, W, 19)`."""
    rollout = fast.get_rollout(impl)

    def observe(_, state):
        return model.cell_labels(state), model.alive_mask(state)[..., 0], state[0, ..., 1:]

    k1, k2 = jax.random.split(key)
    final, first = rollout(
        params, model.seed_state(images), k1, num_steps, fire_rate, noise_std, observe
    )
    if new_images is None:
        return first
    _, second = rollout(
        params, model.mutate(final, new_images), k2, num_steps, fire_rate, noise_std, observe
    )
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), first, second)


def tile(images: np.ndarray, columns: int, gap: int = 2, fill: int = 255) -> np.ndarray:
    """`(N, H, W, 3)` -> one `(rows * (H + gap) - gap, ...)` image, row-major."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    out = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, c), fill, images.dtype)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        out[r * (h + gap) : r * (h + gap) + h, col * (w + gap) : col * (w + gap) + w] = image
    return out


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def pad_to_multiple(frame: np.ndarray, multiple: int = 16, fill: int = 255) -> np.ndarray:
    """Video codecs want sizes divisible by 16."""
    h, w = frame.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    return np.pad(frame, ((0, ph), (0, pw), (0, 0)), constant_values=fill)


def label_frame(labels, alive, columns, scale, palette=ARTICLE_PALETTE) -> np.ndarray:
    """labels, alive: `(B, H, W)` -> RGB uint8 frame, alive cells in their label's colour."""
    rgb = np.where(alive[..., None], palette[labels], WHITE)
    return pad_to_multiple(upscale(tile(rgb, columns), scale))


def channel_frame(channels: np.ndarray, scale: int, columns: int = 5) -> np.ndarray:
    """`(H, W, 19)` states of one digit -> its channels, squashed by arctan, on a diverging
    colormap (blue negative, red positive), one panel per channel."""
    from matplotlib import colormaps

    squashed = np.arctan(channels) / np.pi + 0.5  # (-inf, inf) -> (0, 1)
    rgb = colormaps["RdBu_r"](np.moveaxis(squashed, -1, 0))[..., :3]  # (19, H, W, 3)
    return pad_to_multiple(upscale(tile((rgb * 255).astype(np.uint8), columns), scale))


def write_video(stem: Path, frames: list[np.ndarray], fps: int) -> None:
    """`stem`.gif and `stem`.mp4 of the frames."""
    import imageio.v2 as imageio

    imageio.mimsave(stem.with_suffix(".gif"), frames, duration=1000 / fps, loop=0)
    imageio.mimsave(stem.with_suffix(".mp4"), frames, fps=fps, macro_block_size=16)
