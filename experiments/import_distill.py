"""Write the article's published weights as a regular workdir, to evaluate and render them.

    python -m experiments.import_distill --out=workdirs/distill
    python -m experiments.evaluate --workdir=workdirs/distill

The weights are the Distill article's TensorFlow.js model (CC BY 4.0, distillpub/post--selforg-
mnist): the pool + mutation + L2 + noise model. Its config is `l2_noise`.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from experiments import cli
from nca import checkpoint
from nca.config import load_config
from nca.selforg_mnist import reference

_OUT = flags.DEFINE_string("out", None, "Workdir to create.")
_MODEL = flags.DEFINE_string("model_file", None, "The model JSON (default: ../shared/reference).")
flags.mark_flags_as_required(["out"])


def main(argv):
    cli.reject_positional(argv)
    try:
        params = reference.load_distill_params(_MODEL.value)
    except (FileNotFoundError, ValueError) as e:
        raise cli.InputError(str(e)) from e
    out = Path(_OUT.value)
    if checkpoint.checkpoint_dir(out).exists():
        raise cli.InputError(f"{out} already holds checkpoints; choose a new --out.")
    config = load_config("l2_noise")
    config.name = "distill_l2_noise"
    checkpoint.save_params(out, params, config)
    print(f"published weights written to {out} (config l2_noise)")


if __name__ == "__main__":
    cli.run(main)
