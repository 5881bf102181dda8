"""Train any system from its config; rerunning the same command resumes from the last checkpoint.

The system (the self-classifying CA, MetaNCA, the hybrid restorer) comes from
`config.model.kind`; see nca/loop.py.

python -m experiments.train --config=l2_noise --workdir=workdirs/l2_noise
python -m experiments.train --config=l2_noise:smoke --workdir=/tmp/smoke
python -m experiments.train --config=ce --workdir=workdirs/ce --config.num_train_steps=20000

Both cores of a CPU on one run: `--cpu_devices=2` makes each core a device and splits every batch
over them (data-parallel; the self-classifying CA's `table` path then rolls out each core's half).
One run per core (`taskset -c 0 ...`, `taskset -c 1 ...`) gives more iterations per hour in all.

Several hosts (a TPU VM pod slice, SLURM, Open MPI detect themselves): the same command on every
host with `--distributed`; elsewhere add `--coordinator_address=HOST0:PORT --num_processes=N
--process_id=I`. The workdir must be on storage all hosts see.
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
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Multi-host: call jax.distributed.initialize() before anything else."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "With --distributed, where auto-detection does not apply."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --coordinator_address.",
                                     lower_bound=1)  # fmt: skip
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --coordinator_address.",
                                   lower_bound=0)  # fmt: skip
cli.define_cpu_devices("On a CPU: split each batch over this many devices (one per core).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    cli.reject_positional(argv)
    config = _CONFIG.value
    config.name = cli.config_name(flags.FLAGS["config"].config_filename)
    loop.check_config(config)  # every field in range, before anything starts
    if _DISTRIBUTED.value:
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        print(f"process {jax.process_index()} of {jax.process_count()}")
    print(f"config {config.name}; devices: {jax.devices()}")
    loop.train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
