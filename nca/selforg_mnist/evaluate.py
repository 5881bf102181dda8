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
- `update_magnitude`: mean |state_t - state_{t-1}| over alive cells and the 19 mutable channels.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from nca.selforg_mnist import fast, losses, model

VARIANTS = ("restart", "persist", "none")  # "none": only the first `num_steps` steps
CURVES = ("accuracy", "agreement", "state_magnitude", "update_magnitude")


def step_metrics(previous: jax.Array, state: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """Sums over a batch (so batches can be pooled) after one step from `previous` to `state`."""
    correct, alive = losses.correct_and_alive(state, labels)
    alive_mask = model.alive_mask(state).astype(state.dtype)
    return {
        "correct_cells": jnp.sum(correct),
        "alive_cells": jnp.sum(alive),
        "agreeing_images": jnp.sum(losses.agreement(state)),
        "state_abs": jnp.sum(jnp.abs(state[..., 1:]) * alive_mask),
        "update_abs": jnp.sum(jnp.abs(state[..., 1:] - previous[..., 1:]) * alive_mask),
    }


@functools.partial(
    jax.jit,
    static_argnames=("num_steps", "fire_rate", "noise_std", "impl", "variant", "exact_randomness"),
)
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
    variant: str = "restart",
    exact_randomness: bool = False,
) -> dict[str, jax.Array]:
    """One batch of the protocol: `num_steps` on `images` from zero state, then (unless variant
    is "none") `num_steps` on `new_images`, mutated into ("persist") or from zero state
    ("restart"). Per-step sums of `step_metrics`."""
    rollout = fast.get_rollout(impl, exact_randomness=exact_randomness)
    k_first, k_second = jax.random.split(key)

    def run(state, labels, key):
        observe = functools.partial(step_metrics, labels=labels)
        return rollout(params, state, key, num_steps, fire_rate, noise_std, observe)

    final, first = run(model.seed_state(images), labels, k_first)
    if variant == "none":
        return first
    second_start = (
        model.mutate(final, new_images) if variant == "persist" else model.seed_state(new_images)
    )
    _, second = run(second_start, new_labels, k_second)
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), first, second)


def evaluate(
    params: model.Params,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_steps: int = 200,
    fire_rate: float = 0.5,
    noise_std: float = 0.0,
    variant: str = "restart",
    batch_size: int = 1000,
    seed: int = 0,
    impl: str = "auto",
    exact_randomness: bool = False,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """The protocol over `images` (grey, `(N, 28, 28)`): curves of `CURVES`, `(2 * num_steps,)`
    (`(num_steps,)` for variant "none"); step `t` (1-based) is index `t - 1`, the mutation
    happens after index `num_steps - 1`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown evaluation variant {variant!r}; choose one of {VARIANTS}.")
    rng = np.random.default_rng(seed)
    totals = None
    num_batches = -(-len(images) // batch_size)
    for b in tqdm(range(num_batches), desc=f"evaluate ({variant})", disable=not progress):
        idx = np.arange(b * batch_size, min((b + 1) * batch_size, len(images)))
        # every digit becomes another digit of its batch (a random cyclic shift)
        other = idx[(np.arange(len(idx)) + rng.integers(1, max(len(idx), 2))) % len(idx)]
        sums = run_batch(
            params,
            images[idx],
            labels[idx],
            images[other],
            labels[other],
            jax.random.PRNGKey(seed * 100_003 + b),
            num_steps,
            fire_rate,
            noise_std,
            impl,
            variant,
            exact_randomness,
        )
        sums = jax.device_get(sums)
        totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
    alive = np.maximum(totals["alive_cells"], 1).astype(np.float64)
    return {
        "accuracy": totals["correct_cells"] / alive,
        "agreement": totals["agreeing_images"] / len(images),
        "state_magnitude": totals["state_abs"] / (alive * model.NUM_MUTABLE),
        "update_magnitude": totals["update_abs"] / (alive * model.NUM_MUTABLE),
    }


def evaluate_model(config, params: model.Params, images, labels, **kwargs):
    """`evaluate` with the fire rate and residual noise the model was trained with."""
    return evaluate(
        params, images, labels, fire_rate=config.model.fire_rate,
        noise_std=config.model.noise_std, **kwargs,
    )  # fmt: skip


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


def evaluation_report(
    config, params: model.Params, images, labels, label: str, info: dict, *, num_steps: int,
    variant: str = "restart", **kwargs,
):  # fmt: skip
    """`evaluate_model` on one model, as the report `eval_<variant>`: every curve and the summary
    (JSON), the table (Markdown) and the curves (figure). kwargs: `evaluate`'s options."""
    from nca import report
    from nca.selforg_mnist import plots

    curves = evaluate_model(config, params, images, labels, num_steps=num_steps, variant=variant,
                            **kwargs)  # fmt: skip
    result = {"model": label, **info, "variant": variant, "num_digits": len(images),
              "steps": num_steps, "summary": summary(curves, num_steps),
              "curves": {k: v.tolist() for k, v in curves.items()}}  # fmt: skip
    table = markdown_table({label: result["summary"]}, num_steps)
    return report.Report(
        f"eval_{variant}", result, table, plots.curves_figure({label: curves}, num_steps)
    )


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
                                variant="none", **kwargs)  # fmt: skip
        rows[step] = summary(curves, num_steps)
        log(f"{workdir} at {step}: accuracy {rows[step]['accuracy_final']:.1f}, agreement "
            f"{rows[step]['agreement_final']:.1f} at {num_steps} CA steps")  # fmt: skip
    rows = dict(sorted(rows.items()))
    table = markdown_table({f"{step:,} iterations": s for step, s in rows.items()}, num_steps)
    data = {**settings, "rows": {str(s): row for s, row in rows.items()}}
    return report.Report(
        "training_length", data, table, plots.training_length_figure(rows, num_steps)
    )
