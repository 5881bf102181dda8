"""The self-classifying MNIST cellular automaton (Randazzo et al., Distill 2020).

Every function here is pure: it takes arrays (and PRNG keys) and returns arrays. Nothing is
jitted here; callers apply `jax.jit` / `jax.vmap` where they use it.

Cell state, `(B, H, W, 20) float32`, channels ``[grey | 9 hidden | 10 class]``:
- channel 0 is the MNIST pixel / 255 and never changes; a cell is alive iff grey > 0.1;
- the 19 mutable channels start at 0; dead cells stay exactly 0 but stay visible to neighbours;
- the label a cell votes for is the argmax of its 10 class channels (ties to the lowest index).

Params are a plain dict of arrays in the article's (Keras HWIO) layout, so the published
TensorFlow.js weights load without transposes::

    {"perceive": {"kernel": (3, 3, 20, 80), "bias": (80,)},
     "hidden":   {"kernel": (80, 80),       "bias": (80,)},
     "output":   {"kernel": (80, 19),       "bias": (19,)}}
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

NUM_CHANNELS = 20
NUM_CLASSES = 10
NUM_HIDDEN = NUM_CHANNELS - 1 - NUM_CLASSES  # 9
NUM_MUTABLE = NUM_CHANNELS - 1  # 19
PERCEPTION_FILTERS = 80
ALIVE_THRESHOLD = 0.1

Params = dict[str, dict[str, jax.Array]]
PyTree = Any


def init_params(key: jax.Array, filters: int = PERCEPTION_FILTERS) -> Params:
    """Glorot-uniform kernels, zero biases; the output layer starts at zero (first update is 0).

    22,499 parameters: 3*3*20*80 + 80 + 80*80 + 80 + 80*19 + 19. `filters` widens the
    perception and hidden layers (80: the article's; `config.model.perception_filters`).
    """
    glorot = jax.nn.initializers.glorot_uniform()  # Keras convention: receptive field in fan-in/out
    k_perceive, k_hidden = jax.random.split(key)
    f = filters
    return {
        "perceive": {
            "kernel": glorot(k_perceive, (3, 3, NUM_CHANNELS, f), jnp.float32),
            "bias": jnp.zeros((f,), jnp.float32),
        },
        "hidden": {
            "kernel": glorot(k_hidden, (f, f), jnp.float32),
            "bias": jnp.zeros((f,), jnp.float32),
        },
        "output": {
            "kernel": jnp.zeros((f, NUM_MUTABLE), jnp.float32),
            "bias": jnp.zeros((NUM_MUTABLE,), jnp.float32),
        },
    }


def perception_filters(params: Params) -> int:
    """The width of `params`' perception and hidden layers (80 for the article's model)."""
    return params["hidden"]["kernel"].shape[0]


def widen(params: Params, fresh: Params) -> Params:
    """`params` embedded in the wider `fresh` (`init_params` with more filters) so that the
    wider model computes the same function: the old units keep their weights and see nothing
    of the new ones; the new hidden units read every perception unit with `fresh`'s weights
    and write nothing (zero output rows), so they start to matter as training moves them."""
    f = perception_filters(params)
    if perception_filters(fresh) < f:
        raise ValueError(f"cannot widen {f} filters to {perception_filters(fresh)}.")

    corner = lambda new, old: new.at[tuple(map(slice, old.shape))].set(old)  # noqa: E731
    wide = jax.tree.map(corner, fresh, params)
    wide["hidden"]["kernel"] = wide["hidden"]["kernel"].at[f:, :f].set(0.0)  # old see no new
    wide["output"]["kernel"] = wide["output"]["kernel"].at[f:].set(0.0)  # new write nothing
    return wide


def num_params(params: PyTree) -> int:
    return sum(x.size for x in jax.tree.leaves(params))


def alive_mask(state: jax.Array) -> jax.Array:
    """`(..., H, W, 1) bool`: cells whose grey pixel is above the alive threshold."""
    return state[..., :1] > ALIVE_THRESHOLD


def class_channels(state: jax.Array) -> jax.Array:
    """`(..., H, W, 10)`: the class logits of every cell."""
    return state[..., -NUM_CLASSES:]


def cell_labels(state: jax.Array) -> jax.Array:
    """`(..., H, W) int32`: the digit each cell votes for (argmax, ties to the lowest index)."""
    return jnp.argmax(class_channels(state), axis=-1).astype(jnp.int32)


def seed_state(images: jax.Array) -> jax.Array:
    """`(B, H, W) grey in [0, 1]` -> `(B, H, W, 20)`: the image with all mutable channels 0."""
    images = jnp.asarray(images, jnp.float32)
    zeros = jnp.zeros((*images.shape, NUM_MUTABLE), jnp.float32)
    return jnp.concatenate([images[..., None], zeros], axis=-1)


def mutate(state: jax.Array, new_images: jax.Array) -> jax.Array:
    """Swap in new digits: grey becomes `new_images`, the old state survives only where the new
    digit is alive, newly alive (and dead) cells start at 0.

    state: `(B, H, W, 20)`; new_images: `(B, H, W)` grey in [0, 1].
    """
    new_grey = jnp.asarray(new_images, jnp.float32)[..., None]
    survives = (new_grey > ALIVE_THRESHOLD).astype(state.dtype)
    return jnp.concatenate([new_grey, state[..., 1:] * survives], axis=-1)


def perceive(params: Params, state: jax.Array) -> jax.Array:
    """Trainable 3x3 convolution over all 20 channels, SAME zero padding, ReLU.

    state: `(B, H, W, 20)` -> `(B, H, W, 80)`.
    """
    p = params["perceive"]
    y = jax.lax.conv_general_dilated(
        state,
        p["kernel"],
        window_strides=(1, 1),
        padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return jax.nn.relu(y + p["bias"])


def update(params: Params, perception: jax.Array) -> jax.Array:
    """Two 1x1 convolutions: 80 -> 80 ReLU -> 19. `(..., 80) -> (..., 19)`."""
    h = jax.nn.relu(perception @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return h @ params["output"]["kernel"] + params["output"]["bias"]


def apply_residual(state: jax.Array, ds: jax.Array, fire_mask: jax.Array) -> jax.Array:
    """`state[..., 1:] += ds` on cells that fire and are alive; grey and dead cells unchanged.

    ds: `(B, H, W, 19)` (noise already added); fire_mask: `(B, H, W, 1) bool`.
    """
    ds = ds * (fire_mask & alive_mask(state)).astype(ds.dtype)
    return jnp.concatenate([state[..., :1], state[..., 1:] + ds], axis=-1)


def draw_step_randomness(
    key: jax.Array, state_shape: tuple[int, ...], fire_rate: float, noise_std: float
) -> tuple[jax.Array, jax.Array]:
    """The random inputs of one step: a fire mask `(B, H, W, 1) bool` (one uniform draw per cell,
    shared by all channels, fires iff <= fire_rate) and residual noise `(B, H, W, 19)` (zeros if
    noise_std == 0)."""
    k_fire, k_noise = jax.random.split(key)
    fire_mask = jax.random.uniform(k_fire, (*state_shape[:-1], 1)) <= fire_rate
    noise_shape = (*state_shape[:-1], NUM_MUTABLE)
    if noise_std:
        noise = noise_std * jax.random.normal(k_noise, noise_shape)
    else:
        noise = jnp.zeros(noise_shape, jnp.float32)
    return fire_mask, noise


def step(
    params: Params,
    state: jax.Array,
    key: jax.Array,
    fire_rate: float = 0.5,
    noise_std: float = 0.0,
    perceive_fn=perceive,
) -> jax.Array:
    """One stochastic CA step: `ds = update(perceive(x)) + N(0, noise_std)`, applied to the cells
    that fire (probability `fire_rate`) and are alive. `(B, H, W, 20) -> (B, H, W, 20)`."""
    fire_mask, noise = draw_step_randomness(key, state.shape, fire_rate, noise_std)
    ds = update(params, perceive_fn(params, state)) + noise
    return apply_residual(state, ds, fire_mask)


def rollout(
    params: Params,
    state: jax.Array,
    key: jax.Array,
    num_steps: int,
    fire_rate: float = 0.5,
    noise_std: float = 0.0,
    step_fn=step,
    observe=None,
) -> tuple[jax.Array, PyTree]:
    """Run `num_steps` steps with `jax.lax.scan`; step `t` uses `fold_in(key, t)`.

    Returns the final state `(B, H, W, 20)` and `observe(previous_state, state)` after every
    step, stacked on axis 0 (None without `observe`).
    """

    def body(x, t):
        new = step_fn(params, x, jax.random.fold_in(key, t), fire_rate, noise_std)
        return new, (None if observe is None else observe(x, new))

    return jax.lax.scan(body, state, jnp.arange(num_steps))
