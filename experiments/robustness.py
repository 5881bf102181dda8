"""Robustness of a trained CA to out-of-distribution digits (figures + JSON into --out); see
nca/selforg_mnist/experiments.py for the conditions.

    python -m experiments.robustness --model=distill_l2_noise --out=robustness
    python -m experiments.robustness --workdir=workdirs/l2_noise --num_digits=300
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from experiments import cli
from nca import data, report
from nca.selforg_mnist import experiments

S = experiments.RobustnessSettings()
_WORKDIR = flags.DEFINE_string("workdir", None, "Trained workdir.")
_MODEL = flags.DEFINE_string("model", None, "Or a shipped pretrained model, e.g. distill_l2_noise.")
_OUT = flags.DEFINE_string("out", "robustness", "Output folder.")
_NUM_DIGITS = flags.DEFINE_integer("num_digits", 1000, "Test digits per condition.", lower_bound=1,
                                   upper_bound=cli.MNIST_TEST_DIGITS)  # fmt: skip
_STEPS = flags.DEFINE_integer("steps", S.steps, "CA steps.", lower_bound=1)
_CANVAS = flags.DEFINE_integer("canvas", S.canvas, "Grid size for scaled / stretched digits.",
                               lower_bound=28)  # fmt: skip
_SEED = flags.DEFINE_integer("seed", S.seed, "Seed.", lower_bound=0)
_IMPL = flags.DEFINE_string("impl", S.impl, "CA implementation (nca/selforg_mnist/fast.py).")
_HAND_DRAWN = flags.DEFINE_string(
    "hand_drawn_dir", S.hand_drawn_dir,
    "Folder of 28x28 PNGs named <label>.png or <label>_<anything>.png ('' to skip).",
)  # fmt: skip
_DATA = flags.DEFINE_string("mnist_dir", None, "MNIST folder (default: as training finds it).")


def main(argv):
    cli.reject_positional(argv)
    m = cli.load_one_model(_WORKDIR.value, _MODEL.value)
    images, labels = data.load_mnist("test", _DATA.value)
    n = _NUM_DIGITS.value
    if not 2 <= n <= len(images) // 2:
        raise cli.InputError(f"--num_digits={n} must be between 2 and {len(images) // 2}.")
    settings = experiments.RobustnessSettings(
        steps=_STEPS.value, canvas=_CANVAS.value, seed=_SEED.value, impl=_IMPL.value,
        hand_drawn_dir=_HAND_DRAWN.value,
    )  # fmt: skip
    result, (first, second) = experiments.run_robustness(
        m["config"], m["params"], data.to_grey(images[:n]), labels[:n], m["label"], settings
    )
    report.write(_OUT.value, result, dpi=110, tight=False)
    experiments.chimera_video(m["config"], m["params"], first[:8], second[:8],
                              Path(_OUT.value) / "chimeras", settings.steps)  # fmt: skip


if __name__ == "__main__":
    cli.run(main)
