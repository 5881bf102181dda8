"""Carry a run across sessions and machines: a resume bundle of a workdir's newest checkpoint.

Write one (commit it, or copy it to the other machine):

    python -m experiments.bundle --workdir=workdirs/l2_noise_s0 --out=resume/l2_noise_s0.npz

Continue from it into a fresh workdir, then train as usual (the restore prints the command):

    python -m experiments.bundle --restore=resume/l2_noise_s0.npz --workdir=workdirs/l2_noise_s0
    python -m experiments.train --config=l2_noise --workdir=workdirs/l2_noise_s0

Show what a bundle holds: `python -m experiments.bundle --info=resume/l2_noise_s0.npz`.

With the pool carried, the continued run is bit-exact. `--no_pool` (or a pool that would push
the bundle over `--max_mb`) leaves it out: the run continues with a fresh pool, not bit-exact.
See docs/resume_bundles.md.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from experiments import cli
from nca import bundle

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir (to bundle or restore into).")
_OUT = flags.DEFINE_string("out", None, "Where to write the bundle (default resume/<workdir>.npz).")
_RESTORE = flags.DEFINE_string("restore", None, "A bundle to continue, into a fresh --workdir.")
_INFO = flags.DEFINE_string("info", None, "A bundle to describe.")
_NO_POOL = flags.DEFINE_bool("no_pool", False, "Leave the pool out (the run restarts it).")
_MAX_MB = flags.DEFINE_float(
    "max_mb",
    bundle.DEFAULT_MAX_BYTES / 1e6,
    "Leave the pool out if the bundle would be larger.",
    lower_bound=0,
)
_MNIST_DIR = flags.DEFINE_string(
    "mnist_dir",
    None,
    "With --restore: this machine's MNIST folder (default: as training finds it).",
)
_KEEP_EVERY = flags.DEFINE_integer(
    "keep_every",
    None,
    "Carry the params of checkpoints at multiples of this (default: config's).",
    lower_bound=0,
)


def main(argv):
    cli.reject_positional(argv)
    if _INFO.value:
        print(bundle.describe(bundle.read(_INFO.value)))
        return
    if not _WORKDIR.value:
        raise cli.InputError("give --workdir=DIR (with --restore=BUNDLE to continue from one).")
    if _RESTORE.value:
        if _OUT.value or _NO_POOL.value:
            raise cli.InputError("--out and --no_pool are for writing a bundle, not --restore.")
        summary = bundle.restore(_RESTORE.value, _WORKDIR.value, mnist_dir=_MNIST_DIR.value)
        restored = summary["bundle"]
        print(bundle.describe(restored))
        print(f"restored step {summary['step']} into {summary['workdir']}; milestones "
              f"{summary['milestones'] or 'none'}.")  # fmt: skip
        if not summary["exact"]:
            print(f"note: the pool was not carried ({summary['pool_note']}); the run continues "
                  f"with a fresh pool: not bit-exact with an uninterrupted run.")  # fmt: skip
        print("continue with:\n  " + bundle.continue_command(summary["config"], _WORKDIR.value))
        return
    out = _OUT.value or f"resume/{Path(_WORKDIR.value).resolve().name}.npz"
    summary = bundle.write(
        _WORKDIR.value,
        out,
        drop_pool=_NO_POOL.value,
        max_bytes=int(_MAX_MB.value * 1e6),
        keep_every=_KEEP_EVERY.value,
    )
    pool = "carried" if summary["pool_carried"] else f"NOT carried ({summary['pool_note']})"
    print(f"wrote {summary['out']} ({summary['bytes'] / 1e6:.2f} MB): step {summary['step']}, "
          f"pool {pool}, milestones {summary['milestones'] or 'none'}.")  # fmt: skip


if __name__ == "__main__":
    cli.run(main)
