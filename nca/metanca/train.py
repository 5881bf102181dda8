"""Meta-training of the MetaNCA rule: backpropagation through many rule steps.

Each iteration, for every training architecture: `nets_per_arch` start states (from that
architecture's sample pool with probability `pool_prob`, else a fresh Flax-default init; pooled
ones optionally zero-out damaged with probability `damage_prob`), `num_rule_steps` rule steps with
`lax.scan` and gradient checkpointing, the task net's cross-entropy on a batch after the unroll.
The loss is averaged over nets, then over architectures (weighted by `arch_weights`, one per
training architecture, where it is set; equal otherwise); its gradient reaches the rule only (start
states are constants), is clipped to global norm `grad_clip` and applied with Adam. The final
states go back into the pool (a ring buffer per architecture, part of the train state, so
checkpoints and resume include it).

Curriculum: the number of active rule steps grows linearly from 1 to `num_rule_steps` over the
first `curriculum_steps` iterations. The scan always has the static length `num_rule_steps`;
steps past the active count are masked to no-ops. This keeps one compiled train step (a scan
length per curriculum stage would mean up to ten compiles of the meta-gradient) at the price of
computing masked steps early in training, a small share of a run since the ramp is short.

Spike discard: an iteration whose loss exceeds `spike_factor` times the running average of the
loss (an EMA of the accepted iterations) keeps the old rule, optimiser state and pool.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nca import checkpoint, loop
from nca import config as config_lib
from nca.config import ConfigError
from nca.metanca import data as metanca_data
from nca.metanca import model

# Besides the core's bookkeeping fields: where the data is, and init_from (it only decides a
# fresh run's rule).
RESUMABLE_CHANGES = frozenset({"data.mnist_dir", "init_from"})
# Fields added after runs were saved, with the value that means what their absence meant (None:
# any value, the field is read only by conv layers, which no older run has).
ADDED_FIELDS = {"model.conv_kernel": None, "model.conv_stride": None,
                "model.layer_kind_input": False, "init_from": "", "arch_weights": ()}  # fmt: skip


def resumable(field: str, old, new, step: int) -> bool:
    return (checkpoint.resumable(field, old, new, step) or field in RESUMABLE_CHANGES
            or checkpoint.added_field(ADDED_FIELDS, field, old, new))  # fmt: skip


@flax.struct.dataclass
class TrainState(loop.TrainState):
    """params: the rule (`model.RuleParams`)."""

    pools: tuple  # per training architecture: a NetState with a leading (pool_size,) axis
    loss_avg: jax.Array  # () float32: running average of accepted losses (spike discard)


def archs(config_archs) -> tuple[tuple[int | str, ...], ...]:
    """Config architectures (tuples, or lists after a JSON round trip) as tuples of ints and
    conv entries (`"c8"`, `model.is_conv`)."""
    return tuple(tuple(n if model.is_conv(n) else int(n) for n in a) for a in config_archs)


def all_archs(config) -> tuple[tuple[int | str, ...], ...]:
    """The trained architectures, then the held-out ones (`archs` of each)."""
    return archs(config.train_archs) + archs(config.test_archs)


def arch_name(arch) -> str:
    return "-".join(str(n) for n in arch)


def net_spec(config: ml_collections.ConfigDict, arch) -> tuple[model.LayerSpec, ...]:
    """The layers of `arch` under the config's input grid and conv shape (`model.net_spec`);
    a bad architecture is a `ConfigError`."""
    m = config.model
    try:
        return model.net_spec(
            arch, tuple(m.get("input_grid", ())), m.get("conv_kernel", 3), m.get("conv_stride", 2)
        )
    except model.ArchError as e:
        raise ConfigError(f"{e} (config {config.name})") from None


def step_kwargs(config: ml_collections.ConfigDict, arch) -> dict:
    """The rule-step options of a config for nets of `arch`, for `model.rule_step` /
    `model.rollout`."""
    m = config.model
    return {
        "fire_rate": m.fire_rate,
        "fan_in_scaling": m.fan_in_scaling,
        "same_matrix_only": m.same_matrix_only,
        "spec": net_spec(config, arch),
        "layer_kind_input": m.get("layer_kind_input", False),
    }


def init_rule(config: ml_collections.ConfigDict, key: jax.Array) -> model.RuleParams:
    m = config.model
    return model.init_rule(
        key, 3 * m.code_dims, tuple(m.rule_hidden), m.get("layer_kind_input", False)
    )


def init_net(config: ml_collections.ConfigDict, arch, key: jax.Array) -> model.NetState:
    """A fresh task net of `arch` with the config's position codes."""
    return model.init_net(
        key,
        arch,
        config.model.code_dims,
        tuple(config.model.get("input_grid", ())),
        net_spec(config, arch),
    )


def init_nets(config: ml_collections.ConfigDict, arch, keys: jax.Array) -> model.NetState:
    """Fresh task nets, one per key: a NetState with a leading `(len(keys),)` axis."""
    return jax.vmap(lambda k: init_net(config, arch, k))(keys)


def curriculum(config: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    """Active rule steps at iteration `step`: 1 -> num_rule_steps over `curriculum_steps`."""
    n = config.num_rule_steps
    if config.curriculum_steps <= 0:
        return jnp.asarray(n)
    return jnp.minimum(n, 1 + (step * n) // config.curriculum_steps)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip), optax.adam(config.learning_rate)
    )


def initial_rule(config: ml_collections.ConfigDict, key: jax.Array) -> model.RuleParams:
    """A fresh rule, or with `config.init_from` the newest rule of that training workdir, to
    train further on other architectures or settings (a fresh optimiser, pool and step 0)."""
    fresh = init_rule(config, key)
    source = config.get("init_from")  # absent in configs saved before it existed
    if not source:
        return fresh
    if not checkpoint.checkpoint_dir(source).is_dir():
        raise ConfigError(
            f"init_from {source!r} is not a training workdir (a folder with "
            f"{checkpoint.CHECKPOINT_SUBDIR}/); restore a bundle into one first: python -m "
            f"experiments.bundle --restore=BUNDLE --workdir={source}"
        )
    source_config, rule, _ = checkpoint.load_params(source)
    shapes = lambda tree: jax.tree.map(np.shape, tree)  # noqa: E731
    if source_config.model.kind != config.model.kind or shapes(rule) != shapes(fresh):
        raise ConfigError(
            f"init_from {source!r} holds a {source_config.model.kind!r} model with params "
            f"{shapes(rule)}; this config's rule needs {shapes(fresh)} (same model.code_dims, "
            f"model.rule_hidden and model.layer_kind_input)."
        )
    return jax.tree.map(jnp.asarray, rule)


def init_train_state(config: ml_collections.ConfigDict) -> TrainState:
    rng, k_rule, k_pool = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    params = initial_rule(config, k_rule)
    pool_keys = jax.random.split(k_pool, len(config.train_archs))
    pools = tuple(
        init_nets(config, arch, jax.random.split(k, config.pool_size))
        for arch, k in zip(archs(config.train_archs), pool_keys, strict=True)
    )
    return TrainState.create(
        params, make_optimizer(config), rng, pools=pools, loss_avg=jnp.zeros((), jnp.float32)
    )


@dataclasses.dataclass(frozen=True)
class LayerSizes(config_lib.Range):
    """Architecture entries: widths >= 1, and conv layers `"cN"` with N >= 1 maps."""

    low: float | None = 1

    def accepts(self, entry) -> bool:
        if model.is_conv(entry):
            entry = int(entry[1:]) if entry[1:].isdigit() else 0
        return super().accepts(entry)

    def __str__(self) -> str:
        return ">= 1 (a width, or 'cN' for a conv to N >= 1 maps)"


# The range of every numeric config field this system reads (`nca.loop.check_config`).
CONFIG_RANGES = {
    "model.code_dims": config_lib.at_least(2),
    "model.rule_hidden": config_lib.at_least(1),
    "model.input_grid": config_lib.at_least(1),
    "model.conv_kernel": config_lib.at_least(1),
    "model.conv_stride": config_lib.at_least(1),
    "model.fire_rate": config_lib.fraction(low_open=True),
    "train_archs": LayerSizes(),
    "test_archs": LayerSizes(),
    "num_rule_steps": config_lib.at_least(1),
    "curriculum_steps": config_lib.at_least(0),  # 0: all rule steps from the start
    "nets_per_arch": config_lib.at_least(1),
    "arch_weights": config_lib.positive(),
    "batch_size": config_lib.at_least(0),  # 0: the whole training split
    "pool_size": config_lib.at_least(1),
    "pool_prob": config_lib.fraction(),
    "damage_prob": config_lib.fraction(),
    "damage_fraction": config_lib.fraction(),
    "learning_rate": config_lib.positive(),
    "grad_clip": config_lib.positive(),
    "spike_factor": config_lib.positive(),
    "loss_avg_decay": config_lib.fraction(high_open=True),
    "data.split_seed": config_lib.at_least(0),
    "data.max_images": config_lib.at_least(0),  # 0: all
}


def validate_config(config: ml_collections.ConfigDict) -> None:
    config_lib.check_ranges(config, CONFIG_RANGES)
    if config.data.task not in ("iris", "mnist"):
        raise ConfigError(f"unknown data.task {config.data.task!r}; choose iris or mnist.")
    if not config.train_archs:
        raise ConfigError("train_archs is empty.")
    for arch in all_archs(config):
        net_spec(config, arch)
    weights, n = tuple(config.get("arch_weights", ())), len(config.train_archs)
    if weights and len(weights) != n:
        raise ConfigError(
            f"arch_weights {weights} must be {n} numbers, one per training architecture "
            "(in train_archs' order), or () for equal weights."
        )
    if config.use_pool and config.pool_size < config.nets_per_arch:
        raise ConfigError(f"pool_size {config.pool_size} < nets_per_arch {config.nets_per_arch}.")


def start_states(config, arch, pool, key, step):
    """`nets_per_arch` start states for `arch`: pooled (probability `pool_prob`, possibly
    damaged) or fresh. Returns the states and the pool slots the final states go to."""
    k_slot, k_use, k_fresh, k_dmg, k_dmg_use = jax.random.split(key, 5)
    n = config.nets_per_arch
    fresh = init_nets(config, arch, jax.random.split(k_fresh, n))
    if not config.use_pool:
        return fresh, None
    slots = jax.random.randint(k_slot, (n,), 0, config.pool_size)
    pooled = jax.tree.map(lambda p: p[slots], pool)
    if config.damage_prob > 0:
        damaged = jax.vmap(lambda s, k: model.damage(s, k, config.damage_fraction))(
            pooled, jax.random.split(k_dmg, n)
        )
        hit = jax.random.bernoulli(k_dmg_use, config.damage_prob, (n,))
        pooled = _select(hit, damaged, pooled)
    use_pool = jax.random.bernoulli(k_use, config.pool_prob, (n,))
    write_slots = (step * n + jnp.arange(n)) % config.pool_size  # ring buffer
    return _select(use_pool, pooled, fresh), write_slots


def _select(mask: jax.Array, a, b):
    """Per-net choice between two batched NetStates, `mask: (n,) bool`."""
    return jax.tree.map(
        lambda x, y: jnp.where(mask.reshape((-1,) + (1,) * (x.ndim - 1)), x, y), a, b
    )


def make_train_step(config: ml_collections.ConfigDict):
    """`train_step(state, batch, key) -> (state, metrics)`, pure; batch: `{"x": (B, n_0),
    "y": (B,)}`. metrics: `train/loss`, `train/accuracy` (task net after the unroll, on the
    batch), per-architecture losses, `train/rule_steps`, `train/discarded`, `train/grad_norm`,
    `train/lr`."""
    optimizer = make_optimizer(config)
    arch_list = archs(config.train_archs)
    weights = config.get("arch_weights") or (1.0,) * len(arch_list)  # absent: old runs
    weights = jnp.asarray(weights, jnp.float32)

    def train_step(state: TrainState, batch, key):
        n_active = curriculum(config, state.step)
        keys = jax.random.split(key, 2 * len(arch_list))
        starts, slots = zip(
            *[
                start_states(config, arch, pool, k, state.step)
                for arch, pool, k in zip(
                    arch_list, state.pools, keys[: len(arch_list)], strict=True
                )
            ],
            strict=True,
        )

        def objective(rule):
            def grow_and_score(x0, k, arch):
                kwargs = step_kwargs(config, arch)
                final, _ = model.rollout(
                    rule, x0, k, config.num_rule_steps, active_steps=n_active, remat=True, **kwargs
                )
                logits = model.forward(final, batch["x"], kwargs["spec"])
                return model.cross_entropy(logits, batch["y"]), (
                    final,
                    model.accuracy(logits, batch["y"]),
                )

            per_arch = []
            for arch, x0, k in zip(arch_list, starts, keys[len(arch_list) :], strict=True):
                net_keys = jax.random.split(k, config.nets_per_arch)
                grow = functools.partial(grow_and_score, arch=arch)
                losses, (finals, accs) = jax.vmap(grow)(x0, net_keys)
                per_arch.append((losses.mean(), finals, accs.mean()))
            loss = jnp.sum(weights * jnp.stack([p[0] for p in per_arch])) / weights.sum()
            return loss, per_arch

        stepped, per_arch, metrics = loop.gradient_step(state, objective, optimizer)
        loss = metrics["train/loss"]
        spike = (state.step > 0) & (loss > config.spike_factor * state.loss_avg)
        keep = lambda old, new: jax.tree.map(lambda a, b: jnp.where(spike, a, b), old, new)  # noqa: E731
        pools = state.pools
        if config.use_pool:
            pools = tuple(
                keep(pool, jax.tree.map(lambda p, f, s=s: p.at[s].set(f), pool, p_arch[1]))
                for pool, p_arch, s in zip(state.pools, per_arch, slots, strict=True)
            )
        d = config.loss_avg_decay
        loss_avg = jnp.where(
            state.step == 0,
            loss,
            jnp.where(spike, state.loss_avg, d * state.loss_avg + (1 - d) * loss),
        )
        new_state = state.replace(
            step=state.step + 1,
            params=keep(state.params, stepped.params),
            opt_state=keep(state.opt_state, stepped.opt_state),
            pools=pools,
            loss_avg=loss_avg,
        )
        metrics.update({
            "train/accuracy": jnp.mean(jnp.stack([p[2] for p in per_arch])),
            "train/rule_steps": n_active,
            "train/discarded": spike.astype(jnp.float32),
            "train/lr": jnp.asarray(config.learning_rate, jnp.float32),  # constant
        })  # fmt: skip
        for arch, p in zip(arch_list, per_arch, strict=True):
            metrics[f"train/loss_{arch_name(arch)}"] = p[0]
        return new_state, metrics

    return train_step


def make_trainer(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> loop.Trainer:
    """MetaNCA meta-training. Everything is replicated over the mesh (the rule is tiny and the
    per-architecture pools are small); the batch too. `batch_size` 0 or at least the training
    split: the whole split every iteration."""
    validate_config(config)
    task = metanca_data.load_task(config)
    n = len(task["train_x"])
    return loop.Trainer(
        init_state=init_train_state(config),
        train_step=make_train_step(config),
        train_data={"x": task["train_x"], "y": task["train_y"]},
        batch_size=config.batch_size if config.batch_size < n else 0,
    )
