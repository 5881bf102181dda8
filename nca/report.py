"""The one way experiments report: Markdown tables, and JSON + Markdown + figure files.

A library function measures and returns plain data; it may wrap it, with its table and figure,
in a `Report`; the entry point writes that with `write`. Every experiment's outputs look alike:
`<out>/<name>.json`, `<name>.md` and, where there is a figure, `<name>.png`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are files; no display needed
import matplotlib.pyplot as plt  # noqa: E402


@dataclasses.dataclass
class Report:
    """One experiment's outcome: `data` (JSON-serialisable), its Markdown and a matplotlib
    figure, each optional (None: no file)."""

    name: str
    data: dict[str, Any] | None
    markdown: str | None
    figure: Any = None


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; cells are formatted with `str`."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def figure(*args, **kwargs):
    """`plt.subplots(*args, **kwargs)`, with the headless backend."""
    return plt.subplots(*args, **kwargs)


def write(
    out: str | Path, report: Report, log=print, *, dpi: int = 120, tight: bool = True, indent=2
) -> list[Path]:
    """Writes `<out>/<name>.json`, `.md` and `.png` (those the report has); logs the paths and the
    Markdown, and returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if report.data is not None:
        paths.append(out / f"{report.name}.json")
        paths[-1].write_text(json.dumps(report.data, indent=indent) + "\n")
    if report.markdown is not None:
        paths.append(out / f"{report.name}.md")
        paths[-1].write_text(report.markdown.rstrip("\n") + "\n")
    if report.figure is not None:
        paths.append(out / f"{report.name}.png")
        report.figure.savefig(paths[-1], dpi=dpi, bbox_inches="tight" if tight else None)
        plt.close(report.figure)
    log(f"wrote {', '.join(str(p) for p in paths)}")
    if report.markdown is not None:
        log(report.markdown)
    return paths
