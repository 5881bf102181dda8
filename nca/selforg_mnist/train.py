"""Pool + mutation training of the self-classifying MNIST CA, as the article's notebook does it.

Each iteration: sample `batch_size` pool members without replacement; replace the first quarter
with fresh training digits (zero state) and mutate the last quarter into new training digits
(without mutation, the notebook's "persistent" model, it too becomes fresh digits); run
`num_ca_steps` CA steps with `lax.scan`; take the loss on the final state; normalise each gradient
tensor, `g / (||g|| + 1e-8)`; one Adam step; write the states and labels back to the pool.

Data-parallel over a 1-D `("data",)` mesh: params replicated, the pool and the batch sharded along
`data`. The same code runs on one CPU, N simulated CPU devices and a TPU slice. `make_trainer`
hands all this to the core loop (`nca.loop`), which jits, samples, checkpoints and resumes.
"""

from __future__ import annotations

import dataclasses

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
from nca.selforg_mnist import defence, fast, losses, model, pretrained

# Config fields besides the core's bookkeeping that may change on resume: where the data is, how
# the CA is computed (the same function), and where a fresh run's params come from.
RESUMABLE_CHANGES = frozenset(
    {"data.mnist_dir", "model.impl", "model.alive_capacity", "model.exact_randomness",
     "model.table_buckets", "model.fire_compaction", "init_from", "defence.adversary_init",
     "adversary.original"}
)  # fmt: skip
# Fields added after runs were saved, at the value that reproduces those runs: a run saved without
# one resumes with it at that value.
ADDED_FIELDS = {
    "defence.redraw": 0.0,
    "defence.random_rules": 0.0,
    "defence.attacked_loss": "label",
    "defence.anchor": "",
    "defence.anchor_weight": 0.0,
    "model.perception_filters": model.PERCEPTION_FILTERS,
    "adversary.original_filters": model.PERCEPTION_FILTERS,
}
# The config field that sets the width of the params each source field loads (the others load
# the article's 80 filters).
WIDTH_FIELDS = {"init_from": "model.perception_filters",
                "adversary.original": "adversary.original_filters"}  # fmt: skip


def resumable(field: str, old, new, step: int) -> bool:
    """The core's bookkeeping fields, `RESUMABLE_CHANGES`, and learning-rate boundaries that only
    move later than `step` (the iterations done so far used the same rates either way)."""
    if checkpoint.resumable(field, old, new, step) or field in RESUMABLE_CHANGES:
        return True
    if checkpoint.added_field(ADDED_FIELDS, field, old, new):
        return True
    if field == "lr_boundaries" and isinstance(old, list) and isinstance(new, list):
        return [b for b in old if b <= step] == [b for b in new if b <= step]
    return False


@flax.struct.dataclass
class TrainState(loop.TrainState):
    pool_states: jax.Array  # (pool_size, 28, 28, 20) float32
    pool_labels: jax.Array  # (pool_size,) int32


# --------------------------------------------------------------------------------------------
# Optimiser and state


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """`learning_rate`, x0.1 after each of `lr_boundaries` iterations."""
    return optax.piecewise_constant_schedule(
        config.learning_rate, {int(b): 0.1 for b in config.lr_boundaries}
    )


def normalize_per_tensor(eps: float) -> optax.GradientTransformation:
    """`g / (||g|| + eps)` for every parameter tensor (the article's gradient normalisation)."""
    return optax.stateless(
        lambda grads, params=None: jax.tree.map(lambda g: g / (jnp.linalg.norm(g) + eps), grads)
    )


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    return optax.chain(
        normalize_per_tensor(config.grad_norm_eps),
        optax.adam(learning_rate_schedule(config), eps=config.adam_eps),
    )


def num_fresh_digits(config: ml_collections.ConfigDict) -> int:
    """How many new training digits one iteration consumes."""
    if not config.use_pool:
        return config.batch_size
    return 2 * (config.batch_size // 4)


def init_train_state(
    config: ml_collections.ConfigDict, images: jax.Array, labels: jax.Array
) -> TrainState:
    """Fresh params (or `config.init_from`'s) and an initial pool of `pool_size` random training
    digits at zero state.

    images: `(N, 28, 28)` grey in [0, 1]; labels: `(N,)`.
    """
    rng, k_params, k_pool = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    params = initial_params(config, k_params)
    idx = jax.random.randint(k_pool, (config.pool_size,), 0, images.shape[0])
    return TrainState.create(
        params,
        make_optimizer(config),
        rng,
        pool_states=model.seed_state(images[idx]),
        pool_labels=jnp.asarray(labels)[idx].astype(jnp.int32),
    )


def initial_params(config: ml_collections.ConfigDict, key: jax.Array) -> model.Params:
    """`model.init_params(key)` of `config.model.perception_filters`, or with `config.init_from`
    the params of a shipped model (by name) or of a workdir's newest checkpoint, to fine-tune
    (a narrower one widened to the config's width, the same function: `model.widen`)."""
    width = config.model.get("perception_filters", model.PERCEPTION_FILTERS)  # absent: old runs
    fresh = model.init_params(key, width)
    return params_from(config.get("init_from"), fresh, config, "init_from")


def params_from(source: str | None, fresh: model.Params, config, field: str) -> model.Params:
    """`fresh`, or where `source` (the config's `field`) names one, the params of a shipped model
    or of a workdir's newest checkpoint, checked to be a model of `config`'s kind and shapes.
    For `init_from`, a narrower model of the same kind is widened to `fresh`'s width."""
    if not source:  # also absent in configs saved before the field existed
        return fresh
    if source in pretrained.available():
        source_config, params = pretrained.load(source)
    elif checkpoint.checkpoint_dir(source).is_dir():
        source_config, params, _ = checkpoint.load_params(source)
    else:
        raise ConfigError(
            f"{field} {source!r} is neither a shipped model ({', '.join(pretrained.available())})"
            f" nor a training workdir (a folder with {checkpoint.CHECKPOINT_SUBDIR}/)."
        )
    params = jax.tree.map(jnp.asarray, params)
    shapes = lambda tree: jax.tree.map(np.shape, tree)  # noqa: E731
    same_kind = source_config.model.kind == config.model.kind
    width = model.perception_filters(params) if same_kind else None
    if same_kind and shapes(params) == shapes(model.init_params(jax.random.PRNGKey(0), width)):
        needed = model.perception_filters(fresh)
        if field == "init_from" and width < needed:
            return model.widen(params, fresh)  # the same function, in the wider model
        if width != needed:
            fix = (f"set --config.{WIDTH_FIELDS[field]}={width}" if field in WIDTH_FIELDS
                   else f"it must have the article's {model.PERCEPTION_FILTERS}")  # fmt: skip
            raise ConfigError(
                f"{field} {source!r} is a CA with {width} perception filters; this config "
                f"needs {needed}: {fix}."
            )
    if not same_kind or shapes(params) != shapes(fresh):
        raise ConfigError(
            f"{field} {source!r} holds a {source_config.model.kind!r} model with params "
            f"{shapes(params)}; this config needs {shapes(fresh)}."
        )
    return params


def sample_fresh_digits(
    config: ml_collections.ConfigDict, images: np.ndarray, labels: np.ndarray, step: int
) -> dict[str, np.ndarray]:
    """The new training digits of iteration `step`, as the loop draws them (`loop.sample_batch`)."""
    return loop.sample_batch(
        {"images": images, "labels": labels}, num_fresh_digits(config), config.seed, step
    )


# --------------------------------------------------------------------------------------------
# One training step


def assemble_batch(
    config: ml_collections.ConfigDict, state: TrainState, batch: dict[str, jax.Array], key
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """The CA states and labels to train on this iteration, and the pool slots they came from.

    With the pool: `batch_size` members sampled without replacement; the first quarter replaced by
    fresh digits at zero state, the last quarter mutated into new digits (`mutate`) or, as the
    notebook's "persistent" model, replaced by fresh digits too.
    """
    images, labels = batch["images"], batch["labels"]
    if not config.use_pool:
        return model.seed_state(images), labels, None
    quarter = config.batch_size // 4
    idx = jax.random.permutation(key, config.pool_size)[: config.batch_size]
    x = state.pool_states[idx]
    y = state.pool_labels[idx]
    # Built by concatenation: `.at[:quarter].set` on the gathered rows computed wrong values
    # when the batch is sharded over several processes (JAX 0.10, CPU).
    x = jnp.concatenate([model.seed_state(images[:quarter]), x[quarter:]])
    y = jnp.concatenate([labels[:quarter].astype(y.dtype), y[quarter:]])
    last = images[quarter:]
    last = model.mutate(x[-quarter:], last) if config.mutate else model.seed_state(last)
    x = jnp.concatenate([x[:-quarter], last])
    y = jnp.concatenate([y[:-quarter], labels[quarter:].astype(y.dtype)])
    return x, y, idx


# The range of every numeric config field this system reads (`nca.loop.check_config`).
CONFIG_RANGES = {
    "model.fire_rate": config_lib.fraction(low_open=True),
    "model.noise_std": config_lib.at_least(0),
    "model.alive_capacity": config_lib.fraction(low_open=True),
    "model.table_buckets": config_lib.at_least(1),
    "model.perception_filters": config_lib.at_least(1),
    "num_ca_steps": config_lib.at_least(1),
    "batch_size": config_lib.at_least(1),
    "pool_size": config_lib.at_least(1),
    "learning_rate": config_lib.positive(),
    "lr_boundaries": config_lib.at_least(1),
    "adam_eps": config_lib.positive(),
    "grad_norm_eps": config_lib.at_least(0),
    "data.max_train_images": config_lib.at_least(0),  # 0: all
    # an adversary's config (nca/selforg_mnist/adversarial.py)
    "adversary.fraction": config_lib.fraction(low_open=True),
    "adversary.original_filters": config_lib.at_least(1),
    "adversary.target": config_lib.Range(0, model.NUM_CLASSES - 1),
    # a defended CA's config (nca/selforg_mnist/defence.py)
    "defence.fraction": config_lib.fraction(low_open=True),
    "defence.attacked_share": config_lib.fraction(),
    "defence.redraw": config_lib.fraction(),
    "defence.random_rules": config_lib.at_least(0),
    "defence.anchor_weight": config_lib.at_least(0),
    "defence.target": config_lib.Range(0, model.NUM_CLASSES - 1),
}


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises `ConfigError` for settings the trainer cannot run, before anything is written."""
    config_lib.check_ranges(config, CONFIG_RANGES)
    config_lib.check_increasing(config, "lr_boundaries")
    choices = {
        "loss": (config.loss, tuple(losses.LOSSES)),
        "model.impl": (config.model.impl, fast.IMPLS),
    }
    if config.get("defence"):
        choices["defence.attacked_loss"] = (config.defence.get("attacked_loss", "label"),
                                            defence.ATTACKED_LOSSES)  # fmt: skip
    for field, (value, valid) in choices.items():
        if value not in valid:
            raise ConfigError(f"unknown {field} {value!r}; choose one of {', '.join(valid)}.")
    for section in ("adversary", "defence"):
        if config.get(section) and not (config.use_pool and config.mutate):
            raise ConfigError(f"a config with a {section} section trains with the pool and "
                              f"mutation (use_pool, mutate).")  # fmt: skip
    if config.get("adversary") and config.adversary.original == "":
        raise ConfigError(
            f"adversary.original is empty: name the frozen original to attack, a shipped model "
            f"({', '.join(pretrained.available())}) or a training workdir."
        )
    d = config.get("defence")
    if d and (config.get("adversary") or config.loss != "l2"):
        raise ConfigError("a defence trains the l2 loss, without an adversary section.")
    if d and d.get("anchor_weight") and not d.get("anchor"):
        raise ConfigError(
            f"defence.anchor_weight={d.anchor_weight} needs defence.anchor: name the model whose "
            f"clean dynamics the defender keeps (e.g. l2_noise)."
        )
    if config.use_pool and not 4 <= config.batch_size <= config.pool_size:
        raise ConfigError(
            f"batch_size {config.batch_size} must be at least 4 (a quarter is replaced, a quarter "
            f"mutated) and at most pool_size {config.pool_size}."
        )


def table_options(config: ml_collections.ConfigDict) -> dict:
    """How the `table` path computes (the same function either way), as its keyword arguments:
    `num_buckets`, the table sizes it compiles (`fast.table_sizes`), and `fire_compaction`;
    configs saved before these fields existed used `fast.DEFAULT_BUCKETS` and no compaction."""
    return {
        "num_buckets": config_lib.field_value(config, "model.table_buckets", fast.DEFAULT_BUCKETS),
        "fire_compaction": config_lib.field_value(config, "model.fire_compaction", False),
    }


def uses_per_device_rollout(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None):
    """Whether each device rolls out its own slice of the batch (`fast.per_device`): the sparse
    paths on several devices, where the batch divides over them and the masks need not be
    `conv`'s (`exact_randomness` draws over the whole batch's grid)."""
    m = config.model
    return (
        mesh is not None
        and mesh.size > 1
        and config.batch_size % mesh.size == 0
        and fast.resolve_impl(m.impl) in ("alive", "table")
        and not m.exact_randomness
    )


def make_train_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None):
    """`train_step(state, batch, key) -> (state, metrics)`: pure, to be jitted once by the caller.

    batch: `sample_fresh_digits` output. metrics: `train/loss`, `train/grad_norm` (global norm
    before normalisation), `train/lr` (the rate this step used).
    """
    optimizer = make_optimizer(config)
    schedule = learning_rate_schedule(config)
    loss_fn = losses.LOSSES[config.loss]
    m = config.model
    validate_config(config)
    options = table_options(config)
    rollout = fast.get_rollout(m.impl, m.alive_capacity, m.exact_randomness, **options)
    if uses_per_device_rollout(config, mesh):
        rollout = fast.per_device(rollout, mesh)

    def train_step(state: TrainState, batch: dict[str, jax.Array], key: jax.Array):
        k_pool, k_rollout = jax.random.split(key)
        x0, labels, idx = assemble_batch(config, state, batch, k_pool)
        if mesh is not None:
            x0 = jax.lax.with_sharding_constraint(x0, NamedSharding(mesh, P("data")))

        def objective(params):
            x, _ = rollout(params, x0, k_rollout, config.num_ca_steps, m.fire_rate, m.noise_std)
            return loss_fn(x, labels), x

        new_state, x, metrics = loop.gradient_step(state, objective, optimizer, schedule)
        if idx is not None:
            new_state = new_state.replace(
                pool_states=state.pool_states.at[idx].set(x),
                pool_labels=state.pool_labels.at[idx].set(labels),
            )
        return new_state, metrics

    return train_step


# --------------------------------------------------------------------------------------------
# For the core loop (nca/loop.py)


def load_training_data(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
    """The training digits, grey in [0, 1]: `(N, 28, 28)` images and `(N,)` labels."""
    return data.load_training_digits(config.data.mnist_dir, config.data.max_train_images)


def make_trainer(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> loop.Trainer:
    """The self-classifying MNIST CA: params replicated, the pool sharded along `data`. A
    config with an `adversary` section trains an adversary instead (`adversarial.make_trainer`),
    one with a `defence` section a defended CA (`defence.make_trainer`)."""
    validate_config(config)
    if config.get("adversary"):
        from nca.selforg_mnist import adversarial

        return adversarial.make_trainer(config, mesh)
    if config.get("defence"):
        return defence.make_trainer(config, mesh)
    images, labels = load_training_data(config)
    init = init_train_state(config, images, labels)
    return pooled_trainer(config, init, make_train_step(config, mesh), images, labels)


def pooled_trainer(config, init, train_step, images, labels) -> loop.Trainer:
    """The `loop.Trainer` of a train state with pool fields (`pool_*`, sharded along `data`) that
    draws this system's fresh digits each iteration: the CA's, an adversary's, a defence's."""
    return loop.Trainer(
        init_state=init,
        train_step=train_step,
        train_data={"images": images, "labels": labels},
        batch_size=num_fresh_digits(config),
        sharded_fields=tuple(
            f.name for f in dataclasses.fields(init) if f.name.startswith("pool_")
        ),
    )
