"""Adversarial reprogramming of the self-classifying CA (Randazzo, Mordvintsev, Niklasson, Levin,
"Adversarial Reprogramming of Neural Cellular Automata", Distill 2021): two rules on one grid.

A fixed random mask marks each cell of the grid adversarial with probability `fraction` (one
draw per cell, alive or not; only alive cells ever update). Every step both rules compute their
update from the same state; adversarial cells take the adversary's, the others the original's.
The article's notebook draws a fire mask and noise per rule and blends the two new states by the
mask; since each cell keeps only one rule's draw, one draw per cell has the same distribution,
and that is what the rollouts here use.

- `adversary_mask`: the mask; `mixed_step`: one step, dense (the readable reference);
- `mixed_rollout`: `num_steps` steps on the reference or the fast `table` path
  (`fast.mixed_table_rollout`), with the rollouts' `observe`; `scheduled_rollout` places and
  removes the adversaries at given steps;
- `evaluate_attack` / `attack_report`: the attack's success over the test set
  (`experiments/attack.py`);
- `make_trainer`: trains an adversary against a frozen original (configs with an `adversary`
  section, e.g. `configs/adversary_eight.py`; `nca.selforg_mnist.train` hands them here).
"""

from __future__ import annotations

import functools
from pathlib import Path

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nca import loop
from nca.selforg_mnist import evaluate, fast, losses, model


def adversary_mask(key: jax.Array, shape: tuple[int, int, int], fraction: float) -> jax.Array:
    """`(B, H, W, 1) bool`: each cell adversarial with probability `fraction`."""
    return jax.random.uniform(key, (*shape, 1)) < fraction


def mixed_step(
    params: model.Params,
    state: jax.Array,
    key: jax.Array,
    fire_rate: float = 0.5,
    noise_std: float = 0.0,
    *,
    other: model.Params,
    mask: jax.Array,
    perceive_fn=model.perceive,
) -> jax.Array:
    """`model.step` where the cells of `mask` (`(B, H, W, 1)` bool) use `other`'s params."""
    fire_mask, noise = model.draw_step_randomness(key, state.shape, fire_rate, noise_std)
    ds = model.update(params, perceive_fn(params, state))
    other_ds = model.update(other, perceive_fn(other, state))
    return model.apply_residual(state, jnp.where(mask, other_ds, ds) + noise, fire_mask)


def mixed_rollout(
    params: model.Params,
    other: model.Params,
    mask: jax.Array,
    state: jax.Array,
    key: jax.Array,
    num_steps: int,
    fire_rate: float = 0.5,
    noise_std: float = 0.0,
    observe=None,
    impl: str = "auto",
    observe_rows=None,
    **table_options,
):
    """`num_steps` of `mixed_step`: returns the final state and the stacked observations, as
    `model.rollout`. impl: `conv` (the reference), `table` (fast, the same function), or `auto`
    (`table` on CPU, `conv` elsewhere); `table` draws its own masks and noise, and observes on
    its rows with `observe_rows` if given. table_options: `fast.mixed_table_rollout`'s keyword
    arguments (`num_buckets`, `fire_compaction`, ...; `train.table_options`). Both are ignored
    on `conv`."""
    impl = fast.resolve_impl(impl)
    if impl == "table":
        return fast.mixed_table_rollout(
            params, other, mask, state, key, num_steps, fire_rate, noise_std, observe,
            observe_rows=observe_rows, **table_options,
        )  # fmt: skip
    if impl != "conv":
        raise ValueError(f"mixed rollouts run on `conv` or `table`, not {impl!r}.")

    def step(p, x, k, fire_rate, noise_std):
        return mixed_step(p, x, k, fire_rate, noise_std, other=other, mask=mask)

    return model.rollout(params, state, key, num_steps, fire_rate, noise_std, step, observe)


# --------------------------------------------------------------------------------------------
# The attack's evaluation

ATTACK_CURVES = ("target_votes", "target_agreement", "accuracy")


def attack_metrics(state: jax.Array, labels: jax.Array, mask: jax.Array, target: int):
    """Sums over a batch (to pool batches) for the digits whose label is not `target`, over
    their alive cells outside `mask` (the original's cells): cells voting `target`, cells voting
    their true label, those cells, and the digits whose counted cells all vote `target` (as
    `losses.agreement` counts), with the number of such digits."""
    cells = model.alive_mask(state)[..., 0] & ~mask[..., 0]
    attacked = labels != target
    cells = cells & attacked[:, None, None]
    votes = model.cell_labels(state)
    counted = cells & jnp.any(model.class_channels(state) >= 0, axis=-1)
    num_counted = jnp.sum(counted, axis=(1, 2))
    on_target = jnp.sum(counted & (votes == target), axis=(1, 2))
    return {
        "target_cells": jnp.sum(cells & (votes == target)),
        "correct_cells": jnp.sum(cells & (votes == labels[:, None, None])),
        "cells": jnp.sum(cells),
        "target_agreeing": jnp.sum((on_target == num_counted) & (num_counted > 0)),
        "digits": jnp.sum(attacked),
    }


def attack_row_metrics(previous, rows, image, cell, labels, mask, target: int):
    """`attack_metrics` on the `table` path's rows of alive cells (`fast.table_rollout`'s
    `observe_rows`; as `evaluate.row_metrics`): the same sums, without rebuilding the grid."""
    del previous
    num_images = labels.shape[0]
    label = labels.at[image].get(mode="fill", fill_value=target)  # unused rows: not attacked
    adversarial = mask.reshape(-1).at[cell].get(mode="fill", fill_value=True)
    cells = (label != target) & ~adversarial
    votes = model.cell_labels(rows)
    counted = cells & jnp.any(model.class_channels(rows) >= 0, axis=-1)
    per_image = functools.partial(
        jax.ops.segment_sum, segment_ids=image, num_segments=num_images + 1, indices_are_sorted=True
    )
    num_counted = per_image(counted.astype(jnp.int32))[:num_images]
    on_target = per_image((counted & (votes == target)).astype(jnp.int32))[:num_images]
    return {
        "target_cells": jnp.sum(cells & (votes == target)),
        "correct_cells": jnp.sum(cells & (votes == label)),
        "cells": jnp.sum(cells),
        "target_agreeing": jnp.sum((on_target == num_counted) & (num_counted > 0)),
        "digits": jnp.sum(labels != target),
    }


def scheduled_rollout(params, other, mask, state, key, *, place_at: int, remove_at: int,
                      num_steps: int, fire_rate=0.5, noise_std=0.0, observe=None,
                      impl="auto", observe_rows=None, second_share=None,
                      **table_options):  # fmt: skip
    """`num_steps` steps: the original rule alone before `place_at`, both rules from `place_at`
    until `remove_at`, the original alone after (the removed cells keep their states and follow
    the original). Returns the final state and the observations of every step, stacked.
    observe_rows, table_options (`dead_cells_zero`, `sizes`):
    `fast.table_rollout`'s, second_share: `fast.mixed_table_rollout`'s, if impl is `table`."""
    bounds = sorted({0, min(place_at, num_steps), min(remove_at, num_steps), num_steps})
    observed = []
    for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        k = jax.random.fold_in(key, i)
        args = (end - start, fire_rate, noise_std, observe)
        if place_at <= start < remove_at:
            state, obs = mixed_rollout(params, other, mask, state, k, *args, impl, observe_rows,
                                       second_share=second_share, **table_options)  # fmt: skip
        else:
            rollout = fast.get_rollout(impl, **table_options)
            state, obs = rollout(params, state, k, *args, observe_rows=observe_rows)
        observed.append(obs)
    if observe is None:
        return state, None
    return state, jax.tree.map(lambda *a: jnp.concatenate(a), *observed)


@functools.partial(
    jax.jit,
    static_argnames=("fraction", "num_steps", "after", "target", "fire_rate", "noise_std", "impl",
                     "table_sizes"),
)  # fmt: skip
def attack_batch(params, other, images, labels, key, fraction, *, num_steps, after, target,
                 fire_rate, noise_std, impl, table_sizes=None):  # fmt: skip
    """One batch: adversaries (a fresh mask of `fraction`) from step 0 to `num_steps`, then
    `after` steps without them; per-step sums of `attack_metrics`. On `table`, each rule
    computes its own cells (`second_share`); table_sizes: `fast.table_rollout`'s `sizes`."""
    k_mask, k_run = jax.random.split(key)
    mask = adversary_mask(k_mask, images.shape, fraction)
    observe = lambda previous, state: attack_metrics(state, labels, mask, target)  # noqa: E731
    rows = functools.partial(attack_row_metrics, labels=labels, mask=mask, target=target)
    _, sums = scheduled_rollout(
        params, other, mask, model.seed_state(images), k_run, place_at=0, remove_at=num_steps,
        num_steps=num_steps + after, fire_rate=fire_rate, noise_std=noise_std, observe=observe,
        impl=impl, observe_rows=rows, dead_cells_zero=True,  # a `seed_state` and its rollouts
        second_share=fraction, sizes=table_sizes,
    )  # fmt: skip
    return sums


def evaluate_attack(
    params, other, images, labels, fraction: float, *, num_steps: int = 200, after: int = 200,
    target: int = 8, fire_rate: float = 0.5, noise_std: float = 0.0, batch_size: int = 1000,
    seed: int = 0, impl: str = "auto", progress: bool = True, devices=None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """The attack over `images` (grey, `(N, 28, 28)`) in batches: curves of `ATTACK_CURVES`,
    `(num_steps + after,)`; the adversaries are removed after index `num_steps - 1`.
    target_votes: share of the original's alive cells (of non-`target` digits) voting
    `target`; target_agreement: share of non-`target` digits all of whose counted cells vote
    it; accuracy: share of those cells voting the true label. The batches run side by side on
    `devices` (`evaluate.sum_over_batches`), with the same numbers on any number."""

    def run(b, idx, device):
        arrays = (params, other, images[idx], labels[idx], jax.random.PRNGKey(seed * 100_003 + b))
        return attack_batch(
            *jax.device_put(arrays, device), fraction, num_steps=num_steps, after=after,
            target=target, fire_rate=fire_rate, noise_std=noise_std, impl=impl,
            table_sizes=fast.table_size_of(images[idx]),  # only the batch's size compiles
        )  # fmt: skip

    desc = f"attack {fraction:g}" if progress else None
    totals = evaluate.sum_over_batches(run, len(images), batch_size, devices=devices, desc=desc)
    cells = np.maximum(totals["cells"], 1).astype(np.float64)
    return {
        "target_votes": totals["target_cells"] / cells,
        "target_agreement": totals["target_agreeing"] / np.maximum(totals["digits"], 1),
        "accuracy": totals["correct_cells"] / cells,
    }


def attack_report(config, params, other, images, labels, fractions, label: str, *,
                  num_steps: int = 200, after: int = 200, target: int = 8, **kwargs):  # fmt: skip
    """`evaluate_attack` at each adversary fraction, with the fire rate and noise `config` was
    trained with, as the report `attack`: every curve (JSON), the table at `num_steps` and
    `after` steps after the removal (Markdown), the curves (figure)."""
    from nca import report

    runs = {}
    for fraction in fractions:
        runs[fraction] = evaluate_attack(
            params, other, images, labels, fraction, num_steps=num_steps, after=after,
            target=target, fire_rate=config.model.fire_rate, noise_std=config.model.noise_std,
            **kwargs,
        )  # fmt: skip
    end = num_steps + after
    times = [(t, name) for t in (num_steps, end) for name in ATTACK_CURVES]
    header = ["adversaries"] + [f"{name.replace('_', ' ')} at {t}" for t, name in times]
    rows = [[f"{100 * f:g} %"] + [f"{100 * c[name][t - 1]:.1f}" for t, name in times]
            for f, c in runs.items()]  # fmt: skip
    table = (
        f"{label}: {len(images)} test digits; adversaries from step 0, removed after step "
        f"{num_steps}; percent of the original's alive cells of non-{target} digits\n\n"
        + report.table(header, rows)
        + "\n"
    )
    fig, axes = report.figure(1, len(ATTACK_CURVES), figsize=(4.2 * len(ATTACK_CURVES), 3.4))
    for ax, name in zip(axes, ATTACK_CURVES, strict=True):
        for fraction, curves in runs.items():
            steps = np.arange(1, end + 1)
            ax.plot(steps, curves[name], lw=1.2, label=f"{100 * fraction:g} %")
        ax.axvline(num_steps + 0.5, color="grey", ls="--", lw=0.8)
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("CA step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title="adversaries")
    fig.tight_layout()
    curves = {str(f): {k: v.tolist() for k, v in c.items()} for f, c in runs.items()}
    data = {"model": label, "num_digits": len(images), "steps": num_steps, "after": after,
            "target": target, "curves": curves}  # fmt: skip
    return report.Report("attack", data, table, fig)


# --------------------------------------------------------------------------------------------
# Training an adversary against a frozen original (the article's notebook)


@flax.struct.dataclass
class AdversaryTrainState(loop.TrainState):
    """`params` are the adversary's. The frozen `original` is carried in the state, so a run
    resumes from its checkpoints alone, also where the workdir it was loaded from is gone."""

    original: model.Params
    pool_states: jax.Array  # (pool_size, 28, 28, 20) float32
    pool_labels: jax.Array  # (pool_size,) int32: the true digits (the loss targets `target`)
    pool_masks: jax.Array  # (pool_size, 28, 28, 1) bool: each member's adversarial cells


def make_trainer(config: ml_collections.ConfigDict, mesh) -> loop.Trainer:
    """Trains `config`'s adversary: the pool + mutation recipe of `train`, with a mask per pool
    member (fresh digits get a fresh mask, mutated ones keep theirs), the original frozen, and
    the L2 loss pulling every alive cell's class channels to the one-hot of `target`."""
    from nca.selforg_mnist import train

    a = config.adversary
    images, labels = train.load_training_data(config)
    plain = train.init_train_state(config, images, labels)
    # None when the run resumes (`loop.FRESH_RUN_SOURCES`): its checkpoint holds the original.
    width = a.get("original_filters", model.PERCEPTION_FILTERS)
    fresh = model.init_params(jax.random.PRNGKey(0), width)  # the shapes a resume restores into
    original = train.params_from(a.original, fresh, config, "adversary.original")
    k_masks = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
    init = AdversaryTrainState.create(
        plain.params, train.make_optimizer(config), plain.rng, original=original,
        pool_states=plain.pool_states, pool_labels=plain.pool_labels,
        pool_masks=adversary_mask(k_masks, plain.pool_states.shape[:3], a.fraction),
    )  # fmt: skip
    optimizer, schedule = train.make_optimizer(config), train.learning_rate_schedule(config)
    m = config.model
    impl = "table" if fast.resolve_impl(m.impl) in ("alive", "table") else "conv"

    def train_step(state, batch, key):
        k_pool, k_mask, k_rollout = jax.random.split(key, 3)
        x0, y, idx = train.assemble_batch(config, state, batch, k_pool)
        quarter = config.batch_size // 4
        fresh = adversary_mask(k_mask, (quarter, *x0.shape[1:3]), a.fraction)
        mask = jnp.concatenate([fresh, state.pool_masks[idx[quarter:]]])
        targets = jnp.full_like(y, a.target)

        def objective(adversary):
            x, _ = mixed_rollout(state.original, adversary, mask, x0, k_rollout,
                                 config.num_ca_steps, m.fire_rate, m.noise_std, impl=impl,
                                 second_share=a.fraction,
                                 **train.table_options(config))  # fmt: skip
            return losses.l2_loss(x, targets), x

        new, x, metrics = loop.gradient_step(state, objective, optimizer, schedule)
        new = new.replace(
            pool_states=state.pool_states.at[idx].set(x),
            pool_labels=state.pool_labels.at[idx].set(y),
            pool_masks=state.pool_masks.at[idx].set(mask),
        )
        return new, metrics

    return train.pooled_trainer(config, init, train_step, images, labels)


# --------------------------------------------------------------------------------------------
# Video

ADVERSARY_COLOUR = np.array([0, 0, 0], np.uint8)  # adversarial cells, while they act


@functools.partial(
    jax.jit, static_argnames=("num_steps", "after", "fire_rate", "noise_std", "impl")
)
def attack_trajectory(params, other, mask, images, key, *, num_steps, after, fire_rate,
                      noise_std, impl="auto"):  # fmt: skip
    """Per step `(T, B, H, W)` labels and alive masks of `scheduled_rollout` from the seeds
    of `images`, adversaries from step 0 to `num_steps`."""

    def observe(_, state):
        return model.cell_labels(state), model.alive_mask(state)[..., 0]

    return scheduled_rollout(
        params, other, mask, model.seed_state(images), key, place_at=0, remove_at=num_steps,
        num_steps=num_steps + after, fire_rate=fire_rate, noise_std=noise_std, observe=observe,
        impl=impl,
    )[1]  # fmt: skip


def attack_video(config, params, other, images, stem, *, fraction: float, num_steps: int,
                 after: int, seed: int = 0, columns: int = 4, scale: int = 4, every: int = 2,
                 fps: int = 20) -> None:  # fmt: skip
    """`stem`.gif and .mp4: `images` under attack, cells in their label's colour, adversarial
    cells black while they act (until step `num_steps`), then `after` steps without them."""
    from nca.selforg_mnist import render

    k_mask, k_run = jax.random.split(jax.random.PRNGKey(seed))
    mask = adversary_mask(k_mask, images.shape, fraction)
    labels, alive = jax.device_get(attack_trajectory(
        params, other, mask, images, k_run, num_steps=num_steps, after=after,
        fire_rate=config.model.fire_rate, noise_std=config.model.noise_std,
    ))  # fmt: skip
    marked = np.asarray(mask[..., 0])
    frames = []
    for t in range(0, len(labels), every):
        rgb = np.where(alive[t][..., None], render.ARTICLE_PALETTE[labels[t]], render.WHITE)
        if t < num_steps:
            rgb = np.where((marked & alive[t])[..., None], ADVERSARY_COLOUR, rgb)
        frames.append(render.pad_to_multiple(render.upscale(render.tile(rgb, columns), scale)))
    render.write_video(Path(stem), frames, fps)
