"""Training losses and the article's evaluation metrics, on final CA states.

state: `(B, H, W, 20)`; labels: `(B,) int` digit of each image.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from nca.selforg_mnist import model


def cell_targets(state: jax.Array, labels: jax.Array) -> jax.Array:
    """`(B, H, W, 10)`: one-hot label on alive cells, 0 on dead cells (the article's `y_pic`)."""
    one_hot = jax.nn.one_hot(labels, model.NUM_CLASSES)[:, None, None, :]
    return one_hot * model.alive_mask(state).astype(jnp.float32)


def l2_losses(
    state: jax.Array,
    labels: jax.Array,
    keep: jax.Array | None = None,
    channels: jax.Array | None = None,
) -> jax.Array:
    """`(B,)`: per image, the sum over cells and class channels of (target - class)^2 / 2, over
    the cells of `keep` (`(B, H, W, 1)` bool) and the class channels of `channels` (`(B, 10)`
    bool: per image) if given."""
    err = cell_targets(state, labels) - model.class_channels(state)
    if keep is not None:
        err = err * keep
    if channels is not None:
        err = err * channels[:, None, None, :]
    return jnp.sum(jnp.square(err), axis=(1, 2, 3)) / 2


def l2_loss(state: jax.Array, labels: jax.Array) -> jax.Array:
    """The article's L2 loss: `l2_losses`, mean over the batch."""
    return jnp.mean(l2_losses(state, labels))


def ce_loss(state: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy of the class channels against the label, mean over alive cells.

    The article averages over all cells; dead cells hold constant zero logits, so that only adds a
    constant and rescales the gradient, which the per-tensor gradient normalisation undoes.
    """
    alive = model.alive_mask(state)[..., 0].astype(jnp.float32)
    per_cell = optax.softmax_cross_entropy_with_integer_labels(
        model.class_channels(state), jnp.broadcast_to(labels[:, None, None], alive.shape)
    )
    return jnp.sum(per_cell * alive) / jnp.maximum(jnp.sum(alive), 1.0)


LOSSES = {"l2": l2_loss, "ce": ce_loss}


def correct_and_alive(state: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per image: number of alive cells voting for the right digit, and number of alive cells."""
    alive = model.alive_mask(state)[..., 0]
    correct = (model.cell_labels(state) == labels[:, None, None]) & alive
    return jnp.sum(correct, axis=(1, 2)), jnp.sum(alive, axis=(1, 2))


def average_cell_accuracy(state: jax.Array, labels: jax.Array) -> jax.Array:
    """Correct alive cells / all alive cells of the batch (pooled over cells, as the article)."""
    correct, alive = correct_and_alive(state, labels)
    return jnp.sum(correct) / jnp.maximum(jnp.sum(alive), 1)


def votes_per_label(state: jax.Array) -> jax.Array:
    """`(B, 10)`: per image, the counted alive cells voting for each label. As in the article's
    code, an alive cell whose 10 class values are all negative is not counted (no confident
    vote)."""
    counted = model.alive_mask(state)[..., 0] & jnp.any(model.class_channels(state) >= 0, axis=-1)
    votes = jax.nn.one_hot(model.cell_labels(state), model.NUM_CLASSES) * counted[..., None]
    return jnp.sum(votes, axis=(1, 2))


def agreement(state: jax.Array) -> jax.Array:
    """`(B,) bool`: do all counted alive cells (`votes_per_label`) carry the same label (right or
    wrong)? An image with no counted cell does not agree; the article's notebook (max == sum of
    the counts) counts it as agreeing: `evaluate`'s `no_vote` curve is the difference."""
    per_label = votes_per_label(state)
    num_counted = jnp.sum(per_label, axis=-1)
    return (jnp.max(per_label, axis=-1) == num_counted) & (num_counted > 0)


def total_agreement(state: jax.Array) -> jax.Array:
    """Share of images whose counted alive cells all agree."""
    return jnp.mean(agreement(state).astype(jnp.float32))
