"""The MetaNCA experiments, on rules reloaded from their training workdirs; each `run_*` returns
an `nca.report.Report` (its data, table and figure) and writes nothing.

accuracy:   mean test accuracy of freshly grown nets, trained and held-out architectures.
grid:       (MNIST) heatmap of mean test accuracy of grown [784, X, Y, 10], X, Y in 10..100
            with 100 nets per cell (the abstract's protocol), optionally beside a published one.
stability:  (iris) a long rollout: steps until the loss is within 10 % of its minimum and the
            longest run within it, with the pool and (if given) without.
zero_out:   grow, zero one layer and 30 % of the other weights, keep growing; the rule and, if
            given, a second one (e.g. `:damage`), each labelled by whether its config trained
            with damage.
baseline:   the same task nets trained by Adam for the same number of steps, and for as many
            steps as Adam takes in the rule's time; optionally also to convergence
            (`converged_steps`), the ceiling a shape allows.
training:   the meta-loss against meta-steps (from the workdir's metrics.jsonl), per training
            architecture, and whether it is flat over the last 10 % of the meta-steps
            (`loss_flat`): converged, in issue 19's sense.

`experiments/metanca.py` is the command.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.patches
import numpy as np
from tqdm import tqdm

from nca import checkpoint, report
from nca import workdir as workdir_lib
from nca.checkpoint import CheckpointError
from nca.config import ConfigError
from nca.metanca import data as metanca_data
from nca.metanca import evaluate
from nca.metanca import train as metanca_train


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the experiments sample and grow (the command's flags)."""

    nets: int = 32  # sampled task nets per architecture
    grid_sizes: tuple[int, ...] = tuple(range(10, 110, 10))  # grid: X and Y (the abstract's)
    grid_nets: int = 100  # grid: sampled task nets per cell (the abstract's)
    steps: int = 0  # rule steps to grow (0: the trained horizon)
    long_steps: int = 500  # stability: length of the long rollout
    damage_at: int = 50  # zero_out: rule steps before the damage
    after_steps: int = 100  # zero_out: rule steps after the damage
    baseline_lr: float = 1e-2  # baseline: Adam learning rate
    converged_steps: int = 0  # baseline: also Adam after this many steps (0: not run)
    seed: int = 1234  # of the sampled task-net inits
    curve_examples: int = 0  # stability, zero_out, baseline: first N examples (0: all)


def load(workdir: str) -> dict:
    """The rule of a MetaNCA workdir: `{"workdir", "config", "rule", "step"}`."""
    config, params, step = checkpoint.load_params(workdir, log=tqdm.write)
    if config.model.kind != "metanca":
        raise CheckpointError(f"{workdir} holds a {config.model.kind!r} model, not MetaNCA.")
    params = jax.tree.map(jnp.asarray, params)
    return {"workdir": workdir, "config": config, "rule": params, "step": step}


def task_arrays(config) -> dict[str, jax.Array]:
    """The task's train and test splits as device arrays."""
    d = metanca_data.load_task(config)
    return {k: jnp.asarray(v) for k, v in d.items()}


def curve_split(d, split: str, s: Settings):
    n = s.curve_examples or len(d[f"{split}_x"])
    return d[f"{split}_x"][:n], d[f"{split}_y"][:n]


def source(m) -> dict:
    return {
        "workdir": str(m["workdir"]),
        "checkpoint_step": int(m["step"]),
        "config": m["config"].name,
    }


def horizon(m, s: Settings) -> int:
    return s.steps or int(m["config"].num_rule_steps)


def run_accuracy(m, d, s: Settings) -> report.Report:
    config = m["config"]
    keys = evaluate.init_keys(s.seed, s.nets)
    rows, result = [], {"source": source(m), "nets": s.nets, "archs": []}
    trained = metanca_train.archs(config.train_archs)
    for arch in tqdm(metanca_train.all_archs(config), desc="accuracy"):
        entry = {"arch": list(arch), "trained": arch in trained}
        for n in sorted({horizon(m, s), 5 * horizon(m, s)}):
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
        f"Test accuracy of freshly grown nets ({s.nets} inits each; "
        f"{config.name} @ {m['step']})\n\n| architecture | | "
        + " | ".join(f"after {s} rule steps" for s in steps)
        + " |\n|---|---|"
        + "---|" * len(steps)
        + "\n"
        + "\n".join(rows)
    )
    for split in ("trained", "held out"):
        sel = [e for e in result["archs"] if e["trained"] == (split == "trained")]
        key = f"test_accuracy@{horizon(m, s)}"
        result[f"mean_{split.replace(' ', '_')}"] = float(np.mean([e[key]["mean"] for e in sel]))
    return report.Report("accuracy", result, table)


def grid_reference(path: str, sizes: Sequence[int]) -> dict:
    """A published heatmap to compare with: JSON `{"sizes": [X values], "accuracy": [[mean
    accuracy for X = sizes[i], Y = sizes[j]]], "source": "..."}` on the grid being run."""
    try:
        ref = json.loads(Path(path).read_text())
        acc = np.asarray(ref["accuracy"], np.float64)
        ref_sizes = [int(n) for n in ref["sizes"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"--grid_reference {path}: not a JSON file with 'sizes' and 'accuracy' ({e})."
        ) from None
    if ref_sizes != list(sizes) or acc.shape != (len(sizes), len(sizes)):
        raise ConfigError(
            f"--grid_reference {path} covers X, Y = {ref_sizes} ({acc.shape[0]}x"
            f"{acc.shape[-1]} values); run the grid on the same sizes with --grid_sizes."
        )
    return {"accuracy": acc, "source": str(ref.get("source", path))}


def run_grid(m, d, s: Settings, reference: dict | None = None) -> report.Report:
    """Mean test accuracy of grown [n_0, X, Y, n_L] over the grid (the abstract's Figure 2
    protocol by default: X, Y = 10..100, 100 sampled nets per cell), trained and held-out
    architectures marked; with `reference` (`grid_reference`), beside it and the difference."""
    config = m["config"]
    sizes = [int(n) for n in s.grid_sizes]
    keys = evaluate.init_keys(s.seed, s.grid_nets)
    n_in, n_out = int(config.train_archs[0][0]), int(config.train_archs[0][-1])
    acc = np.zeros((len(sizes), len(sizes)))
    t0 = time.perf_counter()
    cells = [(i, j) for i in range(len(sizes)) for j in range(len(sizes))]
    for i, j in tqdm(cells, desc="grid"):
        arch = (n_in, sizes[i], sizes[j], n_out)
        acc[i, j] = evaluate.grow_final_accuracy(
            config, m["rule"], arch, keys, d["test_x"], d["test_y"], horizon(m, s)
        ).mean()
    marked = {
        "r": [a for a in metanca_train.archs(config.train_archs) if len(a) == 4],
        "w": [a for a in metanca_train.archs(config.test_archs) if len(a) == 4],
    }
    panels = [("ours", acc, "viridis", (0, 1))]
    if reference is not None:
        diff = acc - reference["accuracy"]
        lim = max(float(np.abs(diff).max()), 1e-3)
        panels += [
            (reference["source"], reference["accuracy"], "viridis", (0, 1)),
            ("ours - reference", diff, "RdBu", (-lim, lim)),
        ]
    fig, axes = report.figure(1, len(panels), figsize=(7 * len(panels), 6), squeeze=False)
    for ax, (title, values, cmap, (lo, hi)) in zip(axes[0], panels, strict=True):
        im = ax.imshow(values, origin="lower", vmin=lo, vmax=hi, cmap=cmap)
        for i, j in itertools_product(len(sizes)):
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="k" if cmap == "RdBu" else "w")  # fmt: skip
        for style, archs_ in marked.items():
            for a in archs_:
                if a[1] in sizes and a[2] in sizes:
                    ax.add_patch(
                        matplotlib.patches.Rectangle(
                            (sizes.index(a[2]) - 0.5, sizes.index(a[1]) - 0.5),
                            1, 1, fill=False, ec=style, lw=2.5,
                        )
                    )  # fmt: skip
        ax.set_xticks(range(len(sizes)), sizes)
        ax.set_yticks(range(len(sizes)), sizes)
        ax.set_xlabel("Y (second hidden layer)")
        ax.set_ylabel("X (first hidden layer)")
        ax.set_title(title)
        fig.colorbar(im, ax=ax)
    fig.suptitle(
        f"MetaNCA: mean test accuracy of grown [{n_in}, X, Y, {n_out}] ({s.grid_nets} nets/cell, "
        f"{horizon(m, s)} rule steps; red: trained, white: held out)"
    )
    result = {
        "source": source(m),
        "sizes": sizes,
        "nets_per_cell": s.grid_nets,
        "rule_steps": horizon(m, s),
        "accuracy": acc.tolist(),
        "mean": float(acc.mean()),
        "min": float(acc.min()),
        "max": float(acc.max()),
        "seconds": time.perf_counter() - t0,
    }
    compared = ""
    if reference is not None:
        ref = reference["accuracy"]
        result["reference"] = {
            "source": reference["source"],
            "mean": float(ref.mean()),
            "min": float(ref.min()),
            "mean_difference": float((acc - ref).mean()),
            "cells_below_reference": int((acc < ref).sum()),
        }
        compared = (
            f"; {reference['source']}: mean {ref.mean():.3f}, min {ref.min():.3f}, mean "
            f"difference {(acc - ref).mean():+.3f}"
        )
    table = (
        f"Mean test accuracy of grown [{n_in}, X, Y, {n_out}] ({s.grid_nets} nets per "
        f"cell, {horizon(m, s)} rule steps): grid mean {acc.mean():.3f}, min {acc.min():.3f}, "
        f"max {acc.max():.3f}{compared}\n\n| X \\ Y | "
        + " | ".join(map(str, sizes))
        + " |\n|---|"
        + "---|" * len(sizes)
        + "\n"
        + "\n".join(
            f"| {x} | " + " | ".join(f"{v:.2f}" for v in acc[i]) + " |" for i, x in enumerate(sizes)
        )
    )
    return report.Report("grid", result, table, fig)


def itertools_product(n):
    return ((i, j) for i in range(n) for j in range(n))


def run_stability(m, d, s: Settings, nopool=None) -> report.Report:
    """A long rollout of the rule `m` and, if given, of the rule trained without pool."""
    models = [("with pool", m)]
    if nopool is not None:
        models.append(("without pool", nopool))
    keys = evaluate.init_keys(s.seed, s.nets)
    fig, axes = report.figure(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    result, rows = {"long_steps": s.long_steps, "nets": s.nets, "runs": {}}, []
    for ax, (label, mm) in zip(axes[0], models, strict=True):
        config = mm["config"]
        entry = {"source": source(mm), "archs": []}
        for arch in metanca_train.all_archs(config):
            curves = evaluate.grow_curves(
                config, mm["rule"], arch, keys, *curve_split(d, "train", s), s.long_steps
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
        ax.set_title(f"iris, {label}: mean training loss over {s.nets} nets")
        ax.set_xlabel("rule step")
        ax.legend(fontsize=7)
    summary = "; ".join(
        f"{k}: {v['steps_to_train']:.1f} steps to train, "
        f"{v['longest_within']:.1f} longest within 10 %"
        for k, v in result["runs"].items()
    )
    table = (
        f"Stability over a {s.long_steps}-step rollout (training split; per net, mean over "
        f"{s.nets} nets; and of the mean curve). {summary}. Abstract: 5 / 13 without "
        f"pool, 5 / 496 with.\n\n| run | architecture | steps to train | longest within "
        f"10 % | (mean curve) steps to train | (mean curve) longest within | final "
        f"train accuracy |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    return report.Report("stability", result, table, fig)


def run_zero_out(m, d, s: Settings, damage=None) -> report.Report:
    """Zero-out damage and recovery, for `m` and, if given, a rule trained with damage."""
    rules = [m] + ([damage] if damage is not None else [])
    models = [(f"trained with{'' if r['config'].damage_prob else 'out'} damage", r) for r in rules]
    if len({name for name, _ in models}) < len(models):
        raise ConfigError(
            f"{m['workdir']} and {damage['workdir']} are both rules {models[0][0]}; give as the "
            "second a rule meta-trained with the `damage` option."
        )
    keys = evaluate.init_keys(s.seed, s.nets)
    total = s.damage_at + s.after_steps
    fig, axes = report.figure(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    result, rows = {"damage_at": s.damage_at, "after": s.after_steps, "runs": {}}, []
    for ax, (label, mm) in zip(axes[0], models, strict=True):
        config = mm["config"]
        entry = {"source": source(mm), "archs": []}
        for arch in metanca_train.all_archs(config):
            curves = evaluate.grow_curves(
                config,
                mm["rule"],
                arch,
                keys,
                *curve_split(d, "test", s),
                total,
                damage_at=s.damage_at,
            )
            acc = curves["accuracy"].mean(0)
            before, hit, final = acc[s.damage_at], acc[s.damage_at + 1], acc[-1]
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
        ax.axvline(s.damage_at, color="k", ls=":")
        ax.set_title(f"{config.data.task}, {label}")
        ax.set_xlabel("rule step (damage at the dotted line)")
        ax.set_ylabel(f"test accuracy (mean of {s.nets} nets)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    table = (
        f"Zero-out: grow {s.damage_at} rule steps, zero one random layer and 30 % of "
        f"the other weights, grow {s.after_steps} more. Test accuracy, mean of {s.nets} "
        f"nets; recovery = final / before (target >= 0.9).\n\n| rule | architecture | "
        f"before | right after damage (1 step) | final | recovery |\n|---|---|---|---|---|"
        f"---|\n" + "\n".join(rows)
    )
    return report.Report("zero_out", result, table, fig)


def run_baseline(m, d, s: Settings) -> report.Report:
    """Grown by the rule vs trained by Adam from the same inits: at equal steps, and Adam at
    the rule's wall-clock time (both timed without per-step metrics, after compiling)."""
    config = m["config"]
    keys = evaluate.init_keys(s.seed, s.nets)
    n = horizon(m, s)
    long = 10 * n
    test_x, test_y = curve_split(d, "test", s)
    fig, ax = report.figure(figsize=(7, 4))
    result = {"source": source(m), "rule_steps": n, "baseline_lr": s.baseline_lr,
              "converged_steps": s.converged_steps, "archs": []}  # fmt: skip
    rows = []
    for arch in metanca_train.all_archs(config):
        spec = metanca_train.net_spec(config, arch)
        adam = dict(learning_rate=s.baseline_lr, batch_size=int(config.batch_size), seed=s.seed)
        grown = evaluate.grow_curves(config, m["rule"], arch, keys, test_x, test_y, long)
        bp = evaluate.backprop_curves(
            spec, keys, d["train_x"], d["train_y"], test_x, test_y, long, **adam
        )
        _, rule_s = evaluate.grow_final_accuracy(
            config, m["rule"], arch, keys, test_x, test_y, n, with_seconds=True
        )
        adam_s = (
            evaluate.backprop_curves(
                spec, keys, d["train_x"], d["train_y"], test_x, test_y, long, record=False, **adam
            )["seconds"]
            / long
        )
        same_time = min(long, int(rule_s / adam_s))  # Adam steps in the rule's n steps' time
        g, b = grown["accuracy"].mean(0), bp["accuracy"].mean(0)
        result["archs"].append({
            "arch": list(arch), "metanca": g.tolist(), "backprop": b.tolist(),
            "rule_seconds": rule_s, "adam_seconds_per_step": adam_s,
            "adam_steps_in_rule_time": same_time,
        })  # fmt: skip
        row = (f"| {list(arch)} | {g[n]:.3f} | {b[n]:.3f} | {b[same_time]:.3f} ({same_time}) | "
               f"{g[long]:.3f} | {b[long]:.3f} |")  # fmt: skip
        if s.converged_steps:
            converged = evaluate.backprop_curves(
                spec, keys, d["train_x"], d["train_y"], test_x, test_y, s.converged_steps,
                record=False, **adam,
            )["accuracy"].mean()  # fmt: skip
            result["archs"][-1]["backprop_converged"] = float(converged)
            row += f" {converged:.3f} |"
        rows.append(row)
        line = ax.plot(g, label=f"MetaNCA {list(arch)}")[0]
        ax.plot(b, ls="--", color=line.get_color(), label=f"Adam {list(arch)}")
    ax.axvline(n, color="k", ls=":")
    ax.set_xlabel("step (rule step / Adam step); dotted: the trained horizon")
    ax.set_ylabel(f"test accuracy (mean of {s.nets} nets)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6, ncol=2)
    head = ["architecture", f"MetaNCA @ {n}", f"Adam @ {n}", "Adam @ equal time (steps)",
            f"MetaNCA @ {long}", f"Adam @ {long}"]  # fmt: skip
    if s.converged_steps:
        head.append(f"Adam @ {s.converged_steps}")
    table = (
        f"Grown by the rule vs trained by Adam (lr {s.baseline_lr}, batch "
        f"{config.batch_size or 'full'}) from the same inits: test accuracy, mean of "
        f"{s.nets} nets. Equal time: Adam after as many steps as it takes in the time the "
        f"rule takes for {n} steps ({s.nets} nets at once, compiled, no per-step metrics).\n\n"
        f"| {' | '.join(head)} |\n|{'---|' * len(head)}\n" + "\n".join(rows)
    )
    return report.Report("baseline", result, table, fig)


FLAT_TAIL = 0.1  # the last 10 % of the meta-steps run ...
FLAT_TOLERANCE = 0.02  # ... lose at most 2 % of the loss of the 10 % before them
MIN_POINTS = 10  # logged points each window needs for a verdict


def loss_flat(steps, loss, tail: float = FLAT_TAIL, tol: float = FLAT_TOLERANCE) -> dict:
    """Whether a meta-loss curve is flat: the mean loss over the last `tail` share of the steps
    run is at most `tol` (relative) below its mean over the `tail` before them. Returns both
    means, the relative drop, the verdict (None, undecided, with under `MIN_POINTS` logged
    points in a window) and the fewer of the two windows' point counts."""
    steps, loss = np.asarray(steps), np.asarray(loss)
    last = steps[-1]
    late = steps > last * (1 - tail)
    before = (steps > last * (1 - 2 * tail)) & ~late
    points = int(min(late.sum(), before.sum()))
    if points < MIN_POINTS:
        return {"flat": None, "late": None, "before": None, "drop": None, "points": points}
    late_mean, before_mean = float(loss[late].mean()), float(loss[before].mean())
    drop = (before_mean - late_mean) / before_mean
    return {"flat": bool(drop <= tol), "late": late_mean, "before": before_mean, "drop": drop,
            "points": points}  # fmt: skip


def run_training(m, d, s: Settings) -> report.Report:
    """The meta-loss curve of the workdir's run and whether it has flattened (`loss_flat`)."""
    del d, s
    path = Path(m["workdir"]) / workdir_lib.METRICS_FILE
    rows = [r for r in map(json.loads, path.read_text().splitlines()) if "train/loss" in r]
    if not rows:
        raise CheckpointError(f"{path} has no train/loss: was this workdir trained?")
    steps = np.array([r["step"] for r in rows])
    curves = {"all": [r["train/loss"] for r in rows]}
    for key in sorted(k for k in rows[-1] if k.startswith("train/loss_")):
        curves[key.removeprefix("train/loss_")] = [r.get(key, np.nan) for r in rows]
    verdict = loss_flat(steps, curves["all"])
    accuracy = np.array([r.get("train/accuracy", np.nan) for r in rows])
    tail = steps > steps[-1] * (1 - FLAT_TAIL)
    result = {"source": source(m), "steps": steps.tolist(), "loss": curves, **verdict,
              "tail": FLAT_TAIL, "tolerance": FLAT_TOLERANCE,
              "batch_accuracy_last_tail": float(np.nanmean(accuracy[tail]))}  # fmt: skip
    fig, ax = report.figure(figsize=(7, 4))
    window = max(1, len(steps) // 100)  # a running mean over 1 % of the points
    kernel = np.ones(window) / window
    for name, values in curves.items():
        smooth = np.convolve(values, kernel, mode="valid")
        label = "mean over architectures" if name == "all" else f"[{name.replace('-', ', ')}]"
        ax.plot(steps[window - 1 :], smooth, lw=2 if name == "all" else 0.8, label=label)
    ax.axvspan(steps[-1] * (1 - 2 * FLAT_TAIL), steps[-1] * (1 - FLAT_TAIL), color="0.9")
    ax.axvspan(steps[-1] * (1 - FLAT_TAIL), steps[-1], color="0.8")
    ax.set_yscale("log")
    ax.set_xlabel("meta-step")
    ax.set_ylabel(f"meta-loss (running mean of {window} logged points)")
    ax.legend(fontsize=7)
    if verdict["flat"] is None:
        cells = (f"- | - | - | too few logged points to say ({verdict['points']} a window, "
                 f"{MIN_POINTS} needed: log more often)")  # fmt: skip
    else:
        cells = (
            f"{verdict['before']:.4f} | {verdict['late']:.4f} | "
            f"{100 * verdict['drop']:.1f} % | {'yes' if verdict['flat'] else 'no'}"
        )
    table = (
        f"Meta-loss of {m['config'].name} @ {m['step']}: mean over the last "
        f"{FLAT_TAIL:.0%} of the meta-steps (dark band) against the {FLAT_TAIL:.0%} before "
        f"(light band); flat if it fell by at most {FLAT_TOLERANCE:.0%}.\n\n"
        "| before | last | drop | flat | batch accuracy, last |\n|---|---|---|---|---|\n"
        f"| {cells} | {result['batch_accuracy_last_tail']:.3f} |"
    )
    return report.Report("training", result, table, fig)


RUNS = {"accuracy": run_accuracy, "grid": run_grid, "stability": run_stability,
        "zero_out": run_zero_out, "baseline": run_baseline, "training": run_training}  # fmt: skip
EXPERIMENTS = tuple(RUNS)
