"""Figures of evaluation curves (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TITLES = {
    "accuracy": "average cell accuracy",
    "agreement": "total agreement",
    "state_magnitude": "state magnitude (alive cells)",
    "update_magnitude": "update magnitude (alive cells)",
}


def plot_curves(runs: dict[str, dict[str, np.ndarray]], num_steps: int, path: str | Path) -> None:
    """`curves_figure`, saved to `path`."""
    fig = curves_figure(runs, num_steps)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves_figure(runs: dict[str, dict[str, np.ndarray]], num_steps: int):
    """One panel per metric, one line per run; the mutation (after `num_steps`) is marked."""
    fig, axes = plt.subplots(1, len(TITLES), figsize=(4.2 * len(TITLES), 3.4))
    for ax, (metric, title) in zip(axes, TITLES.items(), strict=True):
        for name, curves in runs.items():
            values = np.asarray(curves[metric])
            ax.plot(np.arange(1, len(values) + 1), values, label=name, lw=1.2)
        if any(len(c[metric]) > num_steps for c in runs.values()):
            ax.axvline(num_steps + 0.5, color="grey", ls="--", lw=0.8, label="mutation")
        ax.set_title(title)
        ax.set_xlabel("CA step")
        if metric.endswith("magnitude"):
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def training_length_figure(rows: dict[int, dict[str, float]], num_steps: int):
    """Accuracy and agreement at `num_steps` CA steps (solid) and their tops (dotted) against
    training iterations; `rows`: `evaluate.summary` by iteration."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    iterations = np.array(sorted(rows))
    for metric, colour in (("accuracy", "C0"), ("agreement", "C1")):
        final = [rows[i][f"{metric}_final"] for i in iterations]
        top = [rows[i][f"top_{metric}"] for i in iterations]
        ax.plot(iterations, final, "o-", color=colour, label=f"{metric} at {num_steps}")
        ax.plot(iterations, top, ":", color=colour, label=f"top {metric}")
    ax.set_xlabel("training iterations")
    ax.set_ylabel("percent")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def study_figure(groups: dict[str, dict[str, list[dict]]], num_steps: int):
    """Per variant (a row of panels: accuracy, agreement, state magnitude) and config: the mean
    curve over seeds and its min-max band; `groups[variant][config]` lists each seed's curves."""
    metrics = ("accuracy", "agreement", "state_magnitude")
    fig, axes = plt.subplots(len(groups), len(metrics), figsize=(4.2 * len(metrics),
                             3.2 * len(groups)), squeeze=False)  # fmt: skip
    for row, (variant, configs) in zip(axes, groups.items(), strict=True):
        for ax, metric in zip(row, metrics, strict=True):
            for i, (name, seeds) in enumerate(configs.items()):
                values = np.array([np.asarray(c[metric]) for c in seeds])
                steps = np.arange(1, values.shape[1] + 1)
                ax.plot(steps, values.mean(0), color=f"C{i}", lw=1.2,
                        label=f"{name} ({len(seeds)} seed{'s' * (len(seeds) > 1)})")  # fmt: skip
                ax.fill_between(steps, values.min(0), values.max(0), color=f"C{i}", alpha=0.2)
            if variant != "none":
                ax.axvline(num_steps + 0.5, color="grey", ls="--", lw=0.8)
            ax.set_title(f"{TITLES[metric]}, {variant}")
            ax.set_xlabel("CA step")
            if metric == "state_magnitude":
                ax.set_yscale("log")
            else:
                ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig
