"""Speed of MetaNCA with convolutional task nets: the im2col conv (`nca.metanca.model.conv`, as
shipped) against `lax.conv` (`model.conv_reference`, the code it replaced; the same function).

    python -m benchmarks.metanca_speed [--out=benchmarks/results] [--repeats=3] [--rounds=2]

Times, for each variant, interleaved in the same run (best of `rounds`):
1. one meta-step of `metanca_mnist_cnn:damage` (the shipped config: four architectures, 10 rule
   steps, meta-gradient, Adam on the rule);
2. one Adam step of the baseline (`nca.metanca.evaluate.backprop_curves`: 8 nets vmapped, batch
   512) for every CNN of that config, trained and held out.
Results go to `<out>/metanca_speed.json` and `.md`; pin it to cores with `taskset` to measure
one core. Never run by the tests.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks import best_of_rounds, machine, save, timed
from nca import loop
from nca.config import load_config
from nca.metanca import data, evaluate, model
from nca.metanca import train as metanca_train

_OUT = flags.DEFINE_string("out", "benchmarks/results", "Folder for the JSON and Markdown.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed steps per row and round.", 1)
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Interleaved rounds; the best is reported.", 1)

CONFIG = "metanca_mnist_cnn:damage"
NETS = 8
VARIANTS = {"im2col": model.conv, "lax.conv": model.conv_reference}


def with_conv(conv, build):
    """`build()` with `conv` traced into the task nets' forward pass."""
    model.conv = conv
    try:
        return build()
    finally:
        model.conv = VARIANTS["im2col"]


def meta_step(config, task):
    """A callable that runs one meta-step (compiled here, with the `conv` in place now)."""
    mesh = loop.make_mesh(1)
    trainer = metanca_train.make_trainer(config, mesh)
    state, step = loop.compile_trainer(trainer, mesh)
    n = config.batch_size
    batch = {"x": task["train_x"][:n], "y": task["train_y"][:n]}
    calls = iter(range(10**6))

    def one():
        nonlocal state
        state, metrics = step(state, batch, jax.random.PRNGKey(next(calls)))
        return metrics

    one()  # compile
    return one


def adam_step(config, task, arch):
    """A callable timing `repeats` Adam steps of `NETS` nets (compiled on its first call)."""
    spec = metanca_train.net_spec(config, arch)
    keys = evaluate.init_keys(0, NETS)
    x, y = task["test_x"][:512], task["test_y"][:512]
    kwargs = dict(learning_rate=1e-3, batch_size=int(config.batch_size), record=False)

    def run():
        return evaluate.backprop_curves(
            spec, keys, task["train_x"], task["train_y"], x, y, _REPEATS.value, **kwargs
        )["seconds"]

    return run


def main(argv):
    del argv
    config = load_config(CONFIG)
    task = {k: jnp.asarray(v) for k, v in data.load_task(config).items()}
    cnns = [a for a in metanca_train.all_archs(config) if any(model.is_conv(e) for e in a)]
    rows = {"meta-step": {}} | {str(list(a)): {} for a in cnns}  # {row: {variant: seconds()}}
    for name, conv in VARIANTS.items():
        step = with_conv(conv, lambda: meta_step(config, task))
        rows["meta-step"][name] = lambda step=step: timed(step, _REPEATS.value)
        for arch in cnns:  # compiled inside each call; the seconds exclude compiling
            run = adam_step(config, task, arch)
            rows[str(list(arch))][name] = lambda c=conv, r=run: with_conv(c, r) / _REPEATS.value
    best = best_of_rounds(rows, _ROUNDS.value)
    results = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "config": CONFIG,
        "seconds": best,
    }
    lines = [
        f"MetaNCA with CNN task nets ({results['machine']}, {results['date']}): seconds per step, "
        f"best of {_ROUNDS.value} interleaved rounds of {_REPEATS.value}.",
        "",
        "| step | im2col (shipped) | lax.conv (before) | speed-up |",
        "| --- | --- | --- | --- |",
    ]
    for row, b in best.items():
        what = f"meta-step of `{CONFIG}`" if row == "meta-step" else f"Adam, {NETS} x {row}"
        lines.append(
            f"| {what} | {b['im2col']:.3f} | {b['lax.conv']:.3f} | "
            f"x{b['lax.conv'] / b['im2col']:.1f} |"
        )
    save(_OUT.value, "metanca_speed", results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    app.run(main)
