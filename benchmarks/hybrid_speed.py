"""Training-step speed of the hybrid restorer family (nca/hybrid), and what the blog's budget costs.

    python -m benchmarks.hybrid_speed [--out=benchmarks/results] [--batch=64] [--repeats=5]

Times one jitted training step (`nca.hybrid.train.make_train_step`: corruption, the restorer,
MSE, gradients, Adam) at the blog's batch for the CA only, the hybrid (global gate), the local
gate and the CNN autoencoder. For the lattice models it times the step as shipped (`microbatch`
0: on a CPU, microbatches of `train.CPU_MICROBATCH` digits with each CA step recomputed in the
backward pass) against the baseline it replaced (the whole batch in one pass, `microbatch` =
batch), interleaved in the same run, and prints the ratio. The blog's budget (40k steps) in
core-hours follows from the measured step. Results go to `<out>/hybrid_speed.json` and `.md`;
pin it to cores with `taskset` to measure one core. Never run by the tests.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks import best_of_rounds, machine, save, timed
from nca.config import load_config
from nca.hybrid import train

_OUT = flags.DEFINE_string("out", "benchmarks/results", "Folder for the JSON and Markdown.")
_BATCH = flags.DEFINE_integer("batch", 64, "Digits per training step (the blog's 64).", 1)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed steps per row and round.", 1)
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Interleaved rounds; the best is reported.", 1)

BLOG_STEPS = 40_000
CONFIGS = {
    "CA only": "hybrid_ca_only",
    "hybrid (global gate)": "hybrid",
    "hybrid (local gate)": "hybrid:gate_local",
    "CNN autoencoder": "cnn_autoencoder",
}


def compiled_step(config_name, batch_size, microbatch):
    """A compiled training step with `microbatch` (0: as shipped), and its first arguments."""
    config = load_config(config_name)
    config.batch_size, config.microbatch = batch_size, microbatch
    step = jax.jit(train.make_train_step(config))
    state = train.init_train_state(config)
    images = jax.random.uniform(jax.random.PRNGKey(1), (batch_size, 28, 28))
    batch = {"images": images, "labels": jnp.zeros((batch_size,), jnp.int32)}
    return step.lower(state, batch, jax.random.PRNGKey(2)).compile(), state, batch


def seconds_per_step(compiled, repeats):
    step, state, batch = compiled
    keys = iter(jax.random.split(jax.random.PRNGKey(0), repeats + 1))
    return timed(lambda: step(state, batch, next(keys)), repeats)


def main(argv):
    del argv
    rows = {}
    for name, config_name in CONFIGS.items():
        rows[name] = {"shipped": compiled_step(config_name, _BATCH.value, 0)}
        if name != "CNN autoencoder":
            rows[name]["baseline"] = compiled_step(config_name, _BATCH.value, _BATCH.value)
    timers = {
        name: {v: (lambda c=c: seconds_per_step(c, _REPEATS.value)) for v, c in variants.items()}
        for name, variants in rows.items()
    }
    best = best_of_rounds(timers, _ROUNDS.value)
    cores = len(os.sched_getaffinity(0))
    results = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "batch": _BATCH.value,
        "microbatch": train.microbatch_size(load_config("hybrid_ca_only")),
        "rows": {},
    }
    lines = [
        f"Hybrid family, one training step at batch {_BATCH.value} ({results['machine']}, "
        f"{results['date']}); best of {_ROUNDS.value} interleaved rounds of {_REPEATS.value}. "
        f"Shipped: microbatches of {results['microbatch']} digits for the lattice models; "
        f"baseline: the whole batch in one pass.",
        "",
        "| model | s / step | baseline s / step | speed-up | blog budget (40k steps), core-h |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, b in best.items():
        row = {
            "seconds_per_step": b["shipped"],
            "baseline_seconds_per_step": b.get("baseline"),
            "blog_budget_core_hours": b["shipped"] * BLOG_STEPS * cores / 3600,
        }
        results["rows"][name] = row
        base = f"{row['baseline_seconds_per_step']:.3f}" if "baseline" in b else "-"
        ratio = f"x{b['baseline'] / b['shipped']:.2f}" if "baseline" in b else "-"
        lines.append(
            f"| {name} | {b['shipped']:.3f} | {base} | {ratio} | "
            f"{row['blog_budget_core_hours']:.1f} |"
        )
    save(_OUT.value, "hybrid_speed", results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    app.run(main)
