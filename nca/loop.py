"""The training loop every system shares: jit, shardings, data, resume, checkpoints, metrics.

A system is a subpackage `nca.<kind>` (`config.model.kind`; a kind with a dot names a package
outside `nca`) whose `train` module has `make_trainer(config, mesh) -> Trainer`: the fresh train
state, a pure `train_step(state, batch, key) -> (state, metrics)` and the training set; beside it
`CONFIG_RANGES` (numeric field -> `nca.config.Range`) and `validate_config(config)` (fields that
must fit each other), which `check_config` applies with the core's `CORE_RANGES` before anything
is compiled or written, and `resumable(field, old, new, step)` (which config fields may change on
resume; see `resumable_rule`). The core keeps no list of
systems: adding one adds a folder.
`train` does the rest the same way for all of them:

- jits the step once with shardings (params replicated; the fields and batch a system names
  sharded along the 1-D `("data",)` mesh), donating the old state;
- iteration `t` uses `fold_in(state.rng, t)` and the batch `sample_batch` draws with a generator
  seeded by `(config.seed, t)`, so a resumed run computes exactly what an uninterrupted one would;
- resumes from the newest readable checkpoint of `workdir` (see `nca.checkpoint.restore_latest`);
- writes `metrics.jsonl` and TensorBoard events (`nca.tensorboard`) every `log_every`
  iterations (rows and events after the resumed checkpoint are trimmed first), with the system's
  validation metrics (`Trainer.validate`) every `validate_every` and at the end; checkpoints every
  `checkpoint_every`, at the end and on SIGINT / SIGTERM;
- stops with `TrainingError` on a non-finite metric or a failed save, naming the intact checkpoint;
- holds the workdir's lock throughout.

Multi-process (several hosts, after `jax.distributed.initialize()`): every process runs the same
loop on the global mesh and takes part in Orbax saves; process 0 alone holds the lock and writes
`metrics.jsonl`, the TensorBoard events, `config.json`, `config_changes.jsonl` and
`sessions.jsonl`. The workdir
must then be on storage every host sees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import pkgutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from nca import checkpoint, tensorboard
from nca import workdir as workdir_lib
from nca.config import CORE_RANGES, ConfigError, check_ranges, field_value, set_field


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, failed save); the message says why."""


@flax.struct.dataclass
class TrainState:
    """The fields every system's train state has; a system subclasses it to add its own (pools,
    running averages), which a checkpoint then holds beside these, under their names."""

    step: jax.Array  # () int32: iterations done
    params: Any
    opt_state: optax.OptState
    rng: jax.Array  # (2,) uint32: base key; iteration t uses fold_in(rng, t)

    @classmethod
    def create(cls, params, optimizer: optax.GradientTransformation, rng: jax.Array, **fields):
        """Step 0, the optimiser's initial state for `params`, and the subclass's `fields`."""
        return cls(step=jnp.zeros((), jnp.int32), params=params,
                   opt_state=optimizer.init(params), rng=rng, **fields)  # fmt: skip

    def apply_gradients(self, grads, optimizer: optax.GradientTransformation):
        """One optimiser step on `params`; `step` + 1."""
        updates, opt_state = optimizer.update(grads, self.opt_state, self.params)
        return self.replace(step=self.step + 1, opt_state=opt_state,
                            params=optax.apply_updates(self.params, updates))  # fmt: skip


def gradient_step(
    state: TrainState,
    objective: Callable,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule | None = None,
):
    """The optimiser step every system takes: the gradient of `objective(params) -> (loss, aux)`
    and one `optimizer` step (`state.apply_gradients`). Returns `(new state, aux, metrics)`,
    metrics: `train/loss`, `train/grad_norm` (global, before any clipping or normalisation) and,
    given the learning-rate `schedule`, `train/lr` (the rate this step used)."""
    (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    metrics = step_metrics(state, loss, grads, schedule)
    return state.apply_gradients(grads, optimizer), aux, metrics


def step_metrics(state: TrainState, loss, grads, schedule: optax.Schedule | None = None) -> dict:
    """`gradient_step`'s metrics for a step from `state` with `loss` and its `grads`, for a
    trainer that computes its gradients itself."""
    metrics = {"train/loss": loss, "train/grad_norm": optax.tree.norm(grads)}
    if schedule is not None:
        metrics["train/lr"] = schedule(state.step)
    return metrics


@dataclasses.dataclass(frozen=True)
class Trainer:
    """What a system's `make_trainer(config, mesh)` gives the loop.

    init_state: the fresh `TrainState` (on the host or one device), also the structure a
        checkpoint is restored into.
    train_step: pure `(state, batch, key) -> (state, metrics)`; the loop jits it. metrics:
        scalars named `train/...` (`train/loss` is shown on the progress bar).
    train_data: the training set, a dict of arrays with one row per example.
    batch_size: rows drawn per iteration (see `sample_batch`); 0: the whole set every iteration.
    sharded_fields: `TrainState` fields (pools) sharded along `data` by their leading axis, where
        it divides over the devices; everything else is replicated.
    shard_batch: shard the batch along `data` too (where `batch_size` divides).
    validate: `(state) -> {"val/...": scalar}` on held-out data, or None; the loop calls it
        every `config.validate_every` iterations (a multiple of `log_every`) and at the end, and
        logs its metrics in that iteration's row.
    """

    init_state: TrainState
    train_step: Callable
    train_data: dict[str, np.ndarray]
    batch_size: int
    sharded_fields: tuple[str, ...] = ()
    shard_batch: bool = False
    validate: Callable[[TrainState], dict[str, Any]] | None = None


def sample_batch(train_data: dict[str, np.ndarray], batch_size: int, seed: int, step: int):
    """Iteration `step`'s batch: `batch_size` rows drawn with replacement by a generator seeded
    by `(seed, step)`, so a resumed run draws exactly what an uninterrupted one would; the whole
    set when `batch_size` is 0."""
    if not batch_size:
        return train_data
    n = len(next(iter(train_data.values())))
    idx = np.random.default_rng([seed, step]).integers(0, n, size=batch_size)
    return {k: v[idx] for k, v in train_data.items()}


def compile_trainer(trainer: Trainer, mesh: jax.sharding.Mesh) -> tuple[TrainState, Callable]:
    """The initial state placed on `mesh` and the train step jitted with its shardings."""
    replicated = NamedSharding(mesh, P())
    data_sharded = NamedSharding(mesh, P("data"))

    def along_data(x):
        return data_sharded if np.shape(x)[0] % mesh.size == 0 else replicated

    state = trainer.init_state
    shardings = jax.tree.map(lambda _: replicated, state)
    shardings = shardings.replace(**{
        f: jax.tree.map(along_data, getattr(state, f)) for f in trainer.sharded_fields
    })  # fmt: skip
    batch_sharding = (
        data_sharded
        if trainer.shard_batch and trainer.batch_size and trainer.batch_size % mesh.size == 0
        else replicated
    )
    step = jax.jit(
        trainer.train_step,
        in_shardings=(shardings, batch_sharding, replicated),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )
    return jax.device_put(state, shardings), step


def system_module(kind: str, name: str = "train"):
    """`nca.<kind>.<name>` (or `<kind>.<name>` for a dotted kind): a system's module, found by
    convention."""
    package = kind if "." in kind else f"{__package__}.{kind}"
    try:
        return importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as e:
        if not (e.name and f"{package}.{name}".startswith(e.name)):
            raise  # the system exists but imports something missing
        raise ConfigError(
            f"unknown model.kind {kind!r}: no module {package}.{name}. Systems here: "
            f"{', '.join(available_systems())}."
        ) from None


def resumable_rule(config: ml_collections.ConfigDict) -> Callable[[str, Any, Any, int], bool]:
    """`(field, old, new, step) -> bool`: whether a config field may change when a run resumes at
    `step`. The system's own `resumable` (in `nca.<kind>.train`), else the core's bookkeeping
    fields only (`checkpoint.resumable`). Resume and `nca.bundle` both apply it."""
    return getattr(system_module(config.model.kind), "resumable", checkpoint.resumable)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises `ConfigError` for a field outside its range (the core's `CORE_RANGES` and the
    system's `CONFIG_RANGES`, in `nca.<kind>.train`) or for fields that do not fit each other
    (the system's `validate_config`), before anything is compiled or written."""
    system = system_module(config.model.kind)
    check_ranges(config, {**CORE_RANGES, **getattr(system, "CONFIG_RANGES", {})})
    validate = getattr(system, "validate_config", None)
    if validate is not None:
        validate(config)


def available_systems() -> list[str]:
    """The kinds of the systems inside `nca`: its subpackages that have a `train` module."""
    import nca

    return sorted(
        m.name for m in pkgutil.iter_modules(nca.__path__)
        if m.ispkg and (Path(m.module_finder.path) / m.name / "train.py").is_file()
    )  # fmt: skip


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    max_iterations: int | None = None,
    progress: bool = True,
) -> TrainState:
    """Trains the system named by `config.model.kind` (`nca.<kind>.train.make_trainer`) to
    `config.num_train_steps`, resuming from the newest readable checkpoint. Returns the final
    train state."""
    check_config(config)
    make_trainer = system_module(config.model.kind).make_trainer
    return train(config, workdir, make_trainer, max_iterations=max_iterations, progress=progress)


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D `("data",)` mesh over the first `num_devices` devices (all by default)."""
    devices = jax.devices()[: num_devices or len(jax.devices())]
    return jax.sharding.Mesh(np.asarray(devices), ("data",))


def train(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    make_trainer: Callable[[ml_collections.ConfigDict, jax.sharding.Mesh], Trainer],
    *,
    max_iterations: int | None = None,
    progress: bool = True,
) -> TrainState:
    """Trains `make_trainer(config, mesh)`'s system to `config.num_train_steps`, resuming from
    the newest readable checkpoint.

    The trainer is built before anything is written, so a config it rejects (`ConfigError`) or
    missing data leaves no workdir behind. `max_iterations` stops this call early (after that
    many iterations), as a preemption would. Config fields used: seed, num_train_steps,
    log_every, checkpoint_every, max_checkpoints_to_keep, keep_every (optional: checkpoints at its
    multiples survive retention), name. Returns the final train state.
    """
    workdir = Path(workdir)
    check_ranges(config, CORE_RANGES)
    if config.get("validate_every") and config.validate_every % config.log_every:
        raise ConfigError(
            f"config fields validate_every={config.validate_every} and log_every="
            f"{config.log_every} do not fit: validate_every must be a multiple of log_every."
        )
    mesh = make_mesh()
    trainer = make_trainer(_trainer_config(config, workdir), mesh)
    primary = jax.process_index() == 0
    if primary:
        workdir_lib.prepare(workdir)
    lock = workdir_lib.lock(workdir, log=tqdm.write) if primary else contextlib.nullcontext()
    with lock:
        return _train(config, workdir, trainer, mesh, max_iterations, progress and primary)


# Config fields that only give a fresh run its params (a shipped model or another workdir); a
# run with checkpoints has them in its state.
FRESH_RUN_SOURCES = ("init_from", "defence.adversary_init", "adversary.original")


def without_fresh_run_sources(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with its `FRESH_RUN_SOURCES` set to None: the config that builds the
    train state of a run whose params come from its own checkpoint or bundle, so the shipped
    models or workdirs they name need not exist any more."""
    built = config.copy_and_resolve_references()
    for field in FRESH_RUN_SOURCES:
        if field_value(built, field):
            set_field(built, field, None)
    return built


def _trainer_config(config: ml_collections.ConfigDict, workdir: Path):
    """The config the trainer is built from: without its `FRESH_RUN_SOURCES` once the run has
    checkpoints (`without_fresh_run_sources`). With checkpoints, restoring either succeeds or
    raises; it never falls back to the fresh state."""
    if not checkpoint.all_steps(workdir):
        return config
    return without_fresh_run_sources(config)


class _StopRequest:
    """Turns SIGINT / SIGTERM into a flag the loop checks after each iteration."""

    def __init__(self):
        self.signal_name = None

    def __enter__(self):
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None:  # a second signal: give up at once
            signal.signal(signum, self._previous[signum])
            signal.raise_signal(signum)
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _train(config, workdir: Path, trainer: Trainer, mesh, max_iterations: int | None,
           progress: bool):  # fmt: skip
    primary = jax.process_index() == 0
    state, train_step = compile_trainer(trainer, mesh)
    # First, on every process: creating the manager makes the checkpoint folder (and syncs the
    # processes), so all of them then see the same checkpoints.
    mngr = checkpoint.manager(workdir, config.max_checkpoints_to_keep,
                              keep_period=config.get("keep_every") or None)  # fmt: skip
    start, last_saved = 0, None
    restored = checkpoint.restore_latest(
        workdir, state, config, log=tqdm.write, resumable=resumable_rule(config)
    )
    mngr.reload()  # unreadable checkpoints may have been moved away
    if restored is not None:
        state, start, changes = restored
        last_saved = start
        tqdm.write(f"Resuming from checkpoint {start} in {checkpoint.checkpoint_dir(workdir)}")
        if changes and primary:
            workdir_lib.record_config_changes(workdir, start, changes)
    if primary:
        devices = f"{mesh.size} x {mesh.devices.flat[0].device_kind}"
        workdir_lib.record_session(workdir, start, devices=devices, jax=jax.__version__)
        workdir_lib.trim_metrics(workdir, start)
        tensorboard.trim(workdir, start)
        checkpoint.write_config_json(workdir, config)

    end = config.num_train_steps
    if max_iterations is not None:
        end = min(end, start + max_iterations)
    validate_every = config.get("validate_every", 0) if trainer.validate else 0

    def save(step: int, metrics: dict[str, Any]) -> None:
        nonlocal last_saved
        _check_finite(metrics, step, last_saved, workdir)
        try:
            checkpoint.save(mngr, step, state, config)
        except Exception as e:  # noqa: BLE001 - disk full, quota, I/O errors from Orbax
            kept = f"checkpoint {last_saved} is intact" if last_saved is not None else ""
            raise TrainingError(
                f"could not save checkpoint {step} in {checkpoint.checkpoint_dir(workdir)} "
                f"({type(e).__name__}: {e}); {kept}. Free space and rerun to resume."
            ) from e
        last_saved = step

    bar = tqdm(total=end, initial=start, desc=config.name or "train", disable=not progress,
               unit="it", dynamic_ncols=True)  # fmt: skip
    t_last, step_last = time.perf_counter(), start
    metrics = None
    try:
        metrics_file = workdir / workdir_lib.METRICS_FILE if primary else os.devnull
        events = tensorboard.writer(workdir, start, enabled=primary)
        with _StopRequest() as stop, open(metrics_file, "a") as log, events as tb:
            for step in range(start, end):
                batch = sample_batch(trainer.train_data, trainer.batch_size, config.seed, step)
                key = jax.random.fold_in(state.rng, step)
                state, metrics = train_step(state, batch, key)
                bar.update()
                done = step + 1
                if done % config.log_every == 0 or done == end:
                    metrics = jax.device_get(metrics)
                    _check_finite(metrics, done, last_saved, workdir)
                    now = time.perf_counter()
                    row = {
                        "step": done,
                        **{k: float(v) for k, v in metrics.items()},
                        "train/iterations_per_sec": (done - step_last) / (now - t_last),
                    }
                    if validate_every and (
                        done % validate_every == 0 or done == config.num_train_steps
                    ):
                        val = jax.device_get(trainer.validate(state))
                        _check_finite(val, done, last_saved, workdir)
                        row.update({k: float(v) for k, v in val.items()})
                        now = time.perf_counter()  # the rate counts training only
                    t_last, step_last = now, done
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    tb.write(done, {k: v for k, v in row.items() if k != "step"})
                    if "train/loss" in row:
                        bar.set_postfix(loss=f"{row['train/loss']:.4g}")
                if done % config.checkpoint_every == 0 or done == end or stop.signal_name:
                    save(done, jax.device_get(metrics))
                if stop.signal_name:
                    mngr.wait_until_finished()
                    bar.close()
                    tqdm.write(
                        f"{stop.signal_name} received: saved checkpoint {done} in "
                        f"{checkpoint.checkpoint_dir(workdir)}; rerun the same command to resume."
                    )
                    break
    finally:
        bar.close()
        mngr.wait_until_finished()  # an in-flight save completes before the lock is released
        mngr.close()
    return state


def _check_finite(metrics, step: int, last_saved: int | None, workdir: Path) -> None:
    bad = {k: float(v) for k, v in metrics.items() if not np.isfinite(v)}
    if bad:
        kept = (
            f"the last good checkpoint, step {last_saved}, is left intact in "
            f"{checkpoint.checkpoint_dir(workdir)}"
            if last_saved is not None
            else "no checkpoint was saved"
        )
        raise TrainingError(f"non-finite {bad} at iteration {step}; stopping: {kept}.")
