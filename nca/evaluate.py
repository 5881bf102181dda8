"""The article's evaluation metrics, per CA step, over batches of digits."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nca import fast, losses, model


def step_metrics(state: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """Sums over a batch, so batches can be pooled: correct / alive cells, agreeing images."""
    correct, alive = losses.correct_and_alive(state, labels)
    return {
        "correct_cells": jnp.sum(correct),
        "alive_cells": jnp.sum(alive),
        "agreeing_images": jnp.sum(losses.agreement(state)),
    }


@functools.partial(jax.jit, static_argnames=("num_steps", "fire_rate", "noise_std", "impl"))
def metric_curves(
    params: model.Params,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    num_steps: int,
    fire_rate: float = 0.5,
    noise_std: float = 0.0,
    impl: str = "auto",
) -> dict[str, jax.Array]:
    """Runs `num_steps` steps from zero state; `step_metrics` after every step, `(num_steps,)`."""
    rollout = fast.get_rollout(impl)
    _, curves = rollout(
        params,
        model.seed_state(images),
        key,
        num_steps,
        fire_rate,
        noise_std,
        observe=lambda x: step_metrics(x, labels),
    )
    return curves


def accuracy_and_agreement(curves: dict[str, np.ndarray], num_images: int):
    """`(average cell accuracy, total agreement)` per step from summed `step_metrics`."""
    curves = jax.device_get(curves)
    accuracy = curves["correct_cells"] / np.maximum(curves["alive_cells"], 1)
    return accuracy, curves["agreeing_images"] / num_images
