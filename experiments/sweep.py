"""Train and evaluate a grid of configs x seeds, then one table with mean and spread over seeds.

    python -m experiments.sweep --configs=ce,l2,l2_noise --seeds=0,1,2 --root=workdirs/sweep
    python -m experiments.sweep --configs=l2_noise:smoke,l2_noise:no_pool,smoke --seeds=0,1 \
        --root=/tmp/sweep --num_digits=500 --steps=50

Each run trains into `<root>/<config>/seed<k>` (finished runs are skipped, interrupted ones
resume), is evaluated with the article's protocol (`restart`), and the table goes to
`<root>/sweep.md` and `<root>/sweep.json`. Configs are separated by spaces or by commas that do not
precede a known option (so `l2_noise:no_pool,smoke` stays one config).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from absl import flags

from configs.common import OPTIONS
from experiments import cli
from nca import checkpoint, data, loop, report
from nca.config import field_value, load_config, set_field
from nca.selforg_mnist import evaluate

_CONFIGS = flags.DEFINE_string("configs", None, "Config names, e.g. ce,l2,l2_noise:no_pool.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds.")
_ROOT = flags.DEFINE_string("root", None, "Folder holding one workdir per run.")
_SET = flags.DEFINE_multi_string(
    "set", [], "Override for every run, e.g. --set=num_train_steps=5000."
)
_NUM_DIGITS = flags.DEFINE_integer("num_digits", 10_000, "Test digits for the evaluation.",
                                   lower_bound=1, upper_bound=cli.MNIST_TEST_DIGITS)  # fmt: skip
_STEPS = flags.DEFINE_integer("steps", 200, "CA steps of the evaluation.", lower_bound=1)
_DATA = flags.DEFINE_string("mnist_dir", None, "MNIST folder (default: as training finds it).")
cli.require_int_list("seeds", lower_bound=0)
flags.mark_flags_as_required(["configs", "root"])


def split_configs(text: str) -> list[str]:
    """`ce,l2:no_pool,smoke,l2_noise` -> ["ce", "l2:no_pool,smoke", "l2_noise"]."""
    options = "|".join(OPTIONS)
    return [c for c in re.split(rf"[\s]+|,(?!(?:{options})\b)", text) if c]


def apply_override(config, assignment: str) -> None:
    key, sep, value = assignment.partition("=")
    if not sep:
        raise cli.InputError(f"--set={assignment!r} must look like key=value.")
    missing = object()
    current = field_value(config, key, missing)
    if current is missing:
        raise cli.InputError(f"cannot apply --set={assignment}: the config has no field {key!r}.")
    try:
        parsed = value if isinstance(current, str) else json.loads(value)
        set_field(config, key, type(current)(parsed))
    except (ValueError, TypeError) as e:
        raise cli.InputError(f"cannot apply --set={assignment}: {e}") from e


def main(argv):
    cli.reject_positional(argv)
    root = Path(_ROOT.value)
    runs = []
    for spec in split_configs(_CONFIGS.value):
        for seed in _SEEDS.value:
            config = load_config(spec)
            config.seed = int(seed)
            if _DATA.value:
                config.data.mnist_dir = _DATA.value
            for assignment in _SET.value:
                apply_override(config, assignment)
            runs.append(
                (spec, config, root / spec.replace(":", "_").replace(",", "-") / f"seed{seed}")
            )
    for _, config, _ in runs:
        loop.check_config(config)  # every run's fields in range before the first one starts

    images, labels = data.load_mnist("test", _DATA.value)
    images, labels = data.to_grey(images[: _NUM_DIGITS.value]), labels[: _NUM_DIGITS.value]
    per_config: dict[str, list[dict]] = {}
    for spec, config, workdir in runs:
        done = checkpoint.checkpoint_dir(workdir).is_dir() and (
            checkpoint.manager(workdir, read_only=True).latest_step() == config.num_train_steps
        )
        print(f"{spec} seed {config.seed}: {'finished, skipping training' if done else 'training'}")
        if not done:
            loop.train_and_evaluate(config, workdir)
        _, params, step = checkpoint.load_params(workdir)
        curves = evaluate.evaluate_model(config, params, images, labels, num_steps=_STEPS.value,
                                         variants=("none",), seed=config.seed)["none"]  # fmt: skip
        per_config.setdefault(spec, []).append(evaluate.summary(curves, _STEPS.value))

    lines = [
        f"| config | seeds | accuracy at {_STEPS.value} | top accuracy | "
        f"agreement at {_STEPS.value} | top agreement |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    table = {}
    for spec, summaries in per_config.items():
        stats = {
            k: (float(np.mean([s[k] for s in summaries])), float(np.std([s[k] for s in summaries])))
            for k in ("accuracy_final", "top_accuracy", "agreement_final", "top_agreement")
        }
        table[spec] = {"runs": summaries, "mean_std": stats}
        cells = " | ".join(f"{m:.1f} ± {s:.1f}" for m, s in stats.values())
        lines.append(f"| {spec} | {len(summaries)} | {cells} |")
    report.write(root, report.Report("sweep", table, "\n".join(lines)))


if __name__ == "__main__":
    cli.run(main)
