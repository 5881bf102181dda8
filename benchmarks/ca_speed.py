"""Speed of each CA implementation (nca/fast.py) against the dense `lax.conv` reference.

    python -m benchmarks.ca_speed [--out=benchmarks/results] [--eval_protocol]

Measures, in one run on this machine:
1. training iterations/s of the full `l2_noise` config (batch 16, 20 steps, L2 + noise);
2. inference cell updates/s on 1000 test digits (200 steps; 10 for the dense paths);
3. achieved GFLOP/s, counting the model's dense FLOPs per cell update (44,640 forward, x3 for a
   training step), next to this machine's measured float32 matmul rate;
4. `table` data-parallel over all cores (one CPU device per core, `fast.per_device`): the
   training rate of one run given the whole machine (`experiments.train --cpu_devices=N`);
5. with --eval_protocol, the wall time of the article's evaluation protocol (10,000 digits x 400
   steps) with the fastest path, on one device and with its batches side by side on all cores.
Results go to `<out>/ca_speed.json` and `<out>/ca_speed.md`. Never run by the tests.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks import timed
from nca import data, loop
from nca.config import load_config
from nca.selforg_mnist import evaluate, fast, model, train

_OUT = flags.DEFINE_string("out", "benchmarks/results", "Folder for the JSON and Markdown.")
_EVAL = flags.DEFINE_bool("eval_protocol", False, "Also time 10k digits x 400 steps.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed training iterations per implementation.")

FORWARD_FLOPS_PER_CELL = 2 * (9 * 20 * 80 + 80 * 80 + 80 * 19)  # 44,640
# The table's rows: (impl, fire compaction); `table, every row` is `table` before compaction.
PATHS = {
    "conv": ("conv", True),
    "im2col": ("im2col", True),
    "alive": ("alive", True),
    "table, every row": ("table", False),
    "table": ("table", True),
}


def matmul_gflops(n=2048, repeats=10):
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    f = jax.jit(lambda a: a @ a)
    return 2 * n**3 / timed(lambda: f(a), repeats) / 1e9


def train_rate(impl, images, labels, repeats, num_devices=1, fire_compaction=True):
    config = load_config("l2_noise")
    config.model.impl = impl
    config.model.fire_compaction = fire_compaction
    mesh = loop.make_mesh(num_devices)
    trainer = loop.Trainer(
        init_state=train.init_train_state(config, images, labels),
        train_step=train.make_train_step(config, mesh),
        train_data={"images": images, "labels": labels},
        batch_size=train.num_fresh_digits(config),
        sharded_fields=("pool_states", "pool_labels"),
    )
    state, step = loop.compile_trainer(trainer, mesh)
    batches = [train.sample_fresh_digits(config, images, labels, t) for t in range(repeats + 1)]
    calls = iter(range(repeats + 1))

    def one():
        nonlocal state
        t = next(calls)
        state, metrics = step(state, batches[t], jax.random.fold_in(state.rng, t))
        return metrics

    seconds = timed(one, repeats)
    cell_updates = config.batch_size * config.num_ca_steps * 28 * 28
    alive = float(
        jnp.mean(jnp.stack([jnp.mean(b["images"] > model.ALIVE_THRESHOLD) for b in batches]))
    )
    return {
        "iterations_per_sec": 1 / seconds,
        "seconds_per_iteration": seconds,
        "gflops": 3 * FORWARD_FLOPS_PER_CELL * cell_updates / seconds / 1e9,
        "useful_gflops": 3 * FORWARD_FLOPS_PER_CELL * cell_updates * alive / seconds / 1e9,
    }


def inference_rate(impl, params, grey, labels, num_steps, fire_compaction=True):
    rollout = fast.get_rollout(impl, fire_compaction=fire_compaction)
    rollout = jax.jit(rollout, static_argnums=(3, 4, 5))
    state = model.seed_state(grey)
    seconds = timed(
        lambda: rollout(params, state, jax.random.PRNGKey(0), num_steps, 0.5, 0.02)[0], 1
    )
    cell_updates = grey.shape[0] * num_steps * 28 * 28
    alive = float(jnp.mean(grey > model.ALIVE_THRESHOLD))
    return {
        "num_steps": num_steps,
        "seconds": seconds,
        "cell_updates_per_sec": cell_updates / seconds,
        "gflops": FORWARD_FLOPS_PER_CELL * cell_updates / seconds / 1e9,
        "useful_gflops": FORWARD_FLOPS_PER_CELL * cell_updates * alive / seconds / 1e9,
    }


def eval_protocol_seconds(params, grey, labels, impl, devices):
    """The article's protocol: 10 batches of 1000 digits x (200 steps + 200 after mutation), the
    batches side by side on `devices`."""
    start = time.perf_counter()
    evaluate.evaluate(params, grey, labels, num_steps=200, noise_std=0.02, impl=impl,
                      devices=devices)  # fmt: skip
    return time.perf_counter() - start


def main(argv):
    del argv
    cores = os.cpu_count() or 1
    if cores > 1:  # one CPU device per core, for the data-parallel row (before JAX starts)
        jax.config.update("jax_num_cpu_devices", cores)
    out = Path(_OUT.value)
    out.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = train.load_training_data(load_config("l2_noise"))
    test_images, test_labels = data.load_mnist("test")
    grey = data.to_grey(test_images[:1000])
    params = jax.tree.map(
        jnp.asarray,
        train.init_train_state(load_config("l2_noise"), train_images[:1], train_labels[:1]).params,
    )
    params["output"]["kernel"] = 0.01 * jax.random.normal(jax.random.PRNGKey(1), (80, 19))

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {jax.device_count()} x "
        f"{jax.devices()[0].device_kind} device(s), jax {jax.__version__}",
        "matmul_gflops": matmul_gflops(),
        "train": {},
        "inference": {},
    }
    print(f"{results['machine']}: float32 matmul {results['matmul_gflops']:.1f} GFLOP/s")
    for name, (impl, compaction) in PATHS.items():
        repeats = 2 if impl == "conv" else _REPEATS.value
        results["train"][name] = train_rate(
            impl, train_images, train_labels, repeats, fire_compaction=compaction
        )
        steps = 10 if impl in ("conv", "im2col") else 200  # the dense paths: 10 steps
        results["inference"][name] = inference_rate(
            impl, params, grey, test_labels[:1000], steps, fire_compaction=compaction
        )
        print(name, results["train"][name], results["inference"][name])
    parallel = f"table, {cores} devices"
    if cores > 1:
        results["train"][parallel] = train_rate(
            "table", train_images, train_labels, _REPEATS.value, cores
        )
        print(parallel, results["train"][parallel])
    write_results(out, results)  # a long --eval_protocol may be interrupted: keep these
    if _EVAL.value:
        full = data.to_grey(test_images)
        results["eval_protocol_seconds"] = {
            n: eval_protocol_seconds(params, full, test_labels, "table", jax.devices()[:n])
            for n in sorted({1, jax.device_count()})
        }
        write_results(out, results)


def write_results(out: Path, results: dict) -> None:
    """`<out>/ca_speed.json` and `ca_speed.md` (printed too)."""
    (out / "ca_speed.json").write_text(json.dumps(results, indent=2) + "\n")
    base_t, base_i = results["train"]["conv"], results["inference"]["conv"]
    lines = [
        f"Machine: {results['machine']}; float32 matmul: {results['matmul_gflops']:.1f} GFLOP/s",
        "",
        "| impl | train it/s | x conv | train GFLOP/s dense-equiv. | train useful GFLOP/s "
        "(% of matmul) | inference cell updates/s | x conv | inference GFLOP/s dense-equiv. "
        "| inference useful GFLOP/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    matmul = results["matmul_gflops"]
    for impl in PATHS:
        t, i = results["train"][impl], results["inference"][impl]
        lines.append(
            f"| {impl} | {t['iterations_per_sec']:.2f} | "
            f"{t['iterations_per_sec'] / base_t['iterations_per_sec']:.1f} | {t['gflops']:.1f} | "
            f"{t['useful_gflops']:.1f} ({100 * t['useful_gflops'] / matmul:.0f} %)"
            f" | {i['cell_updates_per_sec']:.3g} | "
            f"{i['cell_updates_per_sec'] / base_i['cell_updates_per_sec']:.1f} | "
            f"{i['gflops']:.1f} | {i['useful_gflops']:.1f} |"
        )
    for parallel in set(results["train"]) - set(PATHS):  # the data-parallel row
        t = results["train"][parallel]
        lines.append(
            f"| {parallel} (training only) | {t['iterations_per_sec']:.2f} | "
            f"{t['iterations_per_sec'] / base_t['iterations_per_sec']:.1f} | {t['gflops']:.1f} | "
            f"{t['useful_gflops']:.1f} ({100 * t['useful_gflops'] / matmul:.0f} %) | | | | |"
        )
    if "eval_protocol_seconds" in results:
        seconds = results["eval_protocol_seconds"]
        lines += ["", "Evaluation protocol (10,000 digits x 400 steps, table): " + ", ".join(
            f"{t:.0f} s on {n} device(s) (x{seconds[1] / t:.2f})" for n, t in seconds.items()
        )]  # fmt: skip
    lines += [
        "",
        "Dense-equivalent GFLOP/s count the model's FLOPs (44,640 per cell update forward, x3 "
        "for training) over all 784 cells, so `alive` and `table` (which compute only alive "
        "cells) can exceed the matmul rate. Useful GFLOP/s count only the alive cells (the "
        "work any exact path must do; padding rows are not counted), as a share of the "
        "measured float32 matmul rate. `table` computes only the cells that fire in a step "
        "(about half of them), so its useful GFLOP/s count twice the work it does; `table, "
        "every row` computes every alive cell and masks the unfired.",
    ]
    (out / "ca_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
