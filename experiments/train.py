"""Train any system from its config; rerunning the same command resumes from the last checkpoint.

The system (the self-classifying CA, MetaNCA, the hybrid restorer) comes from
`config.model.kind`; see nca/loop.py.

python -m experiments.train --config=l2_noise --workdir=workdirs/l2_noise
python -m experiments.train --config=l2_noise:smoke --workdir=/tmp/smoke
python -m experiments.train --config=ce --workdir=workdirs/ce --config.num_train_steps=20000
"""

from __future__ import annotations

import jax
from absl import flags
from ml_collections import config_flags

from experiments import cli
from nca import loop

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config name in configs/ (e.g. l2_noise or l2_noise:smoke) or a .py path.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    cli.reject_positional(argv)
    config = _CONFIG.value
    config.name = cli.config_name(flags.FLAGS["config"].config_filename)
    print(f"config {config.name}; devices: {jax.devices()}")
    loop.train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
