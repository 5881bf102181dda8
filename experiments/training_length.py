"""Accuracy and agreement against training iterations, from one run's checkpoints.

    python -m experiments.training_length --workdir=workdirs/l2_noise_s0 \
        --steps=10000,20000,30000,50000,70000,100000 --num_digits=2000 \
        --out=docs/selforg_mnist/training_length

Evaluates the run's model at each listed checkpoint (the milestones that `keep_every` keeps) for
200 CA steps from the seed and writes `<out>/training_length.json`, `.md` and `.png`: accuracy
and agreement at 200 steps, and their tops, per iteration count: the figure for choosing a
schedule. Rerunning with more steps evaluates only the new ones (same workdir, digits, seed).
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import flags

from experiments import cli
from nca import data, report
from nca.selforg_mnist import evaluate

_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.")
_STEPS = flags.DEFINE_list("steps", None, "Checkpoint steps (training iterations) to evaluate.")
_NUM_DIGITS = flags.DEFINE_integer("num_digits", 2000, "Test digits to use (from the start).",
                                   lower_bound=1, upper_bound=cli.MNIST_TEST_DIGITS)  # fmt: skip
_CA_STEPS = flags.DEFINE_integer("ca_steps", 200, "CA steps from the seed.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random masks and noise.", lower_bound=0)
_OUT = flags.DEFINE_string("out", None, "Folder for training_length.{json,md,png}.")
_DATA = flags.DEFINE_string("mnist_dir", None, "MNIST folder (default: as training finds it).")
flags.mark_flags_as_required(["workdir", "steps", "out"])
cli.require_int_list("steps", lower_bound=1)


def main(argv):
    cli.reject_positional(argv)
    out = Path(_OUT.value)
    previous = out / "training_length.json"
    earlier = json.loads(previous.read_text()) if previous.is_file() else None
    images, labels = data.load_mnist("test", _DATA.value)
    n = _NUM_DIGITS.value
    result = evaluate.training_length_report(
        _WORKDIR.value, [int(s) for s in _STEPS.value], data.to_grey(images[:n]), labels[:n],
        num_steps=_CA_STEPS.value, earlier=earlier, seed=_SEED.value,
    )  # fmt: skip
    report.write(out, result, dpi=110)


if __name__ == "__main__":
    cli.run(main)
