"""Experiments on a trained self-classifying CA that return data (and an `nca.report.Report`):
robustness to out-of-distribution digits. `experiments/robustness.py` is the command.

- Scale: test digits resized from 0.5x to 2x, centred on a 56x56 grid.
- Stretch: horizontal or vertical stretch from 0.5x to 1.75x.
- Stroke width: strokes eroded or dilated (3x3 grey morphology) 1-2 times.
  For each: average cell accuracy and total agreement after `steps` steps (plot + JSON).
- Chimeras: the left half of one test digit joined to the right half of another (and top /
  bottom): which label wins (the first half's, the second half's, another), the agreement, and
  how often cells still flip label in the last half of the steps; a video of a few.
- Hand-drawn digits: the model's verdict.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import imageio.v2 as imageio
import jax
import numpy as np
from tqdm import tqdm

from nca import report
from nca.config import ConfigError
from nca.selforg_mnist import render, robustness

HAND_DRAWN_DIR = Path(__file__).resolve().parents[2] / "docs" / "selforg_mnist" / "hand_drawn"
SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
STRETCHES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
STROKES = (-2, -1, 0, 1, 2)


@dataclasses.dataclass(frozen=True)
class RobustnessSettings:
    steps: int = 200  # CA steps
    canvas: int = 56  # grid size for scaled / stretched digits
    seed: int = 0
    impl: str = "auto"  # CA implementation (nca/selforg_mnist/fast.py)
    hand_drawn_dir: str = str(HAND_DRAWN_DIR)  # 28x28 PNGs named <label>[_*].png ('': skip)


def run_condition(config, params, images, labels, key, s: RobustnessSettings) -> dict:
    out = jax.device_get(robustness.outcome(
        params, images, labels, key, s.steps, config.model.fire_rate,
        config.model.noise_std, impl=s.impl,
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


def run_robustness(config, params, grey, labels, label: str, settings: RobustnessSettings):
    """Every condition on `grey` `(n, 28, 28)` test digits; returns the Report (data, table,
    figure) and the chimera pairs `(first, second)` for a video."""
    n = len(grey)
    key = jax.random.PRNGKey(settings.seed)
    canvas = settings.canvas
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
        results[name] = run_condition(config, params, imgs, labs, key, settings)
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

    verdicts = hand_drawn(config, params, key, settings)
    result = {"model": label, "num_digits": n, "steps": settings.steps, "canvas": canvas,
              "conditions": results, "hand_drawn": verdicts}  # fmt: skip
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
    table = "\n".join(lines)
    return report.Report("robustness", result, table, plot(results, label)), (first, second)


def hand_drawn(config, params, key, s: RobustnessSettings) -> dict:
    """The model's verdict on the hand-drawn digits after `s.steps` steps."""
    folder = Path(s.hand_drawn_dir) if s.hand_drawn_dir else None
    files = sorted(folder.glob("*.png")) if folder and folder.is_dir() else []
    if not files:
        return {}
    images = np.stack([np.asarray(imageio.imread(f), np.float32) / 255 for f in files])
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ConfigError(f"hand-drawn digits in {folder} must be 28x28 greyscale PNGs.")
    labels = np.array([int(f.stem.split("_")[0]) for f in files])
    out = jax.device_get(robustness.outcome(
        params, images, labels, key, s.steps, config.model.fire_rate,
        config.model.noise_std, impl=s.impl,
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


def plot(results: dict, title: str):
    groups = {"scale": ("scale", SCALES), "stretch x": ("stretch x", STRETCHES),
              "stretch y": ("stretch y", STRETCHES), "stroke": ("stroke", STROKES)}  # fmt: skip
    fig, axes = report.figure(1, 3, figsize=(13, 3.4))
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
    return fig


def chimera_video(config, params, first, second, stem: Path, steps: int) -> None:
    """Left/right chimeras of digit pairs classifying for `steps` steps, as a video."""
    images = robustness.chimera(first, second, "left_right")
    labels_t, alive_t, _ = jax.device_get(
        render.trajectory(
            params, images, None, jax.random.PRNGKey(1), steps,
            config.model.fire_rate, config.model.noise_std,
        )
    )  # fmt: skip
    frames = [render.label_frame(labels_t[t], alive_t[t], 4, 3) for t in range(0, len(labels_t), 2)]
    render.write_video(stem, frames, fps=25)
