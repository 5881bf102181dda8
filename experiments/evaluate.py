"""Evaluate trained models like the article: per-step curves, the comparison table, plots.

    python -m experiments.evaluate --workdir=workdirs/l2_noise
    python -m experiments.evaluate --workdir=workdirs/ce --workdir=workdirs/l2 --out=eval_all
    python -m experiments.evaluate --workdir=DIR --variant=persist --num_digits=1000 --steps=100
    python -m experiments.evaluate --model=distill_l2_noise --out=eval_distill   # shipped weights

Writes into each workdir `eval_<variant>.json` (every curve and the summary), `eval_<variant>.png`
and `eval_<variant>.md` (for a pretrained --model, into `<out>/<name>/`); with several models also
a side-by-side plot and table in --out.
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import flags

from experiments import cli
from nca import data, evaluate, plots

_WORKDIRS = flags.DEFINE_multi_string("workdir", [], "Trained workdir(s) to evaluate.")
_MODELS = flags.DEFINE_multi_string(
    "model", [], "Shipped pretrained model(s), e.g. distill_l2_noise."
)
_VARIANT = flags.DEFINE_enum(
    "variant",
    "restart",
    evaluate.VARIANTS,
    "Second half: restart (the article's numbers) or persist (mutation).",
)
_NUM_DIGITS = flags.DEFINE_integer("num_digits", 10_000, "Test digits to use (from the start).")
_STEPS = flags.DEFINE_integer("steps", 200, "CA steps before (and after) the mutation.")
_BATCH = flags.DEFINE_integer("batch_size", 1000, "Digits per batch (the article: 1000).")
_IMPL = flags.DEFINE_string("impl", "auto", "CA implementation (nca/fast.py).")
_EXACT = flags.DEFINE_bool(
    "exact_randomness", False, "`alive`: draw the masks and noise that `conv` draws (slower)."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random masks, noise and resampling.")
_OUT = flags.DEFINE_string(
    "out", None, "Folder for the comparison of several models (and for pretrained models' results)."
)
_DATA = flags.DEFINE_string("mnist_dir", None, "MNIST folder (default: as training finds it).")


def evaluate_one(m: dict, images, labels) -> dict:
    curves = evaluate.evaluate_model(
        m["config"],
        m["params"],
        images,
        labels,
        num_steps=_STEPS.value,
        variant=_VARIANT.value,
        batch_size=_BATCH.value,
        seed=_SEED.value,
        impl=_IMPL.value,
        exact_randomness=_EXACT.value,
    )
    folder = m["folder"] or Path(_OUT.value or "eval_pretrained") / m["info"]["pretrained"]
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"eval_{_VARIANT.value}"
    result = {
        "model": m["label"],
        **m["info"],
        "variant": _VARIANT.value,
        "num_digits": len(images),
        "steps": _STEPS.value,
        "summary": evaluate.summary(curves, _STEPS.value),
        "curves": {k: v.tolist() for k, v in curves.items()},
    }
    stem.with_suffix(".json").write_text(json.dumps(result) + "\n")
    stem.with_suffix(".md").write_text(
        evaluate.markdown_table({m["label"]: result["summary"]}, _STEPS.value)
    )
    plots.plot_curves({m["label"]: curves}, _STEPS.value, stem.with_suffix(".png"))
    return result


def main(argv):
    cli.reject_positional(argv)
    models = cli.load_models(_WORKDIRS.value, _MODELS.value)
    images, labels = data.load_mnist("test", _DATA.value)
    images, labels = data.to_grey(images[: _NUM_DIGITS.value]), labels[: _NUM_DIGITS.value]
    results = {m["label"]: evaluate_one(m, images, labels) for m in models}
    table = evaluate.markdown_table({n: r["summary"] for n, r in results.items()}, _STEPS.value)
    print(f"{len(images)} test digits, {_STEPS.value} steps, variant {_VARIANT.value}:\n{table}")
    if len(results) > 1 or _OUT.value:
        out = Path(_OUT.value or "eval_comparison")
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"comparison_{_VARIANT.value}"
        stem.with_suffix(".md").write_text(table)
        plots.plot_curves(
            {n: r["curves"] for n, r in results.items()}, _STEPS.value, stem.with_suffix(".png")
        )
        print(f"comparison written to {stem}.md and .png")


if __name__ == "__main__":
    cli.run(main)
