"""The MetaNCA experiments, on rules reloaded from their training workdirs.

accuracy:   mean test accuracy of freshly grown nets, trained and held-out architectures.
grid:       (MNIST) heatmap of mean test accuracy of grown [784, X, Y, 10], X, Y in 10..90.
stability:  (iris) a long rollout: steps until the loss is within 10 % of its minimum and the
            longest run within it, with the pool (--workdir) and without (--nopool_workdir).
zero_out:   grow, zero one layer and 30 % of the other weights, keep growing; the rule of
            --workdir and, if given, of --damage_workdir (a second rule, e.g. `:damage`);
            each labelled by whether its config trained with damage.
baseline:   the same MLPs trained by Adam for the same number of steps.

Each writes `<name>.json`, `<name>.md` and (except accuracy) `<name>.png` into --out (default:
the workdir), and each rule's numbers into its workdir's `tensorboard/` as scalars
`eval/metanca_<name>/...` at its checkpoint step.

python -m experiments.metanca --experiment=accuracy,grid,baseline,zero_out \
    --workdir=/root/runs/metanca_mnist --out=docs/metanca/mnist
python -m experiments.metanca --experiment=accuracy,stability,zero_out,baseline \
    --workdir=/root/runs/metanca_iris --nopool_workdir=/root/runs/metanca_iris_nopool \
    --damage_workdir=/root/runs/metanca_iris_damage --out=docs/metanca/iris
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from tqdm import tqdm

from experiments import cli
from nca import checkpoint, tensorboard
from nca.metanca import data as metanca_data
from nca.metanca import evaluate
from nca.metanca import train as metanca_train

EXPERIMENTS = ("accuracy", "grid", "stability", "zero_out", "baseline")
_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of the trained MetaNCA rule.")
_NOPOOL = flags.DEFINE_string("nopool_workdir", None, "stability: the rule trained without pool.")
_DAMAGE = flags.DEFINE_string("damage_workdir", None, "zero_out: the rule trained with damage.")
_EXPERIMENT = flags.DEFINE_list("experiment", ["accuracy"], f"Any of {', '.join(EXPERIMENTS)}.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: the workdir).")
_NETS = flags.DEFINE_integer("nets", 32, "Sampled task nets per architecture (grid: per cell).")
_GRID_SIZES = flags.DEFINE_list(
    "grid_sizes", [str(n) for n in range(10, 100, 10)], "grid: the hidden sizes X and Y."
)
_GRID_NETS = flags.DEFINE_integer("grid_nets", 10, "grid: sampled task nets per cell.")
_STEPS = flags.DEFINE_integer("steps", 0, "Rule steps to grow (0: the trained horizon).")
_LONG = flags.DEFINE_integer("long_steps", 500, "stability: length of the long rollout.")
_DAMAGE_AT = flags.DEFINE_integer("damage_at", 50, "zero_out: rule steps before the damage.")
_AFTER = flags.DEFINE_integer("after_steps", 100, "zero_out: rule steps after the damage.")
_LR = flags.DEFINE_float("baseline_lr", 1e-2, "baseline: Adam learning rate.")
_SEED = flags.DEFINE_integer("seed", 1234, "Seed of the sampled task-net inits.")
_CURVE_EXAMPLES = flags.DEFINE_integer(
    "curve_examples",
    0,
    "stability, zero_out, baseline: evaluate per-step curves on the first N "
    "examples of the split (0: all); accuracy and grid always use the whole test split.",
)
flags.mark_flag_as_required("workdir")


def load(workdir: str):
    config, params, step = checkpoint.load_params(workdir, log=tqdm.write)
    if config.model.kind != "metanca":
        raise cli.InputError(f"{workdir} holds a {config.model.kind!r} model, not MetaNCA.")
    params = jax.tree.map(jnp.asarray, params)
    return {"workdir": workdir, "config": config, "rule": params, "step": step}


def task_arrays(config):
    d = metanca_data.load_task(config)
    return {k: jnp.asarray(v) for k, v in d.items()}


def curve_split(d, split: str):
    n = _CURVE_EXAMPLES.value or len(d[f"{split}_x"])
    return d[f"{split}_x"][:n], d[f"{split}_y"][:n]


def write(out: Path, name: str, result: dict, table: str, fig=None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(table + "\n")
    if fig is not None:
        fig.savefig(out / f"{name}.png", dpi=120, bbox_inches="tight")
    tqdm.write(f"wrote {out / name}.json/.md" + (" and .png" if fig is not None else ""))
    tqdm.write(table)


def source(m) -> dict:
    return {
        "workdir": str(m["workdir"]),
        "checkpoint_step": int(m["step"]),
        "config": m["config"].name,
    }


def horizon(m) -> int:
    return _STEPS.value or int(m["config"].num_rule_steps)


# --------------------------------------------------------------------------------------------


def run_accuracy(m, d, out: Path) -> None:
    config = m["config"]
    keys = evaluate.init_keys(_SEED.value, _NETS.value)
    rows, result = [], {"source": source(m), "nets": _NETS.value, "archs": []}
    trained = metanca_train.archs(config.train_archs)
    for arch in tqdm(trained + metanca_train.archs(config.test_archs), desc="accuracy"):
        entry = {"arch": list(arch), "trained": arch in trained}
        for n in sorted({horizon(m), 5 * horizon(m)}):
            acc = evaluate.grow_final_accuracy(
                config, m["rule"], arch, keys, d["test_x"], d["test_y"], n
            )
            entry[f"test_accuracy@{n}"] = {
                "mean": float(acc.mean()),
                "min": float(acc.min()),
                "std": float(acc.std()),
            }
        result["archs"].append(entry)
        cells = [
            f"{entry[k]['mean']:.3f} (min {entry[k]['min']:.2f})"
            for k in entry
            if k.startswith("test_accuracy")
        ]
        rows.append(
            f"| {list(arch)} | {'trained' if entry['trained'] else 'held out'} | "
            + " | ".join(cells)
            + " |"
        )
    steps = [k.split("@")[1] for k in result["archs"][0] if k.startswith("test_accuracy")]
    table = (
        f"Test accuracy of freshly grown nets ({_NETS.value} inits each; "
        f"{config.name} @ {m['step']})\n\n| architecture | | "
        + " | ".join(f"after {s} rule steps" for s in steps)
        + " |\n|---|---|"
        + "---|" * len(steps)
        + "\n"
        + "\n".join(rows)
    )
    for split in ("trained", "held out"):
        sel = [e for e in result["archs"] if e["trained"] == (split == "trained")]
        key = f"test_accuracy@{horizon(m)}"
        result[f"mean_{split.replace(' ', '_')}"] = float(np.mean([e[key]["mean"] for e in sel]))
    write(out, "accuracy", result, table)


def run_grid(m, d, out: Path) -> None:
    import matplotlib.pyplot as plt

    config = m["config"]
    sizes = [int(n) for n in _GRID_SIZES.value]
    keys = evaluate.init_keys(_SEED.value, _GRID_NETS.value)
    n_in, n_out = int(config.train_archs[0][0]), int(config.train_archs[0][-1])
    acc = np.zeros((len(sizes), len(sizes)))
    t0 = time.perf_counter()
    cells = [(i, j) for i in range(len(sizes)) for j in range(len(sizes))]
    for i, j in tqdm(cells, desc="grid"):
        arch = (n_in, sizes[i], sizes[j], n_out)
        acc[i, j] = evaluate.grow_final_accuracy(
            config, m["rule"], arch, keys, d["test_x"], d["test_y"], horizon(m)
        ).mean()
    trained = [a for a in metanca_train.archs(config.train_archs) if len(a) == 4]
    held_out = [a for a in metanca_train.archs(config.test_archs) if len(a) == 4]
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(acc, origin="lower", vmin=0, vmax=1, cmap="viridis")
    for i, j in itertools_product(len(sizes)):
        ax.text(j, i, f"{acc[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
    for archs_, style in ((trained, "r"), (held_out, "w")):
        for a in archs_:
            if a[1] in sizes and a[2] in sizes:
                ax.add_patch(
                    plt.Rectangle(
                        (sizes.index(a[2]) - 0.5, sizes.index(a[1]) - 0.5),
                        1,
                        1,
                        fill=False,
                        ec=style,
                        lw=2.5,
                    )
                )
    ax.set_xticks(range(len(sizes)), sizes)
    ax.set_yticks(range(len(sizes)), sizes)
    ax.set_xlabel("Y (second hidden layer)")
    ax.set_ylabel("X (first hidden layer)")
    ax.set_title(
        f"MetaNCA: mean test accuracy of grown [{n_in}, X, Y, {n_out}]\n"
        f"({_GRID_NETS.value} nets/cell, {horizon(m)} rule steps; red: trained, "
        f"white: held out)"
    )
    fig.colorbar(im, ax=ax)
    result = {
        "source": source(m),
        "sizes": sizes,
        "nets_per_cell": _GRID_NETS.value,
        "rule_steps": horizon(m),
        "accuracy": acc.tolist(),
        "mean": float(acc.mean()),
        "min": float(acc.min()),
        "max": float(acc.max()),
        "seconds": time.perf_counter() - t0,
    }
    table = (
        f"Mean test accuracy of grown [{n_in}, X, Y, {n_out}] ({_GRID_NETS.value} nets per "
        f"cell, {horizon(m)} rule steps): grid mean {acc.mean():.3f}, min {acc.min():.3f}, "
        f"max {acc.max():.3f}\n\n| X \\ Y | "
        + " | ".join(map(str, sizes))
        + " |\n|---|"
        + "---|" * len(sizes)
        + "\n"
        + "\n".join(
            f"| {x} | " + " | ".join(f"{v:.2f}" for v in acc[i]) + " |" for i, x in enumerate(sizes)
        )
    )
    write(out, "grid", result, table, fig)


def itertools_product(n):
    return ((i, j) for i in range(n) for j in range(n))


def run_stability(m, d, out: Path) -> None:
    import matplotlib.pyplot as plt

    models = [("with pool", m)]
    if _NOPOOL.value:
        models.append(("without pool", load(_NOPOOL.value)))
    keys = evaluate.init_keys(_SEED.value, _NETS.value)
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    result, rows = {"long_steps": _LONG.value, "nets": _NETS.value, "runs": {}}, []
    for ax, (label, mm) in zip(axes[0], models, strict=True):
        config = mm["config"]
        entry = {"source": source(mm), "archs": []}
        for arch in metanca_train.archs(config.train_archs) + metanca_train.archs(
            config.test_archs
        ):
            curves = evaluate.grow_curves(
                config, mm["rule"], arch, keys, *curve_split(d, "train"), _LONG.value
            )
            per_net = [evaluate.stability(c[1:]) for c in curves["loss"]]
            of_mean = evaluate.stability(curves["loss"].mean(0)[1:])
            e = {
                "arch": list(arch),
                "steps_to_train_mean": float(np.mean([s["steps_to_train"] for s in per_net])),
                "longest_within_mean": float(np.mean([s["longest_within_10pct"] for s in per_net])),
                "of_mean_curve": of_mean,
                "final_train_accuracy": float(curves["accuracy"][:, -1].mean()),
            }
            entry["archs"].append(e)
            rows.append(
                f"| {label} | {list(arch)} | {e['steps_to_train_mean']:.1f} | "
                f"{e['longest_within_mean']:.1f} | {of_mean['steps_to_train']} | "
                f"{of_mean['longest_within_10pct']} | {e['final_train_accuracy']:.3f} |"
            )
            ax.plot(curves["loss"].mean(0), label=str(list(arch)))
        entry["steps_to_train"] = float(np.mean([e["steps_to_train_mean"] for e in entry["archs"]]))
        entry["longest_within"] = float(np.mean([e["longest_within_mean"] for e in entry["archs"]]))
        result["runs"][label] = entry
        ax.set_yscale("log")
        ax.set_title(f"iris, {label}: mean training loss over {_NETS.value} nets")
        ax.set_xlabel("rule step")
        ax.legend(fontsize=7)
    summary = "; ".join(
        f"{k}: {v['steps_to_train']:.1f} steps to train, "
        f"{v['longest_within']:.1f} longest within 10 %"
        for k, v in result["runs"].items()
    )
    table = (
        f"Stability over a {_LONG.value}-step rollout (training split; per net, mean over "
        f"{_NETS.value} nets; and of the mean curve). {summary}. Abstract: 5 / 13 without "
        f"pool, 5 / 496 with.\n\n| run | architecture | steps to train | longest within "
        f"10 % | (mean curve) steps to train | (mean curve) longest within | final "
        f"train accuracy |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    write(out, "stability", result, table, fig)


def run_zero_out(m, d, out: Path) -> None:
    import matplotlib.pyplot as plt

    rules = [m] + ([load(_DAMAGE.value)] if _DAMAGE.value else [])
    models = [(f"trained with{'' if r['config'].damage_prob else 'out'} damage", r) for r in rules]
    if len({name for name, _ in models}) < len(models):
        raise cli.InputError(
            f"--workdir and --damage_workdir={_DAMAGE.value} are both rules {models[0][0]}; "
            "give --damage_workdir a rule meta-trained with the `damage` option."
        )
    keys = evaluate.init_keys(_SEED.value, _NETS.value)
    total = _DAMAGE_AT.value + _AFTER.value
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    result, rows = {"damage_at": _DAMAGE_AT.value, "after": _AFTER.value, "runs": {}}, []
    for ax, (label, mm) in zip(axes[0], models, strict=True):
        config = mm["config"]
        entry = {"source": source(mm), "archs": []}
        for arch in metanca_train.archs(config.train_archs) + metanca_train.archs(
            config.test_archs
        ):
            curves = evaluate.grow_curves(
                config,
                mm["rule"],
                arch,
                keys,
                *curve_split(d, "test"),
                total,
                damage_at=_DAMAGE_AT.value,
            )
            acc = curves["accuracy"].mean(0)
            before, hit, final = acc[_DAMAGE_AT.value], acc[_DAMAGE_AT.value + 1], acc[-1]
            e = {
                "arch": list(arch),
                "before": float(before),
                "after_damage_step": float(hit),
                "final": float(final),
                "recovery": float(final / before),
                "curve": acc.tolist(),
            }
            entry["archs"].append(e)
            rows.append(
                f"| {label} | {list(arch)} | {before:.3f} | {hit:.3f} | {final:.3f} | "
                f"{final / before:.2f} |"
            )
            ax.plot(acc, label=str(list(arch)))
        entry["mean_recovery"] = float(np.mean([e["recovery"] for e in entry["archs"]]))
        result["runs"][label] = entry
        ax.axvline(_DAMAGE_AT.value, color="k", ls=":")
        ax.set_title(f"{config.data.task}, {label}")
        ax.set_xlabel("rule step (damage at the dotted line)")
        ax.set_ylabel(f"test accuracy (mean of {_NETS.value} nets)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    table = (
        f"Zero-out: grow {_DAMAGE_AT.value} rule steps, zero one random layer and 30 % of "
        f"the other weights, grow {_AFTER.value} more. Test accuracy, mean of {_NETS.value} "
        f"nets; recovery = final / before (target >= 0.9).\n\n| rule | architecture | "
        f"before | right after damage (1 step) | final | recovery |\n|---|---|---|---|---|"
        f"---|\n" + "\n".join(rows)
    )
    write(out, "zero_out", result, table, fig)


def run_baseline(m, d, out: Path) -> None:
    import matplotlib.pyplot as plt

    config = m["config"]
    keys = evaluate.init_keys(_SEED.value, _NETS.value)
    n = horizon(m)
    long = 10 * n
    fig, ax = plt.subplots(figsize=(7, 4))
    result = {"source": source(m), "rule_steps": n, "baseline_lr": _LR.value, "archs": []}
    rows = []
    for arch in metanca_train.archs(config.train_archs) + metanca_train.archs(config.test_archs):
        test_x, test_y = curve_split(d, "test")
        grown = evaluate.grow_curves(config, m["rule"], arch, keys, test_x, test_y, long)
        bp = evaluate.backprop_curves(
            arch,
            keys,
            d["train_x"],
            d["train_y"],
            test_x,
            test_y,
            long,
            _LR.value,
            batch_size=int(config.batch_size),
            seed=_SEED.value,
        )
        g, b = grown["accuracy"].mean(0), bp["accuracy"].mean(0)
        result["archs"].append({"arch": list(arch), "metanca": g.tolist(), "backprop": b.tolist()})
        rows.append(f"| {list(arch)} | {g[n]:.3f} | {b[n]:.3f} | {g[long]:.3f} | {b[long]:.3f} |")
        line = ax.plot(g, label=f"MetaNCA {list(arch)}")[0]
        ax.plot(b, ls="--", color=line.get_color(), label=f"Adam {list(arch)}")
    ax.axvline(n, color="k", ls=":")
    ax.set_xlabel("step (rule step / Adam step); dotted: the trained horizon")
    ax.set_ylabel(f"test accuracy (mean of {_NETS.value} nets)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6, ncol=2)
    table = (
        f"Grown by the rule vs trained by Adam (lr {_LR.value}, batch "
        f"{config.batch_size or 'full'}) from the same inits: test accuracy, mean of "
        f"{_NETS.value} nets.\n\n| architecture | MetaNCA @ {n} | Adam @ {n} | MetaNCA @ "
        f"{long} | Adam @ {long} |\n|---|---|---|---|---|\n" + "\n".join(rows)
    )
    write(out, "baseline", result, table, fig)


def main(argv):
    cli.reject_positional(argv)
    unknown = set(_EXPERIMENT.value) - set(EXPERIMENTS)
    if unknown:
        raise cli.InputError(
            f"unknown experiment(s) {sorted(unknown)}; choose from {', '.join(EXPERIMENTS)}."
        )
    m = load(_WORKDIR.value)
    out = Path(_OUT.value or _WORKDIR.value)
    d = task_arrays(m["config"])
    runs = {
        "accuracy": run_accuracy,
        "grid": run_grid,
        "stability": run_stability,
        "zero_out": run_zero_out,
        "baseline": run_baseline,
    }
    for name in _EXPERIMENT.value:
        if name == "grid" and m["config"].data.task != "mnist":
            raise cli.InputError("the grid experiment is for MNIST rules.")
        runs[name](m, d, out)
        write_summaries(name, json.loads((out / f"{name}.json").read_text()))


def write_summaries(name: str, result: dict) -> None:
    """The numbers of each rule in an experiment's result (the result itself, or each of its
    `runs`, as named by their `source`) into that rule's workdir's TensorBoard folder."""
    for part in result["runs"].values() if "runs" in result else [result]:
        source = part.get("source") or {}
        scalars = {f"eval/metanca_{name}/{k}": v for k, v in part.items() if type(v) is float}
        if source.get("workdir") and scalars:
            tensorboard.write_summary(source["workdir"], source["checkpoint_step"], scalars)


if __name__ == "__main__":
    cli.run(main)
