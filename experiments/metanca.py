"""The MetaNCA experiments (see nca/metanca/experiments.py), on rules reloaded from their
training workdirs. Each writes `<name>.json`, `<name>.md` and (except accuracy) `<name>.png` into
--out (default: the workdir).

python -m experiments.metanca --experiment=training,accuracy,grid,baseline,zero_out \
    --workdir=/root/runs/metanca_mnist --out=docs/metanca/mnist
python -m experiments.metanca --experiment=accuracy,stability,zero_out,baseline \
    --workdir=/root/runs/metanca_iris --nopool_workdir=/root/runs/metanca_iris_nopool \
    --damage_workdir=/root/runs/metanca_iris_damage --out=docs/metanca/iris
"""

from __future__ import annotations

from absl import flags
from tqdm import tqdm

from experiments import cli
from nca import report
from nca.metanca import experiments

S = experiments.Settings()
_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of the trained MetaNCA rule.")
_NOPOOL = flags.DEFINE_string("nopool_workdir", None, "stability: the rule trained without pool.")
_DAMAGE = flags.DEFINE_string("damage_workdir", None, "zero_out: the rule trained with damage.")
_EXPERIMENT = flags.DEFINE_list(
    "experiment", ["accuracy"], f"Any of {', '.join(experiments.RUNS)}."
)
_OUT = flags.DEFINE_string("out", None, "Output folder (default: the workdir).")
_GRID_REFERENCE = flags.DEFINE_string(
    "grid_reference", None, "grid: a published heatmap (JSON: sizes, accuracy, source) to plot "
    "beside ours with the difference.",
)  # fmt: skip
_NETS = flags.DEFINE_integer("nets", S.nets, "Sampled task nets per architecture.", lower_bound=1)
_GRID_SIZES = flags.DEFINE_list("grid_sizes", list(map(str, S.grid_sizes)), "grid: X and Y.")
_GRID_NETS = flags.DEFINE_integer("grid_nets", S.grid_nets, "grid: sampled task nets per cell.",
                                 lower_bound=1)  # fmt: skip
_STEPS = flags.DEFINE_integer("steps", S.steps, "Rule steps to grow (0: the trained horizon).",
                             lower_bound=0)  # fmt: skip
_LONG = flags.DEFINE_integer("long_steps", S.long_steps, "stability: length of the rollout.",
                            lower_bound=1)  # fmt: skip
_DAMAGE_AT = flags.DEFINE_integer("damage_at", S.damage_at, "zero_out: steps before the damage.",
                                 lower_bound=0)  # fmt: skip
_AFTER = flags.DEFINE_integer("after_steps", S.after_steps, "zero_out: steps after the damage.",
                             lower_bound=1)  # fmt: skip
_LR = flags.DEFINE_float("baseline_lr", S.baseline_lr, "baseline: Adam learning rate.")
_CONVERGED = flags.DEFINE_integer(
    "converged_steps", S.converged_steps, "baseline: also train Adam this many steps, e.g. 5000 "
    "to convergence (0: not run).", lower_bound=0,
)  # fmt: skip
_SEED = flags.DEFINE_integer("seed", S.seed, "Seed of the sampled task-net inits.", lower_bound=0)
_CURVE_EXAMPLES = flags.DEFINE_integer(
    "curve_examples", S.curve_examples, "stability, zero_out, baseline: evaluate per-step curves "
    "on the first N examples of the split (0: all); accuracy and grid use the whole test split.",
    lower_bound=0,
)  # fmt: skip
cli.require_positive("baseline_lr")
cli.require_int_list("grid_sizes", lower_bound=1)
flags.mark_flag_as_required("workdir")


def main(argv):
    cli.reject_positional(argv)
    unknown = set(_EXPERIMENT.value) - set(experiments.RUNS)
    if unknown:
        raise cli.InputError(
            f"unknown experiment(s) {sorted(unknown)}; choose from {', '.join(experiments.RUNS)}."
        )
    settings = experiments.Settings(
        nets=_NETS.value, grid_sizes=tuple(int(n) for n in _GRID_SIZES.value),
        grid_nets=_GRID_NETS.value, steps=_STEPS.value, long_steps=_LONG.value,
        damage_at=_DAMAGE_AT.value, after_steps=_AFTER.value, baseline_lr=_LR.value,
        converged_steps=_CONVERGED.value, seed=_SEED.value, curve_examples=_CURVE_EXAMPLES.value,
    )  # fmt: skip
    m = experiments.load(_WORKDIR.value)
    d = experiments.task_arrays(m["config"])
    extra = {
        "stability": {"nopool": experiments.load(_NOPOOL.value) if _NOPOOL.value else None},
        "zero_out": {"damage": experiments.load(_DAMAGE.value) if _DAMAGE.value else None},
        "grid": {"reference": experiments.grid_reference(_GRID_REFERENCE.value,
                                                         settings.grid_sizes)
                 if _GRID_REFERENCE.value else None},
    }  # fmt: skip
    for name in _EXPERIMENT.value:
        if name == "grid" and m["config"].data.task != "mnist":
            raise cli.InputError("the grid experiment is for MNIST rules.")
        result = experiments.RUNS[name](m, d, settings, **extra.get(name, {}))
        report.write(_OUT.value or _WORKDIR.value, result, log=tqdm.write)


if __name__ == "__main__":
    cli.run(main)
