"""A self-classifying CA trained to resist adversarial reprogramming (the follow-up article's
attack, `adversarial.py`): the defender and an adversary train together, as a game.

Every iteration both rules roll out on one batch, the adversary on a random `fraction` of the
cells of `attacked_share` of the pool members (fresh digits draw their mask, mutated ones keep
theirs, as in the adversary's own training, unless `redraw` > 0: then each member taken from the
pool draws a new mask with that probability, so attacked digits are released and must recover,
and formed digits are hijacked). From that one rollout:

- the defender (`state.params`) takes a step of the article's recipe on its own cells: the L2
  loss of the alive cells the adversary does not hold, against the true label (with
  `attacked_loss = "not_target"`, on the attacked members only the target's class channel
  counts: their cells must not vote for the target, but need not hold their label);
- the adversary (`state.adversary`) takes a step of the notebook's adversary recipe against the
  defender as it is now: the L2 loss of every alive cell of the attacked members against
  `target`.

The rest of the batch is clean, so the defender also keeps the clean task. The adversary
resists the defender's moves as they happen; the defence is judged by a fresh adversary trained
against the frozen defender afterwards (`configs/adversary_eight.py` with
`adversary.original=<this workdir>`), which is the attack a deployed CA would meet.

With `anchor` (a shipped model or a workdir, usually the `init_from` model) the defender's loss
adds `anchor_weight` times its drift from the anchor on the clean members: `anchor_drift`, the
squared distance of every mutable channel of the final states from the anchor's own rollout from
the same start, with the same fire masks and noise. It asks the defender to keep the anchor's
clean dynamics, hidden channels included, from every state of the pool, where the label loss sees
only the class channels; on attacked members it is free to differ.

With `random_rules` > 0 there is no game: every iteration the foreign cells run a fresh random
rule (`random_rule`: `model.init_params` with its output layer drawn too, Glorot-uniform times
`random_rules`), the defender trains against it, and `state.adversary` stays as it started.

`make_trainer` is what `train.make_trainer` hands configs with a `defence` section
(`configs/l2_noise_defended.py`).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from nca import loop
from nca.selforg_mnist import adversarial, fast, losses, model

ATTACKED_LOSSES = ("label", "not_target")  # the defender's loss on attacked members


@flax.struct.dataclass
class DefenceTrainState(loop.TrainState):
    """`params` are the defender's (the model this run exports); the adversary trains beside it."""

    adversary: model.Params
    adversary_opt_state: optax.OptState
    pool_states: jax.Array  # (pool_size, 28, 28, 20) float32
    pool_labels: jax.Array  # (pool_size,) int32
    pool_masks: jax.Array  # (pool_size, 28, 28, 1) bool: each member's adversarial cells


def game_gradients(params, adversary, mask, x0, labels, key, *, target: int, num_steps: int,
                   fire_rate: float, noise_std: float, impl: str = "table",
                   adversary_trains: bool = True, attacked_loss: str = "label",
                   anchor: jax.Array | None = None, anchor_weight: float = 0.0,
                   **table_options):  # fmt: skip
    """One mixed rollout and both players' gradients: `(final state, (defender loss, its
    gradient), (adversary loss, its gradient))`. The adversary's loss averages over the members
    whose mask holds any cell (0 if none does); its gradient is None unless `adversary_trains`
    (the backward pass then skips it). attacked_loss: the defender's loss on attacked members,
    `label` (every class channel, as on clean ones) or `not_target` (the target's channel only).
    anchor: the anchor's final states from the same start and draws; the defender's loss then
    adds `anchor_weight * anchor_drift`. table_options: as `adversarial.mixed_rollout`'s."""

    def rollout(p, a):
        return adversarial.mixed_rollout(p, a, mask, x0, key, num_steps, fire_rate, noise_std,
                                         impl=impl, **table_options)[0]  # fmt: skip

    if adversary_trains:
        x, pullback = jax.vjp(rollout, params, adversary)
    else:
        x, pull_defender = jax.vjp(lambda p: rollout(p, adversary), params)
        pullback = lambda g: (pull_defender(g)[0], None)  # noqa: E731
    attacked = attacked_members(mask)
    channels = None
    if attacked_loss == "not_target":
        only_target = jnp.arange(model.NUM_CLASSES) == target
        channels = (attacked[:, None] == 0) | only_target

    def defender_loss(x):
        loss = jnp.mean(losses.l2_losses(x, labels, ~mask, channels))
        if anchor is not None:
            loss += anchor_weight * anchor_drift(x, anchor, mask)
        return loss

    def adversary_loss(x):
        per_member = losses.l2_losses(x, jnp.full_like(labels, target))
        return jnp.sum(per_member * attacked) / jnp.maximum(jnp.sum(attacked), 1.0)

    defender_loss, g_defender = jax.value_and_grad(defender_loss)(x)
    attack_loss, g_attack = jax.value_and_grad(adversary_loss)(x)
    return (
        x,
        (defender_loss, pullback(g_defender)[0]),
        (attack_loss, pullback(g_attack)[1]),
    )


def make_trainer(config: ml_collections.ConfigDict, mesh) -> loop.Trainer:
    """The game of the module docstring, with the pool + mutation recipe of `train` for both
    players (one optimiser and schedule each, the same settings)."""
    from nca.selforg_mnist import train

    d = config.defence
    images, labels = train.load_training_data(config)
    plain = train.init_train_state(config, images, labels)
    optimizer, schedule = train.make_optimizer(config), train.learning_rate_schedule(config)
    key = jax.random.PRNGKey(config.seed)
    fresh = model.init_params(jax.random.fold_in(key, 2))
    adversary = train.params_from(d.get("adversary_init"), fresh, config, "defence.adversary_init")
    init = DefenceTrainState.create(
        plain.params, optimizer, plain.rng, adversary=adversary,
        adversary_opt_state=optimizer.init(adversary), pool_states=plain.pool_states,
        pool_labels=plain.pool_labels,
        pool_masks=draw_masks(jax.random.fold_in(key, 1), plain.pool_states.shape[:3], d),
    )  # fmt: skip
    m = config.model
    impl = "table" if fast.resolve_impl(m.impl) in ("alive", "table") else "conv"
    random_rules = d.get("random_rules", 0.0)
    anchor = None  # the anchor's params; needed at every step, so a resume needs them too
    if d.get("anchor"):
        anchor = train.params_from(d.anchor, fresh, config, "defence.anchor")

    def train_step(state, batch, key):
        # The plain trainer's keys for the pool and the rollout: with attacked_share 0 the
        # defender takes exactly the plain trainer's step.
        k_pool, k_rollout = jax.random.split(key)
        x0, y, idx = train.assemble_batch(config, state, batch, k_pool)
        quarter = config.batch_size // 4
        fresh = draw_masks(jax.random.fold_in(key, 2), (quarter, *x0.shape[1:3]), d)
        kept = state.pool_masks[idx[quarter:]]
        k_redraw, k_new = jax.random.split(jax.random.fold_in(key, 3))
        redraw = jax.random.uniform(k_redraw, (len(kept), 1, 1, 1)) < d.get("redraw", 0.0)
        kept = jnp.where(redraw, draw_masks(k_new, kept.shape[:3], d), kept)
        mask = jnp.concatenate([fresh, kept])
        foreign = (random_rule(jax.random.fold_in(key, 4), random_rules) if random_rules
                   else state.adversary)  # fmt: skip
        rollout_options = dict(num_steps=config.num_ca_steps, fire_rate=m.fire_rate,
                               noise_std=m.noise_std, impl=impl, second_share=d.fraction,
                               **train.table_options(config))  # fmt: skip
        anchor_x = None
        if anchor is not None:  # the anchor's rollout from the same start, with the same draws
            anchor_x = adversarial.mixed_rollout(anchor, anchor, mask, x0, k_rollout,
                                                 **rollout_options)[0]  # fmt: skip
        x, (loss, grads), (attack_loss, attack_grads) = game_gradients(
            state.params, foreign, mask, x0, y, k_rollout, target=d.target,
            adversary_trains=not random_rules, attacked_loss=d.get("attacked_loss", "label"),
            anchor=anchor_x, anchor_weight=d.get("anchor_weight", 0.0), **rollout_options,
        )  # fmt: skip
        new = state.apply_gradients(grads, optimizer)
        if not random_rules:
            updates, adversary_opt_state = optimizer.update(
                attack_grads, state.adversary_opt_state, state.adversary
            )
            new = new.replace(adversary=optax.apply_updates(state.adversary, updates),
                              adversary_opt_state=adversary_opt_state)  # fmt: skip
        new = new.replace(
            pool_states=state.pool_states.at[idx].set(x),
            pool_labels=state.pool_labels.at[idx].set(y),
            pool_masks=state.pool_masks.at[idx].set(mask),
        )
        metrics = loop.step_metrics(state, loss, grads, schedule) | {
            "train/attacked_share": jnp.mean(attacked_members(mask)),
        }
        if not random_rules:  # a random rule has no loss of its own to log
            metrics["train/adversary_loss"] = attack_loss
        if anchor is not None:  # train/loss includes anchor_weight times this
            metrics["train/anchor_drift"] = anchor_drift(x, anchor_x, mask)
        return new, metrics

    return train.pooled_trainer(config, init, train_step, images, labels)


def attacked_members(mask: jax.Array) -> jax.Array:
    """`(B,)`: 1.0 for each member whose mask (`(B, H, W, 1)` bool) holds any cell, else 0."""
    return jnp.any(mask, axis=(1, 2, 3)).astype(jnp.float32)


def anchor_drift(x: jax.Array, anchor: jax.Array, mask: jax.Array) -> jax.Array:
    """Per clean member (no cell of `mask`, `(B, H, W, 1)`), the sum over cells and mutable
    channels of (x - anchor)^2 / 2, averaged over the clean members (0 if none is)."""
    drift = jnp.sum(jnp.square(x[..., 1:] - anchor[..., 1:]), axis=(1, 2, 3)) / 2
    clean = 1.0 - attacked_members(mask)
    return jnp.sum(drift * clean) / jnp.maximum(jnp.sum(clean), 1.0)


def random_rule(key: jax.Array, scale: float) -> model.Params:
    """A random foreign rule: `model.init_params`, with the output layer (which starts at zero
    there) drawn Glorot-uniform times `scale` as well."""
    k_init, k_output = jax.random.split(key)
    params = model.init_params(k_init)
    kernel = params["output"]["kernel"]
    glorot = jax.nn.initializers.glorot_uniform()(k_output, kernel.shape, kernel.dtype)
    return params | {"output": params["output"] | {"kernel": scale * glorot}}


def draw_masks(key: jax.Array, shape: tuple[int, int, int], d: ml_collections.ConfigDict):
    """`(B, H, W, 1) bool`: `adversarial.adversary_mask` of `d.fraction` on a random
    `d.attacked_share` of the `B` members, empty on the others."""
    k_mask, k_member = jax.random.split(key)
    attacked = jax.random.uniform(k_member, (shape[0], 1, 1, 1)) < d.attacked_share
    return adversarial.adversary_mask(k_mask, shape, d.fraction) & attacked
