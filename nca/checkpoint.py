"""All Orbax code: saving and restoring training state, and rebuilding a model from a workdir.

A workdir holds `checkpoints/<step>/` (Orbax: the train state and the config as JSON),
`config.json` (a readable copy) and `metrics.jsonl`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

CHECKPOINT_SUBDIR = "checkpoints"


class CheckpointError(RuntimeError):
    """A workdir without a usable checkpoint, or one that does not fit the config."""


def checkpoint_dir(workdir: str | Path) -> Path:
    return Path(workdir).resolve() / CHECKPOINT_SUBDIR


def manager(workdir: str | Path, max_to_keep: int = 3, read_only: bool = False):
    """An Orbax `CheckpointManager` for `workdir/checkpoints` (created unless read_only)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only
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


def restore_latest(mngr: ocp.CheckpointManager, target: Any) -> tuple[Any, int] | None:
    """Restores the newest checkpoint into the structure, shapes and shardings of `target`.

    Returns `(state, step)`, or None if there is no checkpoint yet.
    """
    step = mngr.latest_step()
    if step is None:
        return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
        restored = mngr.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"checkpoint {step} in {mngr.directory} does not fit this config "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Resume with the "
            f"config it was trained with, or use a new --workdir."
        ) from e
    return restored.state, step


def load_config(workdir: str | Path, step: int | None = None) -> ml_collections.ConfigDict:
    """The config a workdir was trained with, as saved in its checkpoint."""
    mngr, step = _open(workdir, step)
    restored = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return ml_collections.ConfigDict(restored.config)


def load_params(workdir: str | Path, step: int | None = None):
    """Rebuilds a trained model from its workdir alone: returns `(config, params, step)`.

    `step=None` takes the newest checkpoint. Params come back as numpy arrays in the layout of
    `nca.model.init_params`.
    """
    mngr, step = _open(workdir, step)
    try:
        restored = mngr.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(), config=ocp.args.JsonRestore()
            ),
        )
        params, config = restored.state["params"], ml_collections.ConfigDict(restored.config)
    except Exception as e:  # noqa: BLE001 - Orbax and TensorStore raise many kinds
        raise CheckpointError(
            f"cannot read checkpoint {step} in {mngr.directory}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}"
        ) from e
    return config, params, step


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


def write_config_json(workdir: str | Path, config: ml_collections.ConfigDict) -> None:
    """A human-readable copy of the config next to the checkpoints."""
    path = Path(workdir) / "config.json"
    path.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
