"""The article's evaluation protocol and its metrics, per CA step.

Protocol (the article's notebook): the test set in contiguous batches of 1000 digits; each batch
runs `steps` steps from zero state with metrics after every step; then every digit is turned into
another digit of its batch and runs `steps` more. Two variants of that second half:

- `restart`: what the article's published evaluation did: the second half starts again from zero
  state, on the resampled digits;
- `persist`: a true mutation (`model.mutate`), keeping the evolved states where the new digit is
  alive, as the article's videos and demo do.

Metrics per step, pooled over all batches:
- `accuracy`: average cell accuracy, correct alive cells / all alive cells;
- `agreement`: total agreement, share of digits whose counted alive cells all carry one label;
- `state_magnitude`: mean |state| over alive cells and the 19 mutable channels;
- `update_magnitude`: mean |state_t - state_{t-1}| over alive cells and the 19 mutable channels;
- `label_changes`: share of alive cells whose vote changed in this step (the article's flicker);
- `no_vote`: share of digits with no counted cell (every alive cell's class values negative, or
  no alive cell). They never agree here; the article's notebook counts them as agreeing, so its
  agreement is `agreement + no_vote`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from nca.selforg_mnist import fast, losses, model

VARIANTS = ("restart", "persist", "none")  # "none": only the first `num_steps` steps
CURVES = (
    "accuracy",
    "agreement",
    "state_magnitude",
    "update_magnitude",
    "label_changes",
    "no_vote",
)


def step_metrics(previous: jax.Array, state: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """Sums over a batch (so batches can be pooled) after one step from `previous` to `state`."""
    correct, alive = losses.correct_and_alive(state, labels)
    alive_mask = model.alive_mask(state)
    alive_f = alive_mask.astype(state.dtype)
    changed = (model.cell_labels(state) != model.cell_labels(previous)) & alive_mask[..., 0]
    return {
        "correct_cells": jnp.sum(correct),
        "alive_cells": jnp.sum(alive),
        "agreeing_images": jnp.sum(losses.agreement(state)),
        "state_abs": jnp.sum(jnp.abs(state[..., 1:]) * alive_f),
        "update_abs": jnp.sum(jnp.abs(state[..., 1:] - previous[..., 1:]) * alive_f),
        "changed_cells": jnp.sum(changed),
        "no_vote_images": jnp.sum(jnp.sum(losses.votes_per_label(state), axis=-1) == 0),
    }


def row_metrics(
    previous: jax.Array, rows: jax.Array, image: jax.Array, cell: jax.Array, labels: jax.Array
) -> dict[str, jax.Array]:
    """`step_metrics` on the `table` path's rows of alive cells (`fast.table_rollout`'s
    `observe_rows`): previous, rows `(R, 20)` before and after the step (grey 0), image `(R,)`
    the image of each row (`B`, out of range, on unused rows); `cell` is not needed here.
    Unused rows are zero throughout, so the magnitudes sum every row of every channel."""
    del cell
    num_images = labels.shape[0]
    in_use = image < num_images
    votes = model.cell_labels(rows)
    counted = in_use & jnp.any(model.class_channels(rows) >= 0, axis=-1)
    one_hot = jax.nn.one_hot(votes, model.NUM_CLASSES) * counted[:, None]
    per_label = jax.ops.segment_sum(one_hot, image, num_images + 1, indices_are_sorted=True)
    num_counted = per_label.sum(-1)
    agree = (per_label.max(-1) == num_counted) & (num_counted > 0)
    correct = votes == labels.at[image].get(mode="fill", fill_value=-1)  # False if unused
    return {
        "correct_cells": jnp.sum(correct),
        "alive_cells": jnp.sum(in_use),
        "agreeing_images": jnp.sum(agree[:num_images]),
        "state_abs": jnp.sum(jnp.abs(rows)),
        "update_abs": jnp.sum(jnp.abs(rows - previous)),
        "changed_cells": jnp.sum((votes != model.cell_labels(previous)) & in_use),
        "no_vote_images": jnp.sum(num_counted[:num_images] == 0),
    }


@functools.partial(
    jax.jit,
    static_argnames=("num_steps", "fire_rate", "noise_std", "impl", "variants", "exact_randomness",
                     "table_sizes"),
)  # fmt: skip
def run_batch(
    params: model.Params,
    images: jax.Array,
    labels: jax.Array,
    new_images: jax.Array,
    new_labels: jax.Array,
    key: jax.Array,
    num_steps: int,
    fire_rate: float = 0.5,
    noise_std: float = 0.0,
    impl: str = "auto",
    variants: tuple[str, ...] = ("restart",),
    exact_randomness: bool = False,
    table_sizes: tuple[int, ...] | None = None,
) -> dict[str, dict[str, jax.Array]]:
    """One batch of the protocol, per variant: `num_steps` on `images` from zero state (run once,
    shared by the variants), then (unless the variant is "none") `num_steps` on `new_images`,
    mutated into ("persist") or from zero state ("restart"). Per-step sums of `step_metrics`.
    table_sizes: `fast.table_rollout`'s `sizes` (`evaluate_variants` compiles the ones its batch
    picks)."""
    # every state here is `seed_state`'s or `mutate`'s: dead cells' mutable channels are 0
    rollout = fast.get_rollout(impl, exact_randomness=exact_randomness, dead_cells_zero=True,
                               sizes=table_sizes)  # fmt: skip
    k_first, k_second = jax.random.split(key)

    def run(state, labels, key):
        observe = functools.partial(step_metrics, labels=labels)
        # the table path computes the same metrics on its rows, without the grid
        rows = functools.partial(row_metrics, labels=labels)
        args = (num_steps, fire_rate, noise_std, observe)
        return rollout(params, state, key, *args, observe_rows=rows)

    final, first = run(model.seed_state(images), labels, k_first)
    sums = {}
    for variant in variants:
        if variant == "none":
            sums[variant] = first
            continue
        if variant == "persist":
            start = model.mutate(final, new_images)
        else:
            start = model.seed_state(new_images)
        _, second = run(start, new_labels, k_second)
        sums[variant] = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), first, second)
    return sums


def evaluate(params: model.Params, images: np.ndarray, labels: np.ndarray, *,
             variant: str = "restart", **kwargs) -> dict[str, np.ndarray]:  # fmt: skip
    """The protocol over `images` (grey, `(N, 28, 28)`): curves of `CURVES`, `(2 * num_steps,)`
    (`(num_steps,)` for variant "none"); step `t` (1-based) is index `t - 1`, the mutation
    happens after index `num_steps - 1`. kwargs: `evaluate_variants`'."""
    return evaluate_variants(params, images, labels, variants=(variant,), **kwargs)[variant]


def sum_over_batches(run, num_items: int, batch_size: int, *, devices=None, desc=None):
    """The sum over the contiguous batches `idx` (index arrays) of `num_items` of
    `run(b, idx, device)`, batch `b`'s pytree of sums computed on `device`. The batches run side by
    side on `devices` (default: every local device; on a CPU one per core with
    `jax_num_cpu_devices`) and are summed in batch order, so with a key per batch the totals do
    not depend on the number of devices. `desc`: the progress bar's title (None: no bar)."""
    devices = devices or jax.local_devices()
    num_batches = -(-num_items // batch_size)
    totals = None
    with tqdm(total=num_batches, desc=desc, disable=desc is None) as bar:
        for first in range(0, num_batches, len(devices)):
            pending = [  # dispatched at once, so the devices run their batches concurrently
                run(b, np.arange(b * batch_size, min((b + 1) * batch_size, num_items)), device)
                for b, device in zip(range(first, num_batches), devices, strict=False)
            ]
            for sums in jax.device_get(pending):
                totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
            bar.update(len(pending))
    return totals


def evaluate_variants(
    params: model.Params,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    variants: tuple[str, ...] = ("restart", "persist"),
    num_steps: int = 200,
    fire_rate: float = 0.5,
    noise_std: float = 0.0,
    batch_size: int = 1000,
    seed: int = 0,
    impl: str = "auto",
    exact_randomness: bool = False,
    progress: bool = True,
    devices: list[jax.Device] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """`evaluate`'s curves for each of `variants`, in one pass: the first `num_steps` steps run
    once for all of them (the same numbers as evaluating each variant on its own). The batches
    run side by side on `devices` (`sum_over_batches`), with the same numbers on any number."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown evaluation variant(s) {unknown}; choose from {VARIANTS}.")
    variants = tuple(dict.fromkeys(variants))
    rng = np.random.default_rng(seed)

    def run(b, idx, device):
        # every digit becomes another digit of its batch (a random cyclic shift)
        other = idx[(np.arange(len(idx)) + rng.integers(1, max(len(idx), 2))) % len(idx)]
        arrays = (params, images[idx], labels[idx], images[other], labels[other],
                  jax.random.PRNGKey(seed * 100_003 + b))  # fmt: skip
        # the table size the batch's rollouts pick (the second's digits are the first's, shifted):
        # only it compiles, the same numbers
        sizes = fast.table_size_of(images[idx])
        static = (num_steps, fire_rate, noise_std, impl, variants, exact_randomness, sizes)
        return run_batch(*jax.device_put(arrays, device), *static)

    desc = f"evaluate ({', '.join(variants)})" if progress else None
    totals = sum_over_batches(run, len(images), batch_size, devices=devices, desc=desc)
    return {variant: _curves(t, len(images)) for variant, t in totals.items()}


def _curves(totals: dict[str, np.ndarray], num_images: int) -> dict[str, np.ndarray]:
    alive = np.maximum(totals["alive_cells"], 1).astype(np.float64)
    return {
        "accuracy": totals["correct_cells"] / alive,
        "agreement": totals["agreeing_images"] / num_images,
        "state_magnitude": totals["state_abs"] / (alive * model.NUM_MUTABLE),
        "update_magnitude": totals["update_abs"] / (alive * model.NUM_MUTABLE),
        "label_changes": totals["changed_cells"] / alive,
        "no_vote": totals["no_vote_images"] / num_images,
    }


def evaluate_model(config, params: model.Params, images, labels, **kwargs):
    """`evaluate_variants` (`{variant: curves}`) with the fire rate and residual noise the model
    was trained with."""
    kwargs.update(fire_rate=config.model.fire_rate, noise_std=config.model.noise_std)
    return evaluate_variants(params, images, labels, **kwargs)


def summary(curves: dict[str, np.ndarray], num_steps: int) -> dict[str, float]:
    """The article's table columns over the first `num_steps` steps (percent; steps 1-based)."""
    acc, agree = curves["accuracy"][:num_steps], curves["agreement"][:num_steps]
    return {
        "top_accuracy": 100 * float(acc.max()),
        "top_accuracy_step": int(acc.argmax()) + 1,
        "accuracy_final": 100 * float(acc[-1]),
        "top_agreement": 100 * float(agree.max()),
        "top_agreement_step": int(agree.argmax()) + 1,
        "agreement_final": 100 * float(agree[-1]),
    }


def summary_scalars(summary: dict[str, float], num_steps: int, variant: str) -> dict[str, float]:
    """`summary`'s numbers as TensorBoard scalars, e.g. `eval/restart/accuracy_at_200`."""
    renamed = {"accuracy_final": f"accuracy_at_{num_steps}",
               "agreement_final": f"agreement_at_{num_steps}"}  # fmt: skip
    return {f"eval/{variant}/{renamed.get(k, k)}": float(v) for k, v in summary.items()}


def markdown_table(rows: dict[str, dict[str, float]], num_steps: int) -> str:
    """One row per model, the article's columns."""
    lines = [
        f"| model | top accuracy | accuracy at {num_steps} | top agreement | "
        f"agreement at {num_steps} |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, s in rows.items():
        lines.append(
            f"| {name} | {s['top_accuracy']:.1f} at {s['top_accuracy_step']} | "
            f"{s['accuracy_final']:.1f} | {s['top_agreement']:.1f} at "
            f"{s['top_agreement_step']} | {s['agreement_final']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def evaluation_reports(
    config, params: model.Params, images, labels, label: str, info: dict, *, num_steps: int,
    variants: tuple[str, ...] = ("restart",), **kwargs,
):  # fmt: skip
    """`evaluate_model` on one model, per variant the report `eval_<variant>`: every curve and
    the summary (JSON), the table (Markdown) and the curves (figure); all variants in one pass.
    Returns `{variant: Report}`. kwargs: `evaluate`'s options."""
    from nca import report
    from nca.selforg_mnist import plots

    runs = evaluate_model(config, params, images, labels, num_steps=num_steps, variants=variants,
                          **kwargs)  # fmt: skip
    reports = {}
    for variant, curves in runs.items():
        result = {"model": label, **info, "variant": variant, "num_digits": len(images),
                  "steps": num_steps, "summary": summary(curves, num_steps),
                  "curves": {k: v.tolist() for k, v in curves.items()}}  # fmt: skip
        table = markdown_table({label: result["summary"]}, num_steps)
        figure = plots.curves_figure({label: curves}, num_steps)
        reports[variant] = report.Report(f"eval_{variant}", result, table, figure)
    return reports


def training_length_report(
    workdir, steps, images, labels, *, num_steps: int = 200, earlier: dict | None = None,
    log=print, **kwargs,
):  # fmt: skip
    """The model of `workdir` at each checkpoint of `steps` (training iterations), evaluated on
    `images` for `num_steps` CA steps from the seed (the first half of the protocol): accuracy
    and agreement at `num_steps`, and their tops, against iterations, as the report
    `training_length`. `earlier`: the data of such a report made with the same settings; its
    rows are kept, not re-run. kwargs: `evaluate`'s options."""
    from nca import checkpoint, report
    from nca.selforg_mnist import plots

    settings = {"workdir": str(workdir), "num_digits": len(images), "steps": num_steps,
                "seed": kwargs.get("seed", 0)}  # fmt: skip
    rows = {}
    if earlier is not None and {k: earlier.get(k) for k in settings} == settings:
        rows = {int(s): row for s, row in earlier["rows"].items()}
    for step in sorted(set(steps) - set(rows)):
        config, params, _ = checkpoint.load_params(workdir, step, log=log)
        curves = evaluate_model(config, params, images, labels, num_steps=num_steps,
                                variants=("none",), **kwargs)["none"]  # fmt: skip
        rows[step] = summary(curves, num_steps)
        log(f"{workdir} at {step}: accuracy {rows[step]['accuracy_final']:.1f}, agreement "
            f"{rows[step]['agreement_final']:.1f} at {num_steps} CA steps")  # fmt: skip
    rows = dict(sorted(rows.items()))
    table = markdown_table({f"{step:,} iterations": s for step, s in rows.items()}, num_steps)
    data = {**settings, "rows": {str(s): row for s, row in rows.items()}}
    return report.Report(
        "training_length", data, table, plots.training_length_figure(rows, num_steps)
    )


# --------------------------------------------------------------------------------------------
# The study: configs over seeds

# The article's table (restart protocol, 10,000 test digits, 200 steps; `summary`'s fields).
ARTICLE = {
    "ce": {"top_accuracy": 96.2, "top_accuracy_step": 80, "accuracy_final": 95.3,
           "top_agreement": 77.9, "top_agreement_step": 80, "agreement_final": 66.2},
    "l2": {"top_accuracy": 95.0, "top_accuracy_step": 95, "accuracy_final": 94.7,
           "top_agreement": 85.5, "top_agreement_step": 175, "agreement_final": 85.2},
    "l2_noise": {"top_accuracy": 95.4, "top_accuracy_step": 65, "accuracy_final": 95.3,
                 "top_agreement": 88.2, "top_agreement_step": 190, "agreement_final": 88.1},
}  # fmt: skip
# Each variant's study columns (`study_row`'s fields; label; format). `persist`'s first
# `steps` steps are the restart protocol's (one pass), so its table shows what follows them.
FIRST_HALF = (
    ("top_accuracy", "top accuracy", ".1f"),
    ("accuracy_final", "accuracy at {s}", ".1f"),
    ("top_agreement", "top agreement", ".1f"),
    ("agreement_final", "agreement at {s}", ".1f"),
)
SECOND_HALF = (
    ("accuracy_end", "accuracy at {e}", ".1f"),
    ("agreement_end", "agreement at {e}", ".1f"),
)
MAGNITUDES = (
    ("magnitude_10", "state magnitude at 10", ".2f"),
    ("magnitude_final", "at {s}", ".2f"),
)
STUDY_COLUMNS = {
    "restart": (*FIRST_HALF, *SECOND_HALF, *MAGNITUDES),
    "none": (*FIRST_HALF, *MAGNITUDES),
    "persist": (("accuracy_mutated", "accuracy at {s1}, just after the mutation", ".1f"),
                *SECOND_HALF,
                ("magnitude_final", "state magnitude at {s}", ".2f"),
                ("magnitude_end", "at {e}", ".2f")),
}  # fmt: skip
STEP_OF = {"top_accuracy": "top_accuracy_step", "top_agreement": "top_agreement_step"}


def study_row(result: dict) -> dict[str, float]:
    """An `eval_<variant>.json`'s summary (the first `steps` steps); accuracy and agreement at
    its last step (`2 * steps`: after the restart or the mutation; percent) and at the first
    step after `steps`; the mean state magnitude of alive cells at step 10, at `steps` (the
    article's boundedness figure) and at the last step."""
    curves, steps = result["curves"], result["steps"]
    magnitude, accuracy = np.asarray(curves["state_magnitude"]), np.asarray(curves["accuracy"])
    return {**result["summary"], "accuracy_end": 100 * float(accuracy[-1]),
            "agreement_end": 100 * float(curves["agreement"][-1]),
            "accuracy_mutated": 100 * float(accuracy[min(steps, len(accuracy) - 1)]),
            "magnitude_10": float(magnitude[min(10, steps) - 1]),
            "magnitude_final": float(magnitude[steps - 1]),
            "magnitude_end": float(magnitude[-1])}  # fmt: skip


def study_report(results: list[dict]):
    """Evaluations of several seeds of several configs (`eval_<variant>.json` dicts with their
    `config` and `seed`, one `steps` and `num_digits`), as the report `study`: per variant, the
    mean ± standard deviation (over seeds, ddof 1) of each config (the variant's
    `STUDY_COLUMNS`) next to the article's rows (restart), the per-seed rows, and the mean curves
    with their min-max band (figure)."""
    from nca import report
    from nca.selforg_mnist import plots

    steps = results[0]["steps"]
    end = max(len(r["curves"]["accuracy"]) for r in results)
    groups: dict[str, dict[str, list[dict]]] = {}
    for r in sorted(results, key=lambda r: (VARIANTS.index(r["variant"]), r["config"], r["seed"])):
        groups.setdefault(r["variant"], {}).setdefault(r["config"], []).append(r)
    sections, data = [], {}
    for variant, configs in groups.items():
        columns = STUDY_COLUMNS[variant]
        fields = [field for field, _, _ in columns]
        header = [label.format(s=steps, s1=steps + 1, e=end) for _, label, _ in columns]
        rows, per_seed, data[variant] = [], [], {}
        if variant == "restart":
            for name, s in ARTICLE.items():
                if name in configs:
                    cells = [f"{s[f]:{fmt}}" if f in s else "" for f, _, fmt in columns]
                    rows.append([f"article, {name}", "", *cells])
        for name, runs in configs.items():
            seed_rows = [study_row(r) for r in runs]
            values = np.array([[row[f] for f in fields] for row in seed_rows])
            mean = values.mean(0)
            std = values.std(0, ddof=1) if len(runs) > 1 else np.zeros_like(mean)
            data[variant][name] = {
                "seeds": [r["seed"] for r in runs],
                "mean": dict(zip(fields, mean.tolist(), strict=True)),
                "std": dict(zip(fields, std.tolist(), strict=True)),
                "runs": {str(r["seed"]): row for r, row in zip(runs, seed_rows, strict=True)},
            }
            cells = [f"{m:{fmt}} ± {d:{fmt}}" if len(runs) > 1 and fmt == ".1f" else f"{m:{fmt}}"
                     for m, d, (_, _, fmt) in zip(mean, std, columns, strict=True)]  # fmt: skip
            rows.append([f"ours, {name}", ",".join(str(r["seed"]) for r in runs), *cells])
            for r, s in zip(runs, seed_rows, strict=True):
                per_seed.append([f"{name} seed {r['seed']}", *[
                    f"{s[f]:{fmt}}" + (f" at {s[STEP_OF[f]]}" if f in STEP_OF else "")
                    for f, _, fmt in columns]])  # fmt: skip
        note = (f"Its first {steps} steps are the restart protocol's (one pass); the table shows "
                f"what follows the mutation.\n\n" if variant == "persist" else "")  # fmt: skip
        sections.append(
            f"### {variant}\n\n{note}" + report.table(["model", "seeds", *header], rows)
            + "\n\nPer seed:\n\n" + report.table(["run", *header], per_seed) + "\n"
        )  # fmt: skip
    digits = sorted({r["num_digits"] for r in results})
    table = (f"{'/'.join(map(str, digits))} test digits, {steps} steps; mean ± std over seeds "
             f"(ddof 1)\n\n" + "\n".join(sections))  # fmt: skip
    figure = plots.study_figure(
        {v: {n: [r["curves"] for r in runs] for n, runs in c.items()} for v, c in groups.items()},
        steps,
    )
    return report.Report("study", data, table, figure)
