"""All Orbax code: saving and restoring training state, and rebuilding a model from a workdir.

A workdir holds `checkpoints/<step>/` (Orbax: the train state and the config as JSON),
`config.json` (a readable copy) and `metrics.jsonl`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

CHECKPOINT_SUBDIR = "checkpoints"


class CheckpointError(RuntimeError):
    """A workdir without a usable checkpoint, or one that does not fit the config."""


def checkpoint_dir(workdir: str | Path) -> Path:
    return Path(workdir).resolve() / CHECKPOINT_SUBDIR


def manager(
    workdir: str | Path,
    max_to_keep: int | None = 3,
    read_only: bool = False,
    keep_period: int | None = None,
):
    """An Orbax `CheckpointManager` for `workdir/checkpoints` (created unless read_only).

    Retention keeps the newest `max_to_keep` checkpoints (all if None) and, with `keep_period`,
    every checkpoint whose step is a multiple of it (milestones; `keep_every` in the configs).
    """
    retention = {"max_to_keep": max_to_keep}
    if keep_period and not read_only:  # Orbax's replacement for the deprecated keep_period=
        policies = ocp.checkpoint_managers
        retention = {"preservation_policy": policies.AnyPreservationPolicy(
            [policies.LatestN(max_to_keep), policies.EveryNSteps(keep_period)])}  # fmt: skip
    options = ocp.CheckpointManagerOptions(
        create=not read_only,
        read_only=read_only,
        cleanup_tmp_directories=not read_only,  # partial saves of a killed run
        **retention,
    )
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, config: ml_collections.ConfigDict):
    """Saves `state` and the config (JSON) as checkpoint `step` (asynchronously; see `wait`)."""
    mngr.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            config=ocp.args.JsonSave(config.to_dict()),
        ),
        force=True,
    )


def save_params(workdir: str | Path, params: Any, config: ml_collections.ConfigDict, step=0):
    """A workdir holding only params (e.g. imported weights), loadable by `load_params`."""
    mngr = manager(workdir)
    save(mngr, step, {"params": params}, config)
    mngr.wait_until_finished()
    mngr.close()
    write_config_json(workdir, config)


# The bookkeeping fields every config has: they may change when a run resumes (recorded in
# config_changes.jsonl). A system adds its own (its `train.resumable`, see `loop.resumable_rule`);
# any other difference to the checkpoint's config makes it another experiment, and resuming is
# refused.
RESUMABLE_CHANGES = frozenset(
    {"name", "log_every", "checkpoint_every", "max_checkpoints_to_keep", "keep_every",
     "num_train_steps", "validate_every"}
)  # fmt: skip
UNREADABLE_SUBDIR = "unreadable_checkpoints"


def resumable(field: str, old: Any, new: Any, step: int) -> bool:
    """Whether changing `field` from `old` to `new` when resuming at `step` leaves the run the
    same experiment, as far as the core knows: its bookkeeping fields."""
    return field in RESUMABLE_CHANGES


def added_field(added: dict[str, Any], field: str, old: Any, new: Any) -> bool:
    """Whether `field` is one a system added after runs were saved (`added`: field -> the value
    that means what its absence meant, None for any value), absent from the saved config and now
    at that value."""
    return old is None and field in added and added[field] in (None, new)


def config_differences(saved: dict, config: ml_collections.ConfigDict) -> dict[str, tuple]:
    """`{"a.b": (saved value, current value)}` for every field that differs."""
    current = json.loads(config.to_json())  # tuples -> lists, as saved
    old, new = _flatten(saved), _flatten(current)
    return {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys())
            if old.get(k) != new.get(k)}  # fmt: skip


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def restore_latest(
    workdir: str | Path,
    target: Any,
    config: ml_collections.ConfigDict,
    log=print,
    resumable: Callable[[str, Any, Any, int], bool] = resumable,
) -> tuple[Any, int, dict] | None:
    """Restores the newest readable checkpoint of `workdir` into the structure, shapes and
    shardings of `target`. Returns `(state, step, resumable config changes)`, or None if there
    is no checkpoint.

    Checkpoints that cannot be read are skipped for the next newest one, and then moved (never
    deleted) to `workdir/unreadable_checkpoints/`; if none is readable, nothing is moved and
    `CheckpointError` says why (training never silently starts over). A checkpoint whose config
    differs from `config` in a way `resumable(field, old, new, step)` refuses raises
    `CheckpointError` listing the differences.
    """
    directory = checkpoint_dir(workdir)
    if not directory.is_dir():
        return None
    mngr = manager(workdir, read_only=True)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    unreadable = []  # (step, error) of newer checkpoints that could not be read
    try:
        for step in sorted(mngr.all_steps(), reverse=True):
            try:
                saved = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
                changes = config_differences(saved.config, config)
                refused = {k: v for k, v in changes.items() if not resumable(k, *v, step)}
                if not refused:
                    restored = mngr.restore(
                        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
                    )
            except Exception as e:  # noqa: BLE001 - Orbax and TensorStore raise many kinds
                unreadable.append((step, f"{type(e).__name__}: {_first_line(e)}"))
                continue
            if refused:
                listing = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
                raise CheckpointError(
                    f"checkpoint {step} in {directory} was trained with another config "
                    f"({listing}). Resume with the config it was trained with, or use a new "
                    f"--workdir."
                )
            for bad_step, error in unreadable:  # only once a readable one is found
                if jax.process_index() != 0:  # process 0 moves them
                    continue
                moved = _quarantine(workdir, bad_step)
                log(f"checkpoint {bad_step} in {directory} is unreadable ({error}); moved it to "
                    f"{moved}; resuming from checkpoint {step}.")  # fmt: skip
            return restored.state, step, changes
    finally:
        mngr.close()
    if unreadable:  # nothing readable: start over? no: leave everything where it is
        raise CheckpointError(
            f"no readable checkpoint in {directory}: "
            + "; ".join(f"checkpoint {s}: {e}" for s, e in unreadable)
            + ". Nothing was moved or deleted; fix or remove them, or use a new --workdir."
        )
    return None


def _quarantine(workdir: str | Path, step: int) -> Path:
    source = checkpoint_dir(workdir) / str(step)
    destination = Path(workdir).resolve() / UNREADABLE_SUBDIR / str(step)
    while destination.exists():
        destination = destination.with_name(destination.name + "_")
    destination.parent.mkdir(parents=True, exist_ok=True)
    source.rename(destination)
    return destination


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else ""


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax warns about every read-only manager and missing metadata file; `cli.run` silences
    absl logging for the scripts, this does it where params are loaded from a notebook or library
    code."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


def load_params(workdir: str | Path, step: int | None = None, log=print):
    """Rebuilds a trained model from its workdir alone: returns `(config, params, step)`.

    `step=None` takes the newest readable checkpoint (saying which newer ones are unreadable).
    Params come back as numpy arrays, in the layout of the system's model.
    """
    config, state, step = load_state(workdir, step, log)
    return config, state["params"], step


@_quiet_orbax()
def load_state(workdir: str | Path, step: int | None = None, log=print):
    """The whole saved train state, without a target: returns `(config, state, step)`, the
    state as numpy arrays in nested dicts and lists (a dataclass or named tuple becomes a dict
    of its fields). `step` as in `load_params`."""
    mngr, newest = _open(workdir, step)
    candidates = [newest] if step is not None else sorted(mngr.all_steps(), reverse=True)
    errors = []
    for candidate in candidates:
        try:
            restored = mngr.restore(
                candidate,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(_saved_on_one_device(mngr, candidate)),
                    config=ocp.args.JsonRestore(),
                ),
            )
            config = ml_collections.ConfigDict(restored.config)
            state = jax.device_get(restored.state)
        except Exception as e:  # noqa: BLE001 - Orbax and TensorStore raise many kinds
            errors.append(
                f"cannot read checkpoint {candidate}: {type(e).__name__}: {_first_line(e)}"
            )
            continue
        for error in errors:
            log(f"warning: {error}; using checkpoint {candidate} instead.")
        return config, state, candidate
    raise CheckpointError(f"no readable checkpoint in {mngr.directory}: {'; '.join(errors)}")


def _saved_on_one_device(mngr: ocp.CheckpointManager, step: int):
    """The saved state's structure, shapes and dtypes, placed on this process's first device, so
    that a checkpoint written on another topology (several devices or hosts) restores anywhere."""
    saved = ocp.StandardCheckpointer().metadata(Path(mngr.directory) / str(step) / "state")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved.item_metadata.tree
    )


def _open(workdir: str | Path, step: int | None):
    directory = checkpoint_dir(workdir)
    if not directory.is_dir():
        raise CheckpointError(
            f"{workdir} is not a training workdir: no {CHECKPOINT_SUBDIR}/ folder in it. Pass the "
            f"--workdir a training run wrote."
        )
    mngr = manager(workdir, read_only=True)
    steps = mngr.all_steps()
    if not steps:
        raise CheckpointError(f"no checkpoint in {directory}.")
    if step is None:
        step = max(steps)
    elif step not in steps:
        raise CheckpointError(f"no checkpoint for step {step} in {directory}; it has {steps}.")
    return mngr, step


def all_steps(workdir: str | Path) -> list[int]:
    """The steps of `workdir`'s checkpoints, oldest first ([] without a checkpoint folder)."""
    if not checkpoint_dir(workdir).is_dir():
        return []
    with _quiet_orbax():
        mngr = manager(workdir, read_only=True)
        try:
            return sorted(mngr.all_steps())
        finally:
            mngr.close()


def write_checkpoints(workdir: str | Path, checkpoints: list[tuple[int, Any]], config) -> None:
    """Saves `(step, state)` pairs with `config` as checkpoints of `workdir`, keeping them all,
    and waits until they are written."""
    with _quiet_orbax():
        mngr = manager(workdir, max_to_keep=None)
        try:
            for step, state in sorted(checkpoints, key=lambda c: c[0]):
                save(mngr, step, state, config)
            mngr.wait_until_finished()
        finally:
            mngr.close()


def write_config_json(workdir: str | Path, config: ml_collections.ConfigDict) -> None:
    """A human-readable copy of the config next to the checkpoints."""
    path = Path(workdir) / "config.json"
    path.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
