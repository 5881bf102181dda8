"""Robustness of a trained CA to out-of-distribution digits (figures + JSON into --out).

    python -m experiments.robustness --model=distill_l2_noise --out=robustness
    python -m experiments.robustness --workdir=workdirs/l2_noise --num_digits=300

- Scale: test digits resized from 0.5x to 2x, centred on a 56x56 grid.
- Stretch: horizontal or vertical stretch from 0.5x to 1.75x.
- Stroke width: strokes eroded or dilated (3x3 grey morphology) 1-2 times.
  For each: average cell accuracy and total agreement after --steps steps (plot + JSON).
- Chimeras: the left half of one test digit joined to the right half of another (and top /
  bottom): which label wins (the first half's, the second half's, another), the agreement, and
  how often cells still flip label in the last half of the steps; a video of a few.
"""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v2 as imageio
import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from tqdm import tqdm  # noqa: E402

from experiments import cli  # noqa: E402
from nca import data
from nca.selforg_mnist import render, robustness  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained workdir.")
_MODEL = flags.DEFINE_string("model", None, "Or a shipped pretrained model, e.g. distill_l2_noise.")
_OUT = flags.DEFINE_string("out", "robustness", "Output folder.")
_NUM_DIGITS = flags.DEFINE_integer("num_digits", 1000, "Test digits per condition.")
_STEPS = flags.DEFINE_integer("steps", 200, "CA steps.")
_CANVAS = flags.DEFINE_integer("canvas", 56, "Grid size for scaled / stretched digits.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")
_IMPL = flags.DEFINE_string("impl", "auto", "CA implementation (nca/fast.py).")
_HAND_DRAWN = flags.DEFINE_string(
    "hand_drawn_dir",
    str(Path(__file__).resolve().parent.parent / "docs" / "selforg_mnist" / "hand_drawn"),
    "Folder of 28x28 PNGs named <label>.png or <label>_<anything>.png ('' to skip).",
)
_DATA = flags.DEFINE_string("mnist_dir", None, "MNIST folder (default: as training finds it).")

SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
STRETCHES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
STROKES = (-2, -1, 0, 1, 2)


def run_condition(config, params, images, labels, key) -> dict:
    out = jax.device_get(robustness.outcome(
        params, images, labels, key, _STEPS.value, config.model.fire_rate,
        config.model.noise_std, impl=_IMPL.value,
        capacity_fraction=robustness.capacity_for(images),
    ))  # fmt: skip
    alive = np.maximum(out["alive_cells"], 1)
    return {
        "accuracy": float(out["correct_cells"].sum() / alive.sum()),
        "agreement": float(out["agrees"].mean()),
        "majority_correct": float((out["majority"] == labels).mean()),
        "late_flips_per_cell": float((out["late_flips"] / alive).mean()),
        "_per_digit": out,
    }


def main(argv):
    cli.reject_positional(argv)
    m = cli.load_one_model(_WORKDIR.value, _MODEL.value)
    config, params = m["config"], m["params"]
    images, labels = data.load_mnist("test", _DATA.value)
    n = _NUM_DIGITS.value
    if not 2 <= n <= len(images) // 2:
        raise cli.InputError(f"--num_digits={n} must be between 2 and {len(images) // 2}.")
    grey, labels = data.to_grey(images[:n]), labels[:n]
    out = Path(_OUT.value)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.PRNGKey(_SEED.value)
    canvas = _CANVAS.value

    conditions = {f"scale {s}": (robustness.stretch(grey, s, s, canvas), labels) for s in SCALES}
    for s in STRETCHES:
        conditions[f"stretch x {s}"] = (robustness.stretch(grey, s, 1.0, canvas), labels)
        conditions[f"stretch y {s}"] = (robustness.stretch(grey, 1.0, s, canvas), labels)
    for k in STROKES:
        conditions[f"stroke {k:+d}"] = (
            robustness.place(robustness.stroke(grey, k), canvas),
            labels,
        )
    # chimeras: digit i joined with digit i + n/2 (another digit, mostly of another class); every
    # condition has the same shape, so the CA compiles once per index-table size.
    other = (np.arange(n) + n // 2) % n
    first, second = robustness.place(grey, canvas), robustness.place(grey[other], canvas)
    first_labels, second_labels = labels, labels[other]
    for split in ("left_right", "top_bottom"):
        conditions[f"chimera {split}"] = (robustness.chimera(first, second, split), first_labels)

    results = {}
    for name, (imgs, labs) in tqdm(conditions.items(), desc="conditions"):
        results[name] = run_condition(config, params, imgs, labs, key)
    for split in ("left_right", "top_bottom"):
        r = results[f"chimera {split}"]
        majority = r["_per_digit"]["majority"]
        differ = first_labels != second_labels
        r["wins"] = {
            "first_half": float((majority == first_labels)[differ].mean()),
            "second_half": float((majority == second_labels)[differ].mean()),
            "other": float(
                ((majority != first_labels) & (majority != second_labels))[differ].mean()
            ),
        }  # fmt: skip
        r["share_still_flipping"] = float((r["_per_digit"]["late_flips"] > 0).mean())
    for r in results.values():
        del r["_per_digit"]

    result = {"model": m["label"], "num_digits": n, "steps": _STEPS.value, "canvas": canvas,
              "conditions": results, "hand_drawn": hand_drawn(config, params, key)}  # fmt: skip
    (out / "robustness.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(results, out / "robustness.png", m["label"])
    chimera_video(config, params, first[:8], second[:8], out / "chimeras")
    lines = [
        "| condition | accuracy | agreement | majority correct | late flips / cell |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {100 * r['accuracy']:.1f} | {100 * r['agreement']:.1f} | "
            f"{100 * r['majority_correct']:.1f} | {r['late_flips_per_cell']:.3f} |"
        )
    for split in ("left_right", "top_bottom"):
        w = results[f"chimera {split}"]["wins"]
        lines.append(
            f"\nChimera {split}: the first half's label wins {100 * w['first_half']:.1f} %, "
            f"the second half's {100 * w['second_half']:.1f} %, another "
            f"{100 * w['other']:.1f} %; digits with cells still flipping in the last half: "
            f"{100 * results[f'chimera {split}']['share_still_flipping']:.1f} %."
        )
    if result["hand_drawn"]:
        lines.append("\n| hand-drawn | verdict (majority) | cells voting for it | all agree |")
        lines.append("| --- | --- | --- | --- |")
        for name, v in result["hand_drawn"].items():
            lines.append(f"| {name} | {v['majority']} | {100 * v['majority_share']:.0f} % | "
                         f"{'yes' if v['agrees'] else 'no'} |")  # fmt: skip
    (out / "robustness.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def hand_drawn(config, params, key) -> dict:
    """The model's verdict on the hand-drawn digits after --steps steps."""
    folder = Path(_HAND_DRAWN.value) if _HAND_DRAWN.value else None
    files = sorted(folder.glob("*.png")) if folder and folder.is_dir() else []
    if not files:
        return {}
    images = np.stack([np.asarray(imageio.imread(f), np.float32) / 255 for f in files])
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise cli.InputError(f"hand-drawn digits in {folder} must be 28x28 greyscale PNGs.")
    labels = np.array([int(f.stem.split("_")[0]) for f in files])
    out = jax.device_get(robustness.outcome(
        params, images, labels, key, _STEPS.value, config.model.fire_rate,
        config.model.noise_std, impl=_IMPL.value,
    ))  # fmt: skip
    final_votes = out["majority_votes"]
    return {
        f.name: {
            "label": int(label), "majority": int(out["majority"][i]),
            "majority_share": float(final_votes[i] / max(out["alive_cells"][i], 1)),
            "agrees": bool(out["agrees"][i]),
        }
        for i, (f, label) in enumerate(zip(files, labels, strict=True))
    }  # fmt: skip


def plot(results: dict, path: Path, title: str) -> None:
    groups = {"scale": ("scale", SCALES), "stretch x": ("stretch x", STRETCHES),
              "stretch y": ("stretch y", STRETCHES), "stroke": ("stroke", STROKES)}  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    panels = [("scale / stretch factor", ["scale", "stretch x", "stretch y"]),
              ("stroke: erosions (-) / dilations (+)", ["stroke"])]  # fmt: skip
    for ax, metric in zip(axes[:2], ("accuracy", "agreement"), strict=True):
        for group in panels[0][1]:
            prefix, values = groups[group]
            ax.plot(values, [results[f"{prefix} {v}"][metric] for v in values], "o-", label=group)
        ax.set(title=f"{metric} after the last step", xlabel=panels[0][0], ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[2]
    for metric in ("accuracy", "agreement"):
        ax.plot(STROKES, [results[f"stroke {k:+d}"][metric] for k in STROKES], "o-", label=metric)
    ax.set(title="stroke width", xlabel=panels[1][0], ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def chimera_video(config, params, first, second, stem: Path) -> None:
    """Left/right chimeras of 8 digit pairs classifying for --steps steps."""
    images = robustness.chimera(first, second, "left_right")
    labels_t, alive_t, _ = jax.device_get(
        render.trajectory(
            params, images, None, jax.random.PRNGKey(1), _STEPS.value,
            config.model.fire_rate, config.model.noise_std,
        )
    )  # fmt: skip
    frames = [render.label_frame(labels_t[t], alive_t[t], 4, 3) for t in range(0, len(labels_t), 2)]
    render.write_video(stem, frames, fps=25)


if __name__ == "__main__":
    cli.run(main)
