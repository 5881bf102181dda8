"""The training loop every system shares: resume, checkpoints, metrics, progress, signals.

A system (the self-classifying CA in `nca/train.py`, MetaNCA, the hybrid restorer) supplies a
`Trainer`: its initial state, a jitted `train_step(state, batch, key) -> (state, metrics)` and a
host function giving iteration `t`'s batch. `train` does the rest the same way for all of them:

- resumes from the newest readable checkpoint of `workdir` (see `nca.checkpoint.restore_latest`);
- iteration `t` uses `fold_in(state.rng, t)` and `next_batch(t)`, so a resumed run computes
  exactly what an uninterrupted one would;
- writes `metrics.jsonl` every `log_every` iterations (rows after the resumed checkpoint are
  trimmed first), checkpoints every `checkpoint_every`, at the end and on SIGINT / SIGTERM;
- stops with `TrainingError` on a non-finite metric or a failed save, naming the intact checkpoint;
- holds the workdir's lock throughout.

Multi-process (several hosts, after `jax.distributed.initialize()`): every process runs the same
loop on the global mesh and takes part in Orbax saves; process 0 alone holds the lock and writes
`metrics.jsonl`, `config.json` and `config_changes.jsonl`. The workdir must then be on storage
every host sees.

`train_and_evaluate(config, workdir)` picks the system from `config.model.kind`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from nca import checkpoint
from nca import workdir as workdir_lib
from nca.config import ConfigError

# config.model.kind -> the module whose `train_and_evaluate(config, workdir, *, max_iterations,
# progress)` trains it.
SYSTEMS = {
    "selforg_mnist": "nca.train",
    "metanca": "nca.metanca.train",
    "hybrid": "nca.hybrid.train",
}


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, failed save); the message says why."""


@dataclasses.dataclass(frozen=True)
class Trainer:
    """What `train` needs from a system.

    init_state: the fresh train state (a pytree with `rng`, placed on devices), also the target
        structure a checkpoint is restored into.
    train_step: jitted `(state, batch, key) -> (state, metrics)`; metrics: scalars named
        `train/...` (`train/loss` is shown on the progress bar).
    next_batch: `step -> batch`, deterministic in `step` (host arrays).
    """

    init_state: Any
    train_step: Callable
    next_batch: Callable[[int], Any]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path, **kwargs):
    """Trains the system named by `config.model.kind` (see `SYSTEMS`)."""
    kind = config.model.kind
    if kind not in SYSTEMS:
        raise ConfigError(f"unknown model.kind {kind!r}; choose one of {', '.join(SYSTEMS)}.")
    return importlib.import_module(SYSTEMS[kind]).train_and_evaluate(config, workdir, **kwargs)


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
):
    """Trains to `config.num_train_steps`, resuming from the newest readable checkpoint.

    `max_iterations` stops this call early (after that many iterations), as a preemption would.
    Config fields used: num_train_steps, log_every, checkpoint_every, max_checkpoints_to_keep,
    keep_every (optional: checkpoints at its multiples survive retention), name. Returns the final
    train state.
    """
    workdir = Path(workdir)
    primary = jax.process_index() == 0
    if primary:
        workdir_lib.prepare(workdir)
    lock = workdir_lib.lock(workdir, log=tqdm.write) if primary else contextlib.nullcontext()
    with lock:
        return _train(config, workdir, make_trainer(config, make_mesh()), max_iterations,
                      progress and primary)  # fmt: skip


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


def _train(config, workdir: Path, trainer: Trainer, max_iterations: int | None, progress: bool):
    primary = jax.process_index() == 0
    state = trainer.init_state
    # First, on every process: creating the manager makes the checkpoint folder (and syncs the
    # processes), so all of them then see the same checkpoints.
    mngr = checkpoint.manager(workdir, config.max_checkpoints_to_keep,
                              keep_period=config.get("keep_every") or None)  # fmt: skip
    start, last_saved = 0, None
    restored = checkpoint.restore_latest(workdir, state, config, log=tqdm.write)
    mngr.reload()  # unreadable checkpoints may have been moved away
    if restored is not None:
        state, start, changes = restored
        last_saved = start
        tqdm.write(f"Resuming from checkpoint {start} in {checkpoint.checkpoint_dir(workdir)}")
        if changes and primary:
            workdir_lib.record_config_changes(workdir, start, changes)
    if primary:
        workdir_lib.trim_metrics(workdir, start)
        checkpoint.write_config_json(workdir, config)

    end = config.num_train_steps
    if max_iterations is not None:
        end = min(end, start + max_iterations)

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
        with _StopRequest() as stop, open(metrics_file, "a") as log:
            for step in range(start, end):
                batch = trainer.next_batch(step)
                key = jax.random.fold_in(state.rng, step)
                state, metrics = trainer.train_step(state, batch, key)
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
                    t_last, step_last = now, done
                    log.write(json.dumps(row) + "\n")
                    log.flush()
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
