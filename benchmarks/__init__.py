"""Speed benchmarks (never run by the tests); each writes its results under `results/`."""

import json
import os
import platform
import time
from pathlib import Path

import jax


def timed(fn, repeats):
    """Seconds per call of `fn()` after one warm-up (compile) call."""
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def machine() -> str:
    """Processor, the cores this process may use (`taskset`), and the JAX version."""
    cores = len(os.sched_getaffinity(0))
    return (
        f"{platform.processor() or platform.machine()}, {cores} core(s) available, "
        f"JAX {jax.__version__}"
    )


def best_of_rounds(rows: dict, rounds: int) -> dict:
    """`{row: {variant: seconds}}`, the least of `rounds` calls of each `rows[row][variant]()`
    (which returns seconds), interleaved round by round so a slow spell of the machine hits every
    row."""
    best = {row: {variant: float("inf") for variant in r} for row, r in rows.items()}
    for _ in range(rounds):
        for row, variants in rows.items():
            for variant, seconds in variants.items():
                best[row][variant] = min(best[row][variant], seconds())
    return best


def save(out: str, name: str, results: dict, markdown: str) -> None:
    """Prints `markdown` and writes `<out>/<name>.json` and `<out>/<name>.md`."""
    print(markdown)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
