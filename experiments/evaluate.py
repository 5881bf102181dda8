"""Evaluate trained models like the article: per-step curves, the comparison table, plots.

    python -m experiments.evaluate --workdir=workdirs/l2_noise
    python -m experiments.evaluate --workdir=workdirs/ce --workdir=workdirs/l2 --out=eval_all
    python -m experiments.evaluate --workdir=DIR --variant=persist --num_digits=1000 --steps=100
    python -m experiments.evaluate --workdir=DIR --variant=restart --variant=persist  # one pass
    python -m experiments.evaluate --workdir=DIR --checkpoint_step=50000  # an older checkpoint
    python -m experiments.evaluate --model=distill_l2_noise --out=eval_distill   # shipped weights
    python -m experiments.evaluate --result=workdirs/ce/eval_restart.json \
        --result=workdirs/l2_noise/eval_restart.json --out=eval_all   # compare earlier results

Writes into each workdir `eval_<variant>.json` (every curve and the summary), `eval_<variant>.png`
and `eval_<variant>.md` (for a pretrained --model, into `<out>/<name>/`); with several models also
a side-by-side plot and table in --out. `--result` adds an earlier `eval_<variant>.json` to that
comparison without evaluating it again. Several `--variant`s share the first `--steps` steps (one
pass: 3/4 of the time of two runs, the same numbers). `--checkpoint_step=N` evaluates each
workdir's checkpoint of training iteration N and names its files `eval_<variant>_step<N>`, so
the newest checkpoint's `eval_<variant>` files stay.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from absl import flags

from experiments import cli
from nca import data, report, tensorboard
from nca.selforg_mnist import evaluate, plots

_WORKDIRS = flags.DEFINE_multi_string("workdir", [], "Trained workdir(s) to evaluate.")
_MODELS = flags.DEFINE_multi_string(
    "model", [], "Shipped pretrained model(s), e.g. distill_l2_noise."
)
_VARIANT = flags.DEFINE_multi_enum(
    "variant",
    ["restart"],
    evaluate.VARIANTS,
    "Second half: restart (the article's numbers) or persist (mutation); repeat for several.",
)
_NUM_DIGITS = flags.DEFINE_integer("num_digits", 10_000, "Test digits to use (from the start).",
                                   lower_bound=1, upper_bound=cli.MNIST_TEST_DIGITS)  # fmt: skip
_STEPS = flags.DEFINE_integer("steps", 200, "CA steps before (and after) the mutation.",
                              lower_bound=1)  # fmt: skip
_BATCH = flags.DEFINE_integer("batch_size", 1000, "Digits per batch (the article: 1000).",
                              lower_bound=1)  # fmt: skip
_CHECKPOINT = flags.DEFINE_integer(
    "checkpoint_step",
    None,
    "Evaluate each --workdir's checkpoint of this training iteration (default: its newest).",
    lower_bound=0,
)
_IMPL = flags.DEFINE_string("impl", "auto", "CA implementation (nca/selforg_mnist/fast.py).")
_EXACT = flags.DEFINE_bool(
    "exact_randomness", False, "`alive`: draw the masks and noise that `conv` draws (slower)."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random masks, noise and resampling.",
                             lower_bound=0)  # fmt: skip
_OUT = flags.DEFINE_string(
    "out", None, "Folder for the comparison of several models (and for pretrained models' results)."
)
_DATA = flags.DEFINE_string("mnist_dir", None, "MNIST folder (default: as training finds it).")
_RESULTS = flags.DEFINE_multi_string(
    "result", [], "Earlier eval_<variant>.json file(s) to add to the comparison (not re-run)."
)


def load_result(path: str, variants: tuple[str, ...], steps: int) -> dict:
    """An `eval_<variant>.json` written by this command, checked against `variants` and
    `steps`."""
    try:
        result = json.loads(Path(path).read_text())
        label, saved = result["model"], (result["variant"], result["steps"])
        result["curves"] = {k: np.asarray(v) for k, v in result["curves"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise cli.InputError(f"--result={path} is not a readable eval_<variant>.json ({e}).") from e
    if saved[0] not in variants or saved[1] != steps:
        raise cli.InputError(
            f"--result={path} ({label}) was evaluated with --variant={saved[0]} "
            f"--steps={saved[1]}; compare it with the same flags."
        )
    return result


def main(argv):
    cli.reject_positional(argv)
    variants, steps, quiet = tuple(dict.fromkeys(_VARIANT.value)), _STEPS.value, lambda *_: None
    earlier = [load_result(path, variants, steps) for path in _RESULTS.value]
    results = {v: {} for v in variants}
    if _CHECKPOINT.value is not None and _MODELS.value:
        raise cli.InputError("--checkpoint_step applies to --workdir only, not to --model.")
    if _WORKDIRS.value or _MODELS.value or not earlier:
        models = cli.load_models(_WORKDIRS.value, _MODELS.value, _CHECKPOINT.value)
        images, labels = data.load_mnist("test", _DATA.value)
        images, labels = data.to_grey(images[: _NUM_DIGITS.value]), labels[: _NUM_DIGITS.value]
        for m in models:
            reports = evaluate.evaluation_reports(
                m["config"], m["params"], images, labels, m["label"], m["info"], num_steps=steps,
                variants=variants, batch_size=_BATCH.value, seed=_SEED.value, impl=_IMPL.value,
                exact_randomness=_EXACT.value,
            )  # fmt: skip
            folder = m["folder"] or Path(_OUT.value or "eval_pretrained") / m["info"]["pretrained"]
            for variant, result in reports.items():
                if _CHECKPOINT.value is not None:
                    result.name += f"_step{_CHECKPOINT.value}"
                report.write(folder, result, log=quiet, dpi=110, tight=False, indent=None)
                results[variant][m["label"]] = result.data
                if m["folder"] is not None:  # a workdir: next to its training curves
                    scalars = evaluate.summary_scalars(result.data["summary"], steps, variant)
                    tensorboard.write_summary(m["folder"], m["info"]["checkpoint_step"], scalars)
    for r in earlier:
        results[r["variant"]][r["model"]] = r
    for variant, runs in results.items():
        if runs:
            compare(variant, runs, steps, quiet)


def compare(variant: str, results: dict[str, dict], steps: int, quiet) -> None:
    """Prints the table of `results` (one variant); with several (or --out) writes the
    side-by-side table and plot `comparison_<variant>`."""
    table = evaluate.markdown_table({n: r["summary"] for n, r in results.items()}, steps)
    digits = sorted({r["num_digits"] for r in results.values()})
    print(f"{'/'.join(map(str, digits))} test digits, {steps} steps, variant {variant}:\n{table}")
    if len(results) > 1 or _OUT.value:
        out = Path(_OUT.value or "eval_comparison")
        figure = plots.curves_figure({n: r["curves"] for n, r in results.items()}, steps)
        report.write(out, report.Report(f"comparison_{variant}", None, table, figure), log=quiet,
                     dpi=110, tight=False)  # fmt: skip
        print(f"comparison written to {out / f'comparison_{variant}'}.md and .png")


if __name__ == "__main__":
    cli.run(main)
