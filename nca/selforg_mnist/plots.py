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
