"""The restoration results as an `nca.report.Report`: Markdown tables and figures."""

from __future__ import annotations

import numpy as np

from nca import report


def reports(run: dict) -> list[report.Report]:
    """`restore` (JSON, Markdown, restorations figure) and, where there are noise lattices,
    `noise_valleys` (figure only), from `nca.hybrid.evaluate.run_experiment`'s output."""
    out = [report.Report("restore", run["result"], markdown(run["result"]),
                         plot_panels(run["clean"], run["masked"], run["panels"]))]  # fmt: skip
    if run["noise_panels"]:
        out.append(report.Report("noise_valleys", None, None, plot_noise(run["noise_panels"])))
    return out


def panel_arrays(run: dict) -> dict[str, np.ndarray]:
    """The figures' images (`run_experiment`'s `clean`, `masked`, `panels`, `noise_panels`) as
    8-bit arrays, the content of `restore_panels.npz`: a later `--earlier` evaluation draws
    these runs' rows from them once their workdirs are gone."""
    arrays = {"clean": run["clean"], "masked": run["masked"]}
    arrays |= {f"panel/{k}": v for k, v in run["panels"].items()}
    arrays |= {f"noise/{k}": v for k, v in run["noise_panels"].items()}
    return {k: np.round(np.clip(v, 0, 1) * 255).astype(np.uint8) for k, v in arrays.items()}


def with_earlier_panels(run: dict, arrays: dict[str, np.ndarray], source: str) -> dict:
    """`run` whose figures also show the rows of an earlier evaluation (`panel_arrays`'s
    `arrays`): each model keeps the row it was first drawn with, earlier rows first."""
    if arrays["clean"].shape != run["clean"].shape or np.any(
        np.abs(arrays["clean"] / 255 - run["clean"]) > 1 / 255
    ):
        raise ValueError(f"{source} shows other test digits than this run; give the panels of "
                         "an evaluation with the same --num_digits.")  # fmt: skip
    out = dict(run)
    for prefix, key in (("panel/", "panels"), ("noise/", "noise_panels")):
        rows = {k.removeprefix(prefix): v / 255 for k, v in arrays.items() if k.startswith(prefix)}
        out[key] = rows | {k: v for k, v in run[key].items() if k not in rows}
    return out


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _pm(value, std, seeds, fmt):
    return fmt.format(value) + (f" ± {fmt.format(std)}" if seeds > 1 else "")


def markdown(result: dict) -> str:
    """The results as Markdown: the main table, targets, noise valleys, per-run rows."""
    p = result["protocol"]
    lines = [
        f"Test set: {p['test_digits']} digits, {p['hidden_pixels_per_digit']} of 784 pixels "
        f"hidden per digit (mask seed {p['mask_seed']}). PSNR: {p['psnr']}. Digit-ID: the frozen "
        f"classifier ({result['classifier']['clean_test_digit_id']:.2%} on clean test digits). "
        f"Damage: {p['damage']}. Machine: {p['machine']}.",
        "",
        "| model | params | seeds | PSNR all (dB) | PSNR hidden (dB) | PSNR pooled (dB) | "
        "digit-ID | damaged: digit-ID (drop) | damaged: PSNR (drop) | GFLOPs/sample XLA | "
        "analytic | throughput (img/s, 1 core) | blog: PSNR / digit-ID / GFLOPs |",
        "|" + "---|" * 13,
    ]
    first = {}
    for r in result["models"]:
        first.setdefault(r["model"], r)
    for label, g in result["groups"].items():
        r, n = first[label], g["seeds"]
        blog = result["blog"].get(label)
        blog_s = f"{blog['psnr']} / {blog['digit_id']:.0%} / {blog['gflops']}" if blog else "-"
        if "damaged" in r:
            drop = g["damage_digit_id_drop"]
            dmg_id = f"{100 * (g['digit_id'] - drop):.1f}% ({-100 * drop:+.1f} pts)"
            dmg_psnr = f"{g['psnr'] - g['damage_psnr_drop']:.2f} ({-g['damage_psnr_drop']:+.2f})"
        else:
            dmg_id = dmg_psnr = "n/a (no lattice)"
        digit_id = _pm(100 * g["digit_id"], 100 * g["digit_id_std"], n, "{:.1f}") + "%"
        lines.append(_row([
            label, f"{r['params']:,}", str(n), _pm(g["psnr"], g["psnr_std"], n, "{:.2f}"),
            _pm(g["psnr_hidden"], g["psnr_hidden_std"], n, "{:.2f}"), f"{r['psnr_pooled']:.2f}",
            digit_id, dmg_id, dmg_psnr, f"{r['flops']['xla'] / 1e9:.4f}",
            f"{r['flops']['analytic']['total'] / 1e9:.4f}", f"{r['throughput_per_s']:,.0f}", blog_s,
        ]))  # fmt: skip
    dashes = ["-"] * 6
    for name, b in result["baselines"].items():
        lines.append(_row([
            f"{name} (baseline)", "0", "-", f"{b['psnr']:.2f}", f"{b['psnr_hidden']:.2f}",
            f"{b['psnr_pooled']:.2f}", f"{100 * b['digit_id']:.1f}%", *dashes,
        ]))  # fmt: skip
    clean = 100 * result["classifier"]["clean_test_digit_id"]
    lines.append(_row(["clean digits", "-", "-", "inf", "inf", "inf", f"{clean:.1f}%", *dashes]))
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for name, t in result["targets"].items():
        lines.append(_row([name, f"{t['value']:.2f}", "yes" if t["met"] else "no"]))
    valleys = [r for r in result["models"] if "noise_valleys" in r]
    if valleys:
        lines += [
            "",
            'Report only, the blog\'s "10 valleys": 100 lattices of N(0, 1) noise, no input, '
            "10 CA steps, read-outs classified by the frozen classifier and clustered (k-means, "
            "k = 10).",
            "",
            "| model | seed | distinct classes | class counts 0-9 | k-means purity | mean output "
            "| std across lattices |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in valleys:
            v = r["noise_valleys"]
            lines.append(_row([
                r["model"], str(r["seed"]), str(v["distinct_classes"]), str(v["class_counts"]),
                f"{v['kmeans_purity']:.2f}", f"{v['mean_output']:.3f}",
                f"{v['output_std_across_lattices']:.3f}",
            ]))  # fmt: skip
    if len(result["models"]) > len(result["groups"]):
        lines += [
            "",
            "| run | seed | PSNR all | PSNR hidden | digit-ID | damage drop (pts) |",
            "|---|---|---|---|---|---|",
        ]
        for r in result["models"]:
            drop = f"{100 * r['damage_digit_id_drop']:.1f}" if "damaged" in r else "n/a"
            lines.append(_row([
                r["workdir"] + (f" (from {r['earlier']})" if "earlier" in r else ""),
                str(r["seed"]), f"{r['psnr']:.2f}", f"{r['psnr_hidden']:.2f}",
                f"{100 * r['digit_id']:.1f}%", drop,
            ]))  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_panels(clean: np.ndarray, masked: np.ndarray, panels: dict):
    """Rows: masked input, each model's restoration (and damaged run), clean digits."""
    rows = [("masked input", masked), *panels.items(), ("clean", clean)]
    cols = clean.shape[0]
    fig, axes = report.figure(len(rows), cols, figsize=(cols * 0.9 + 1.6, len(rows) * 0.95))
    axes = np.atleast_2d(axes)
    for i, (name, imgs) in enumerate(rows):
        for j in range(cols):
            ax = axes[i, j]
            ax.imshow(imgs[j], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout(pad=0.2)
    return fig


def plot_noise(panels: dict):
    """Read-outs of noise lattices run without input, one row per model."""
    fig, axes = report.figure(len(panels), 10, figsize=(10.5, len(panels) * 1.05 + 0.2))
    axes = np.atleast_2d(axes)
    for i, (name, imgs) in enumerate(panels.items()):
        for j in range(min(10, len(imgs))):
            axes[i, j].imshow(imgs[j], cmap="gray", vmin=0, vmax=1)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(f"noise → {name}", rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout(pad=0.2)
    return fig


# --------------------------------------------------------------------------------------------
# Convergence (validation PSNR during training, `data.validation_images`)

CONVERGED_TAIL = 0.2  # "no gain over the last 20 % of steps"
CONVERGED_TOLERANCE_DB = 0.05


def converged(steps, psnr, tail: float = CONVERGED_TAIL, tol: float = CONVERGED_TOLERANCE_DB):
    """Whether a validation curve has stopped improving: its best over the last `tail` share of
    the steps run is at most `tol` dB above its best before them (False with under 5 points)."""
    steps, psnr = np.asarray(steps), np.asarray(psnr)
    if len(steps) < 5:
        return False
    late = steps > steps[-1] * (1 - tail)
    return bool(late.any() and (~late).any() and psnr[late].max() <= psnr[~late].max() + tol)


def validation_report(workdirs, earlier: dict | None = None) -> report.Report | None:
    """`validation`: each workdir's `val/psnr` against training steps (figure), its best and
    whether it converged (`converged`; Markdown, JSON); None if no workdir validated. `earlier`:
    the runs of an earlier `validation.json` (workdirs gone), shown first unless re-read."""
    import json
    from pathlib import Path

    reread = {str(wd) for wd in workdirs}
    runs = {wd: r for wd, r in (earlier or {}).items() if wd not in reread}
    for wd in workdirs:
        path = Path(wd) / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.is_file() else []
        rows = [r for r in map(json.loads, lines) if "val/psnr" in r]
        if rows:
            steps, psnr = [r["step"] for r in rows], [r["val/psnr"] for r in rows]
            best = int(np.argmax(psnr))
            runs[str(wd)] = {
                "steps": steps, "psnr": psnr, "best": psnr[best], "best_step": steps[best],
                "converged": converged(steps, psnr),
            }  # fmt: skip
    if not runs:
        return None
    header = ["workdir", "steps run", "best val PSNR (dB)", "at step", "last", "converged"]
    rows = [[Path(wd).name, r["steps"][-1], f"{r['best']:.2f}", r["best_step"],
             f"{r['psnr'][-1]:.2f}", "yes" if r["converged"] else "no"]
            for wd, r in runs.items()]  # fmt: skip
    text = (f"Validation PSNR on held-out training digits; converged: no gain above "
            f"{CONVERGED_TOLERANCE_DB} dB over the last {CONVERGED_TAIL:.0%} of the steps run.\n\n"
            + report.table(header, rows) + "\n")  # fmt: skip
    fig, ax = report.figure(figsize=(6, 3.8))
    for wd, r in runs.items():
        ax.plot(r["steps"], r["psnr"], "o-", ms=3, lw=1.2, label=Path(wd).name)
    ax.set_xlabel("training step")
    ax.set_ylabel("validation PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return report.Report("validation", runs, text, fig)
