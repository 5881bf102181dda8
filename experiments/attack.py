"""Adversarial reprogramming: how far adversarial cells turn a model's digits into an "8".

    python -m experiments.attack --model=distill_l2_noise --adversary=distill_adversary_eight \
        --out=docs/selforg_mnist/adversarial/distill
    python -m experiments.attack --workdir=workdirs/l2_noise --adversary=distill_adversary_eight \
        --fractions=0.1 --num_digits=1000 --out=/tmp/attack
    python -m experiments.attack --model=l2_noise --adversary=workdirs/adversary_eight \
        --adversary_step=10000 --fractions=0.1 --num_digits=1000 --out=/tmp/attack_10k
    python -m experiments.attack --model=l2_noise --adversary=random:0.1 --fractions=0.1 \
        --num_digits=1000 --out=/tmp/attack_random   # faulty cells: a random rule, not trained

For each adversary fraction, a fresh random mask per batch marks that share of the cells as
the adversary's (Randazzo et al., Distill 2021; nca/selforg_mnist/adversarial.py); the
adversaries act from step 0, are removed after `--steps`, and the CA runs `--after` more steps.
Writes `<out>/attack.json` (every curve), `attack.md` (the table at both times), `attack.png`
and `attack_video.gif` / `.mp4` (adversarial cells black while they act). Measured: the share of
the original's alive cells (of non-target digits) voting the target, the share of those digits
agreeing on it, and the cells' accuracy on the true label.
"""

from __future__ import annotations

from pathlib import Path

import jax
from absl import flags

from experiments import cli
from nca import data, report
from nca.selforg_mnist import adversarial, defence

_WORKDIR = flags.DEFINE_string("workdir", None, "The attacked model's training workdir.")
_MODEL = flags.DEFINE_string("model", None, "The attacked model, shipped (e.g. distill_l2_noise).")
_ADVERSARY = flags.DEFINE_string(
    "adversary",
    "distill_adversary_eight",
    "The adversary: a shipped name, a workdir, or random:SCALE (a random rule drawn with --seed, "
    "its output layer Glorot-uniform times SCALE: defence.random_rule).",
)
_ADVERSARY_STEP = flags.DEFINE_integer(
    "adversary_step",
    None,
    "An --adversary workdir's checkpoint of this training iteration (default: its newest).",
    lower_bound=0,
)
_FRACTIONS = flags.DEFINE_list("fractions", ["0", "0.02", "0.05", "0.1", "0.2"],
                               "Shares of the cells that are adversarial.")  # fmt: skip
_TARGET = flags.DEFINE_integer("target", 8, "The label the adversary pushes to.",
                               lower_bound=0, upper_bound=9)  # fmt: skip
_NUM_DIGITS = flags.DEFINE_integer("num_digits", 10_000, "Test digits to use (from the start).",
                                   lower_bound=1, upper_bound=cli.MNIST_TEST_DIGITS)  # fmt: skip
_STEPS = flags.DEFINE_integer("steps", 200, "CA steps with the adversaries.", lower_bound=1)
_AFTER = flags.DEFINE_integer("after", 200, "CA steps after removing them.", lower_bound=0)
_BATCH = flags.DEFINE_integer("batch_size", 1000, "Digits per batch.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the masks, fire masks and noise.", lower_bound=0)
_VIDEO = flags.DEFINE_integer("video_digits", 16, "Digits in attack_video.gif/.mp4 (0: none).",
                              lower_bound=0)  # fmt: skip
_VIDEO_FRACTION = flags.DEFINE_float("video_fraction", 0.1, "Adversary share in the video.",
                                     lower_bound=0, upper_bound=1)  # fmt: skip
_OUT = flags.DEFINE_string("out", None, "Folder for attack.{json,md,png}.")
_DATA = flags.DEFINE_string("mnist_dir", None, "MNIST folder (default: as training finds it).")
flags.mark_flags_as_required(["out"])


def fractions() -> list[float]:
    try:
        values = [float(f) for f in _FRACTIONS.value]
    except ValueError as e:
        raise cli.InputError(f"--fractions must be numbers in [0, 1]: {e}") from e
    if not all(0 <= f <= 1 for f in values):
        raise cli.InputError(f"--fractions must lie in [0, 1], got {_FRACTIONS.value}.")
    return values


def load_adversary() -> dict:
    """`--adversary` as `cli.load_shipped_or_workdir` gives models, or a random rule."""
    kind, sep, scale = _ADVERSARY.value.partition(":")
    if not (kind == "random" and sep):
        return cli.load_shipped_or_workdir(
            _ADVERSARY.value, _ADVERSARY_STEP.value, "adversary_step"
        )
    try:
        scale = float(scale)
    except ValueError:
        scale = 0.0  # rejected below, as a non-positive one is
    if not scale > 0 or _ADVERSARY_STEP.value is not None:
        raise cli.InputError(
            f"--adversary=random:SCALE takes a positive SCALE and no --adversary_step, got "
            f"{_ADVERSARY.value!r}."
        )
    params = defence.random_rule(jax.random.PRNGKey(_SEED.value), scale)
    return {
        "params": params,
        "label": f"a random rule (output scale {scale:g}, seed {_SEED.value})",
    }


def main(argv):
    cli.reject_positional(argv)
    shares = fractions()
    attacked = cli.load_one_model(_WORKDIR.value, _MODEL.value)
    adversary = load_adversary()
    images, labels = data.load_mnist("test", _DATA.value)
    n = _NUM_DIGITS.value
    result = adversarial.attack_report(
        attacked["config"], attacked["params"], adversary["params"], data.to_grey(images[:n]),
        labels[:n], shares, f"{attacked['label']} attacked by {adversary['label']}",
        num_steps=_STEPS.value, after=_AFTER.value, target=_TARGET.value,
        batch_size=_BATCH.value, seed=_SEED.value,
    )  # fmt: skip
    report.write(_OUT.value, result, dpi=110)
    if _VIDEO.value:
        stem = Path(_OUT.value) / "attack_video"
        adversarial.attack_video(
            attacked["config"], attacked["params"], adversary["params"],
            data.to_grey(images[: _VIDEO.value]), stem, fraction=_VIDEO_FRACTION.value,
            num_steps=_STEPS.value, after=_AFTER.value, seed=_SEED.value,
        )  # fmt: skip
        print(f"wrote {stem}.gif and .mp4 (adversarial cells black while they act)")


if __name__ == "__main__":
    cli.run(main)
