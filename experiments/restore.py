"""Issue 8's restoration experiment on trained workdirs: one table, JSON and a figure.

    python -m experiments.restore --classifier=/root/runs/classifier \
        --workdir=/root/runs/hybrid --workdir=/root/runs/ca_only \
        --workdir=/root/runs/autoencoder --out=docs/hybrid

Full 10,000-digit test set, 70 % of each digit's pixels hidden by fixed-seed masks (exactly 549 of
784); PSNR (per-image mean, peak 1.0, all pixels, no paste-back; also hidden pixels only and
pooled); digit-ID of the frozen classifier on clean / masked / restored digits; the damage test
(30 % of lattice cells zeroed after step 5 of 10); FLOPs per sample (XLA's cost analysis beside
the analytic count); throughput on this machine; trivial baselines (masked input, mean fill);
the blog's numbers beside ours; report-only noise valleys. Several workdirs of one model (seeds)
are averaged. Writes `<out>/restore.json`, `restore.md`, `restore.png`, `restore_panels.npz`
(the figures' images, which a later `--earlier` draws again: each model's row stays the one of
its first evaluated run), and for runs trained with held-out validation digits (`:blog_budget`)
`validation.{md,json,png}`: their validation PSNR against steps and whether each converged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from absl import flags

from experiments import cli
from nca import checkpoint, report, tensorboard
from nca.hybrid import evaluate, masking, summary

_WORKDIRS = flags.DEFINE_multi_string("workdir", [], "Trained restorer workdir(s).")
_CLASSIFIER = flags.DEFINE_string("classifier", None, "Workdir of the digit-ID classifier.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: the first workdir).")
_NUM = flags.DEFINE_integer("num_digits", 10_000, "Test digits (from the start).", lower_bound=1,
                            upper_bound=cli.MNIST_TEST_DIGITS)  # fmt: skip
_MASK_SEED = flags.DEFINE_integer("mask_seed", masking.TEST_MASK_SEED, "Seed of the test masks.",
                                  lower_bound=0)  # fmt: skip
_BATCH = flags.DEFINE_integer("batch_size", 500, "Digits per forward batch.", lower_bound=1)
_DATA = flags.DEFINE_string("mnist_dir", None, "MNIST folder (default: as training finds it).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Progress bars.")
_EARLIER = flags.DEFINE_string(
    "earlier", None, "An earlier restore.json whose runs (workdirs gone) join this table's seeds; "
    "its validation.json beside it joins the curves.")  # fmt: skip
flags.mark_flags_as_required(["classifier"])
PANELS = "restore_panels.npz"  # the figures' images, for a later --earlier evaluation


def main(argv):
    cli.reject_positional(argv)
    if not _WORKDIRS.value:
        raise cli.InputError("give at least one --workdir=DIR of a trained restorer.")
    models = []
    for wd in _WORKDIRS.value:
        config, params, step = checkpoint.load_params(wd)
        if config.model.get("kind") != "hybrid" or config.model.arch == "classifier":
            raise cli.InputError(f"{wd} holds no restorer of the hybrid family (issue 8).")
        models.append((wd, config, params, step))
    cls_config, cls_params, cls_step = checkpoint.load_params(_CLASSIFIER.value)
    if cls_config.model.get("arch") != "classifier":
        raise cli.InputError(f"--classifier={_CLASSIFIER.value} holds no digit-ID classifier.")
    run = evaluate.run_experiment(
        models,
        (_CLASSIFIER.value, cls_params, cls_step),
        num_digits=_NUM.value,
        mask_seed=_MASK_SEED.value,
        batch_size=_BATCH.value,
        mnist_dir=_DATA.value,
        progress=_PROGRESS.value,
    )
    earlier_curves = {}
    if _EARLIER.value:
        earlier = Path(_EARLIER.value)
        if not earlier.is_file():
            raise cli.InputError(f"--earlier={earlier} is no file; give an earlier restore.json.")
        try:
            run["result"] = evaluate.with_earlier(run["result"], json.loads(earlier.read_text()),
                                                  str(earlier))  # fmt: skip
        except ValueError as e:
            raise cli.InputError(str(e)) from e
        curves = earlier.with_name("validation.json")
        earlier_curves = json.loads(curves.read_text()) if curves.is_file() else {}
        panels = earlier.with_name(PANELS)
        if panels.is_file():
            with np.load(panels) as arrays:
                try:
                    run = summary.with_earlier_panels(run, dict(arrays), str(panels))
                except ValueError as e:
                    raise cli.InputError(str(e)) from e
    validation = summary.validation_report(_WORKDIRS.value, earlier_curves)  # validated runs
    out = Path(_OUT.value or _WORKDIRS.value[0])
    for result in [*summary.reports(run), *([validation] if validation else [])]:
        report.write(out, result, dpi=90, tight=False, indent=1)
    np.savez_compressed(out / PANELS, **summary.panel_arrays(run))
    for row in run["result"]["models"]:  # each restorer's scores next to its training curves
        if "earlier" in row:
            continue
        tensorboard.write_summary(row["workdir"], row["checkpoint_step"], summary_scalars(row))
    return run["result"]


def summary_scalars(row: dict) -> dict[str, float]:
    """One restorer's scores (a `restore.json` `models` row) as TensorBoard scalars."""
    keys = ("psnr", "psnr_hidden", "psnr_pooled", "digit_id", "throughput_per_s")
    scores = {k: row[k] for k in keys}
    if "damaged" in row:  # restorers with a CA
        scores.update({f"damaged_{k}": row["damaged"][k] for k in ("psnr", "digit_id")})
    return {f"eval/restore/{k}": float(v) for k, v in scores.items()}


if __name__ == "__main__":
    cli.run(main)
