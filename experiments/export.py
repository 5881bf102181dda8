"""Ship a trained workdir as a pretrained model, loadable by name without data or training.

    python -m experiments.evaluate --workdir=workdirs/l2_noise      # optional: adds its table
    python -m experiments.export --workdir=workdirs/l2_noise --name=l2_noise
    python -m experiments.evaluate --model=l2_noise                # anywhere, no workdir needed

Writes `nca/pretrained/<name>.npz` (params) and `<name>.json` (the config and a provenance text
built from the workdir: config name, iterations trained, learning-rate schedule, config changes
on resume, the devices of each start (`sessions.jsonl`), and the `eval_restart.json` summary
when it evaluated the exported checkpoint). An existing model of that name is only replaced with
--overwrite.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from absl import flags

from experiments import cli
from nca import checkpoint
from nca.selforg_mnist import pretrained

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained workdir to export.")
_NAME = flags.DEFINE_string("name", None, "Name to load it by, e.g. l2_noise.")
_NOTE = flags.DEFINE_string("note", "", "Extra provenance text (where and how it was trained).")
_FOLDER = flags.DEFINE_string("folder", None, "Where to write (default: nca/pretrained/).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a shipped model of the same name.")
flags.mark_flags_as_required(["workdir", "name"])


def provenance(workdir: Path, config, step: int, note: str = "") -> str:
    """How the workdir's model was trained and how it evaluates, in one paragraph."""
    drops = ", ".join(f"{b:,}" for b in config.lr_boundaries)
    parts = [
        f"Trained with this codebase: config {config.name}, {step:,} of {config.num_train_steps:,} "
        f"iterations (learning rate {config.learning_rate:g}, x0.1 after {drops}; seed "
        f"{config.seed})."
    ]
    if config.get("init_from"):
        parts.append(f"Started from the params of {config.init_from}.")
    changes = workdir / "config_changes.jsonl"
    if changes.is_file():
        for line in changes.read_text().splitlines():
            row = json.loads(line)
            listed = "; ".join(f"{k}: {old} -> {new}" for k, (old, new) in row["changes"].items())
            parts.append(f"Resumed at iteration {row['step']:,} with {listed}.")
    sessions = workdir / "sessions.jsonl"  # absent in workdirs from before it existed
    if sessions.is_file():
        rows = [json.loads(line) for line in sessions.read_text().splitlines()]
        ran = "; ".join(f"from {r['step']:,} on {r['devices']} (jax {r['jax']})" for r in rows)
        parts.append(f"Devices: {ran}.")
    result = workdir / "eval_restart.json"
    r = json.loads(result.read_text()) if result.is_file() else {}
    if r.get("checkpoint_step") == step:  # an evaluation of an older checkpoint is left out
        s, n = r["summary"], r["steps"]
        parts.append(
            f"Evaluated on {r['num_digits']:,} test digits (restart protocol, {n} steps): top "
            f"accuracy {s['top_accuracy']:.1f} at {s['top_accuracy_step']}, accuracy at {n} "
            f"{s['accuracy_final']:.1f}, top agreement {s['top_agreement']:.1f} at "
            f"{s['top_agreement_step']}, agreement at {n} {s['agreement_final']:.1f}."
        )
    if note:
        parts.append(note)
    return " ".join(parts)


def main(argv):
    cli.reject_positional(argv)
    name = _NAME.value
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise cli.InputError(f"--name={name!r}: use letters, digits, '_', '.', '-' only.")
    folder = Path(_FOLDER.value) if _FOLDER.value else pretrained.FOLDER
    if (folder / f"{name}.npz").exists() and not _OVERWRITE.value:
        raise cli.InputError(f"{folder / name}.npz exists; pass --overwrite to replace it.")
    workdir = Path(_WORKDIR.value)
    config, params, step = checkpoint.load_params(workdir)
    if config.model.kind != "selforg_mnist":
        raise cli.InputError(f"{workdir} holds a {config.model.kind!r} model; only "
                             f"self-classifying MNIST CAs are shipped this way.")  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    path = pretrained.export(params, config, name, provenance(workdir, config, step, _NOTE.value),
                             folder=folder)  # fmt: skip
    print(f"exported {workdir} (iteration {step}) to {path} and {path.with_suffix('.json')}")


if __name__ == "__main__":
    cli.run(main)
