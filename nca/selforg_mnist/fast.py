"""Fast rollouts that compute the same function as `nca.model.rollout` with `nca.model.step`.

`model.step` (dense `lax.conv`) stays the readable reference; the tests check every path here
against it, values and gradients, for the same params, masks and noise. Implementations:

- `conv`: the reference, `lax.conv_general_dilated` over every cell.
- `im2col`: the 3x3 perception as one matrix product over gathered neighbourhoods, every cell.
- `alive`: only alive cells are computed. Only alive cells ever change (and grey is constant), so
  the set of cells to update is fixed for a whole rollout: it is gathered once into an index table
  of static size (`capacity_fraction` of all cells of the batch), each step gathers the 3x3
  neighbourhoods of those cells from the (padded, flattened) grid, runs the MLP on them and
  scatter-adds the update back. If a batch has more alive cells than the table holds, the
  rollout falls back to `im2col` (same result, dense cost), so the result never depends on it.
- `auto`: `alive` on CPU, `conv` on GPU / TPU (their convolution kernels are tuned; `alive`
  there is not measured yet).

`conv` and `im2col` draw the fire mask and residual noise over the whole grid exactly as
`model.step` does, so for the same key they run the same trajectory. `alive` does the same with
`exact_randomness=True`; by default it draws only for the cells it computes (same distribution,
other numbers): drawing 19 normals for every cell of the grid costs more than the alive cells'
MLP on a CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from nca.selforg_mnist import model

IMPLS = ("auto", "conv", "im2col", "alive")
DEFAULT_CAPACITY_FRACTION = 0.22  # MNIST: 17.4 % of cells alive on average, 44 % at most


def perceive_im2col(params: model.Params, state: jax.Array) -> jax.Array:
    """`model.perceive` as one matrix product over gathered 3x3 neighbourhoods (im2col)."""
    b, h, w, c = state.shape
    padded = jnp.pad(state, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # (B, H, W, 9*C): neighbours in the kernel's (row, column, channel) order.
    patches = jnp.concatenate(
        [padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)], axis=-1
    )
    p = params["perceive"]
    return jax.nn.relu(patches @ p["kernel"].reshape(9 * c, -1) + p["bias"])


step_im2col = functools.partial(model.step, perceive_fn=perceive_im2col)


def resolve_impl(impl: str) -> str:
    """`auto` -> the fastest measured implementation for the default backend."""
    if impl not in IMPLS:
        raise ValueError(f"unknown CA implementation {impl!r}; choose one of {IMPLS}.")
    if impl == "auto":
        return "alive" if jax.default_backend() == "cpu" else "conv"
    return impl


def alive_rollout(
    params: model.Params,
    state: jax.Array,
    key: jax.Array,
    num_steps: int,
    fire_rate: float = 0.5,
    noise_std: float = 0.0,
    observe: Callable | None = None,
    capacity_fraction: float = DEFAULT_CAPACITY_FRACTION,
    exact_randomness: bool = False,
):
    """`model.rollout`, computing only alive cells. Same arguments and results.

    exact_randomness: draw the masks and noise over the whole grid as `model.step` does (the same
    trajectory as the reference for the same key) instead of for the computed cells only.
    """
    b, h, w, c = state.shape
    capacity = max(1, min(b * h * w, int(b * h * w * capacity_fraction)))
    num_alive = jnp.sum(model.alive_mask(state))

    def sparse(state):
        hp, wp = h + 2, w + 2
        flat = jnp.pad(state, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(b * hp * wp, c)
        alive = flat[:, 0] > model.ALIVE_THRESHOLD  # the zero border is never alive
        # Index of every alive cell in `flat`; unused slots point at an interior cell of image 0
        # (index wp + 1) and are masked out, so they add exactly 0 wherever they point.
        cells = jnp.nonzero(alive, size=capacity, fill_value=wp + 1)[0]
        in_use = jnp.arange(capacity) < num_alive
        offsets = jnp.array([dy * wp + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        neighbours = cells[:, None] + offsets  # (capacity, 9)
        # Where each cell sits in the unpadded (B, H, W) grid, to pick its random draws.
        image, rest = jnp.divmod(cells, hp * wp)
        row, col = jnp.divmod(rest, wp)
        grid_index = (image * h + row - 1) * w + col - 1
        kernel = params["perceive"]["kernel"].reshape(9 * c, -1)

        def to_grid(flat):
            return flat.reshape(b, hp, wp, c)[:, 1:-1, 1:-1]

        def body(flat, t):
            key_t = jax.random.fold_in(key, t)
            if exact_randomness:
                fire, noise = model.draw_step_randomness(key_t, state.shape, fire_rate, noise_std)
                fire = fire.reshape(-1)[grid_index]
                noise = noise.reshape(-1, model.NUM_MUTABLE)[grid_index]
            else:
                fire, noise = model.draw_step_randomness(key_t, (capacity, c), fire_rate, noise_std)
                fire = fire[:, 0]
            fire = fire & in_use
            patches = flat[neighbours].reshape(capacity, 9 * c)
            perception = jax.nn.relu(patches @ kernel + params["perceive"]["bias"])
            ds = (model.update(params, perception) + noise) * fire[:, None]
            new = flat.at[cells, 1:].add(ds)
            return new, (None if observe is None else observe(to_grid(flat), to_grid(new)))

        flat, observed = jax.lax.scan(body, flat, jnp.arange(num_steps))
        return to_grid(flat), observed

    def dense(state):
        return model.rollout(
            params, state, key, num_steps, fire_rate, noise_std, step_im2col, observe
        )

    if capacity >= b * h * w:
        return dense(state)
    return jax.lax.cond(num_alive <= capacity, sparse, dense, state)


def get_rollout(
    impl: str = "auto",
    capacity_fraction: float = DEFAULT_CAPACITY_FRACTION,
    exact_randomness: bool = False,
):
    """The rollout function of `impl`, with `model.rollout`'s signature:
    `(params, state, key, num_steps, fire_rate, noise_std, observe=None) -> (final, observed)`."""
    impl = resolve_impl(impl)
    if impl == "alive":
        return functools.partial(
            alive_rollout,
            capacity_fraction=capacity_fraction,
            exact_randomness=exact_randomness,
        )
    step_fn = {"conv": model.step, "im2col": step_im2col}[impl]

    def rollout(params, state, key, num_steps, fire_rate=0.5, noise_std=0.0, observe=None):
        return model.rollout(params, state, key, num_steps, fire_rate, noise_std, step_fn, observe)

    return rollout
