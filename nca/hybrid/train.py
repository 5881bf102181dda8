"""Training of the hybrid restorer, its baselines and the digit-ID classifier (issue 8).

One iteration of a restorer: `batch_size` random training digits; fresh masks hiding exactly
`train_mask_rate` of each digit's pixels and Gaussian noise (`input_noise_std`) on the observed
pixels, both from `fold_in(rng, step)`; the model restores the digit from `[x * keep, keep]`
(gate dropout and state noise on); MSE against the clean digit over all pixels; global-norm
clipping; Adam with warm-up and cosine decay. The classifier: cross-entropy on clean digits.

The batch's gradient may be computed in microbatches (`microbatch` digits each, averaged in a
`lax.map`; on a CPU the lattice models' default, `microbatch_size`): the same gradient up to
float rounding, and the same random numbers, as each microbatch draws its digits' rows of the
whole batch's noise and dropout (`models.Rows`). The small working set (and recomputing each CA
step's activations in the backward pass) trains 1.6-2.3x faster on a CPU core.

With `data.validation_images` > 0 the last that many training digits are held out (never
trained on) and a restorer's mean per-image PSNR on them, under fixed masks of seed
`VALIDATION_MASK_SEED` in eval mode, is logged as `val/psnr` every `validate_every` iterations
(the convergence curve; the test set stays untouched).

The core loop (`nca.loop`: jit, shardings, batches, resume, checkpoints, metrics) runs what
`make_trainer` supplies.
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from nca import checkpoint, data, loop
from nca import config as config_lib
from nca.config import ConfigError
from nca.hybrid import masking, models

# Besides the core's bookkeeping fields; `microbatch` changes only how the gradient is summed.
RESUMABLE_CHANGES = frozenset({"data.mnist_dir", "microbatch"})
VALIDATION_MASK_SEED = 4321  # the held-out digits' masks (the test set's are TEST_MASK_SEED)
VALIDATION_BATCH = 500


# Fields added after runs were saved, with the value that means what their absence meant (None:
# any value, the field is read only by an arch or gate no older run has).
ADDED_FIELDS = {"data.validation_images": 0, "model.gate_local_hidden": None, "microbatch": None}
CPU_MICROBATCH = 8  # digits; the fastest of 4-64 on a CPU core for all three lattice models


def resumable(field: str, old, new, step: int) -> bool:
    return (checkpoint.resumable(field, old, new, step) or field in RESUMABLE_CHANGES
            or checkpoint.added_field(ADDED_FIELDS, field, old, new))  # fmt: skip


@flax.struct.dataclass
class TrainState(loop.TrainState):
    """The core's fields only: step, params, opt_state, rng."""


# The range of every numeric config field this system reads (`nca.loop.check_config`).
CONFIG_RANGES = {
    "model.channels": config_lib.at_least(1),
    "model.hidden": config_lib.at_least(1),
    "model.dw_multiplier": config_lib.at_least(1),
    "model.num_ca_steps": config_lib.at_least(1),
    "model.state_noise_std": config_lib.at_least(0),
    "model.damage_step": config_lib.at_least(1),
    "model.gate_in": config_lib.at_least(1),
    "model.gate_hidden": config_lib.at_least(1),
    "model.gate_out": config_lib.at_least(1),
    "model.gate_dropout": config_lib.fraction(high_open=True),
    "model.gate_local_hidden": config_lib.at_least(1),
    "model.patch_size": config_lib.at_least(1),
    "model.ae_widths": config_lib.at_least(1),
    "model.classifier_widths": config_lib.at_least(1),
    "model.classifier_dense": config_lib.at_least(1),
    "train_mask_rate": config_lib.fraction(high_open=True),
    "input_noise_std": config_lib.at_least(0),
    "batch_size": config_lib.at_least(1),
    "microbatch": config_lib.at_least(0),  # 0: auto (microbatch_size)
    "learning_rate": config_lib.positive(),
    "warmup_steps": config_lib.at_least(0),
    "final_lr_fraction": config_lib.fraction(),
    "grad_clip": config_lib.positive(),
    "data.max_train_images": config_lib.at_least(0),  # 0: all
    "data.validation_images": config_lib.at_least(0),  # 0 or absent: no validation
}


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises `ConfigError` for settings the trainer cannot run, before anything is written."""
    config_lib.check_ranges(config, CONFIG_RANGES)
    m = config.model
    if m.arch not in models.ARCHS:
        raise ConfigError(
            f"unknown model.arch {m.arch!r}; choose one of {', '.join(models.ARCHS)}."
        )
    gates = models.GATES[:-1]  # a hybrid has a gate
    if m.arch == "hybrid" and m.gate not in gates:
        raise ConfigError(f"unknown model.gate {m.gate!r}; choose one of {', '.join(gates)}.")
    if m.damage_step > m.num_ca_steps:
        raise ConfigError(
            f"config fields model.damage_step={m.damage_step} and model.num_ca_steps="
            f"{m.num_ca_steps} do not fit: the damage must come within the steps run."
        )
    if config.get("microbatch") and config.batch_size % config.microbatch:
        raise ConfigError(
            f"config fields batch_size={config.batch_size} and microbatch={config.microbatch} do "
            f"not fit: microbatch must divide batch_size (or be 0: {CPU_MICROBATCH} on a CPU)."
        )
    if m.arch == "hybrid" and m.gate == "patch" and m.gate_out % m.patch_size**2:
        raise ConfigError(
            f"config fields model.gate_out={m.gate_out} and model.patch_size={m.patch_size} do "
            f"not fit: gate_out must be a multiple of patch_size**2."
        )


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
        0.0,
        config.learning_rate,
        config.warmup_steps,
        max(config.num_train_steps, config.warmup_steps + 1),
        config.learning_rate * config.final_lr_fraction,
    )


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip), optax.adam(learning_rate_schedule(config))
    )


def init_train_state(config: ml_collections.ConfigDict) -> TrainState:
    rng, k_params = jax.random.split(jax.random.PRNGKey(config.seed))
    params = models.init_params(k_params, config.model)
    return TrainState.create(params, make_optimizer(config), rng)


def corrupt(
    config: ml_collections.ConfigDict, images: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Training inputs: `(noisy images, keep)`, both `(B, 28, 28)`; fresh exact masks hiding
    `train_mask_rate` of each image, Gaussian noise on the pixel values."""
    k_mask, k_noise = jax.random.split(key)
    keep = masking.keep_mask(k_mask, images.shape[0], config.train_mask_rate)
    noisy = images + config.input_noise_std * jax.random.normal(k_noise, images.shape)
    return noisy, keep


def per_image_psnr(pred: jax.Array, target: jax.Array) -> jax.Array:
    """`(B,)` PSNR in dB, peak 1.0, all pixels (see nca.hybrid.metrics.psnr)."""
    mse = ((pred - target) ** 2).mean((1, 2))
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def microbatch_size(config: ml_collections.ConfigDict) -> int:
    """Digits per forward and backward pass: `microbatch`, or with 0 (auto) `CPU_MICROBATCH`
    for the lattice models on a CPU (as much of it as divides the batch), and the whole batch
    otherwise (accelerators and the CNNs: not measured there)."""
    if config.get("microbatch"):
        return config.microbatch
    if config.model.arch in ("hybrid", "ca_only") and jax.default_backend() == "cpu":
        return math.gcd(CPU_MICROBATCH, config.batch_size)
    return config.batch_size


def make_batch_gradient(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None):
    """`gradient(params, batch, key) -> ((loss, metrics), grads)` of one training batch (see
    `make_train_step`), computed in microbatches of `microbatch_size(config)` digits."""
    validate_config(config)
    m = config.model
    micro = microbatch_size(config)

    def objective(params, digits, k_model, rows):
        """Loss and metrics of `digits`: the batch, or a microbatch (`rows`: `models.Rows`)."""
        images, labels = digits["images"], digits["labels"]
        if m.arch == "classifier":
            logits = models.classifier_logits(params, images)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, {"train/accuracy": (logits.argmax(-1) == labels).mean()}
        out = models.restore(params, digits["noisy"], digits["keep"], m, key=k_model, rows=rows)
        loss = ((out - images) ** 2).mean()
        return loss, {"train/psnr": per_image_psnr(out, images).mean()}

    gradient = jax.value_and_grad(objective, has_aux=True)

    def batch_gradient(params, batch, key: jax.Array):
        images = batch["images"]
        if mesh is not None:
            images = jax.lax.with_sharding_constraint(images, NamedSharding(mesh, P("data")))
        k_input, k_model = jax.random.split(key)
        digits = {"images": images, "labels": batch["labels"]}
        if m.arch != "classifier":
            digits["noisy"], digits["keep"] = corrupt(config, images, k_input)
        size = images.shape[0]
        chunks = size // micro
        if chunks == 1:
            return gradient(params, digits, k_model, None)

        def microbatch(args):  # microbatch i: digits i, i + chunks, ... (every device's shard)
            i, part = args
            return gradient(params, part, k_model, (jnp.arange(micro) * chunks + i, size))

        split = lambda a: a.reshape(micro, chunks, *a.shape[1:]).swapaxes(0, 1)  # noqa: E731
        each = jax.lax.map(microbatch, (jnp.arange(chunks), jax.tree.map(split, digits)))
        return jax.tree.map(lambda a: a.mean(0), each)

    return batch_gradient


def make_train_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None):
    """`train_step(state, batch, key) -> (state, metrics)`, pure; jitted once by the caller.

    batch: `{"images": (B, 28, 28) float32 in [0, 1], "labels": (B,) int32}`. metrics:
    `train/loss`, `train/grad_norm`, `train/lr`, and `train/psnr` (restorers) or
    `train/accuracy` (classifier).
    """
    batch_gradient = make_batch_gradient(config, mesh)
    optimizer = make_optimizer(config)
    schedule = learning_rate_schedule(config)

    def train_step(state: TrainState, batch, key: jax.Array):
        (loss, extra), grads = batch_gradient(state.params, batch, key)
        metrics = loop.step_metrics(state, loss, grads, schedule)
        return state.apply_gradients(grads, optimizer), {**metrics, **extra}

    return train_step


def sample_batch(config, images: np.ndarray, labels: np.ndarray, step: int) -> dict:
    """Iteration `step`'s digits, as the loop draws them (`loop.sample_batch`)."""
    return loop.sample_batch({"images": images, "labels": labels}, config.batch_size, config.seed,
                             step)  # fmt: skip


def make_trainer(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> loop.Trainer:
    """Any arch of the hybrid family: params replicated, the batch sharded along `data`."""
    validate_config(config)
    images, labels = data.load_training_digits(config.data.mnist_dir, config.data.max_train_images)
    held_out = config.data.get("validation_images", 0)
    if held_out >= len(images):
        raise ConfigError(
            f"data.validation_images={held_out} leaves no training digits of {len(images)}."
        )
    validate = None
    if held_out and config.model.arch != "classifier":
        validate = make_validate(config.model, images[-held_out:])
        images, labels = images[:-held_out], labels[:-held_out]
    return loop.Trainer(
        init_state=init_train_state(config),
        train_step=make_train_step(config, mesh),
        train_data={"images": images, "labels": labels},
        batch_size=config.batch_size,
        shard_batch=True,
        validate=validate,
    )


def make_validate(m: ml_collections.ConfigDict, images: np.ndarray):
    """`validate(state) -> {"val/psnr": mean per-image PSNR}` of a restorer on `images`
    (held-out training digits) under fixed masks, eval mode, in batches."""
    masks = masking.eval_masks(len(images), VALIDATION_MASK_SEED)
    forward = jax.jit(lambda params, x, keep: per_image_psnr(models.restore(params, x, keep, m), x))

    def validate(state):
        psnr = [forward(state.params, images[i : i + VALIDATION_BATCH],
                        masks[i : i + VALIDATION_BATCH])
                for i in range(0, len(images), VALIDATION_BATCH)]  # fmt: skip
        return {"val/psnr": jnp.mean(jnp.concatenate(psnr))}

    return validate
