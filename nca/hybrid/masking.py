"""70 % masking of 28x28 digits: exactly the same number of pixels hidden in every image.

`keep_mask(key, n)` hides exactly `num_masked(rate)` pixels of each image (549 of 784 for 0.7,
70.03 %; 548.8 cannot be hidden): a uniform random subset, drawn by ranking i.i.d. uniforms, so the
same key gives the same masks on any device. Training draws fresh masks per sample from
`fold_in(rng, step)`; the test set uses `eval_masks(n, seed)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NUM_PIXELS = 28 * 28
MASK_RATE = 0.7
TEST_MASK_SEED = 1234


def num_masked(rate: float = MASK_RATE, num_pixels: int = NUM_PIXELS) -> int:
    """Pixels hidden per image: `round(rate * num_pixels)` (549 for 70 % of 784)."""
    return int(np.floor(rate * num_pixels + 0.5))


def keep_mask(key: jax.Array, n: int, rate: float = MASK_RATE, shape=(28, 28)) -> jax.Array:
    """`(n, *shape)` float32, 1 where a pixel is observed, 0 where hidden; exactly
    `num_masked(rate)` zeros per image, a uniformly random subset."""
    size = int(np.prod(shape))
    u = jax.random.uniform(key, (n, size))
    ranks = jnp.argsort(jnp.argsort(u, axis=1), axis=1)
    return (ranks >= num_masked(rate, size)).astype(jnp.float32).reshape(n, *shape)


def eval_masks(n: int, seed: int = TEST_MASK_SEED, rate: float = MASK_RATE) -> np.ndarray:
    """The fixed evaluation masks: `(n, 28, 28)` float32, `keep_mask` of `PRNGKey(seed)`."""
    return np.asarray(jax.jit(keep_mask, static_argnums=(1, 2))(jax.random.PRNGKey(seed), n, rate))


def cell_damage_mask(key: jax.Array, n: int, rate: float = 0.3, size: int = 32) -> jax.Array:
    """`(n, size, size, 1)` float32: 0 on exactly `round(rate * size**2)` lattice cells of each
    sample (the damage test zeroes them), 1 elsewhere."""
    return keep_mask(key, n, rate, (size, size))[..., None]
