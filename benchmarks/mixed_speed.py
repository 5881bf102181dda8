"""Speed of two rules on one grid (the adversarial attack and the defence game) on `table`:
each rule computing its own fired rows (`second_share`, the default of the attack, the
adversary's training and the defence) against both rules computing every fired row (before).

    python -m benchmarks.mixed_speed [--out=benchmarks/results] [--rounds=3]

Measures, in one run, the two interleaved round by round (the machine's speed drifts):
1. the adversary's training gradient: the shipped `adversary_eight` against `l2_noise` at 10 %
   adversaries, batch 16, 20 steps (`adversarial` training's objective);
2. the attack's inference: 1000 test digits x 100 steps at 10 %, with the attack's metrics on
   the table's rows (`attack_batch`'s rollout).
Results go to `<out>/mixed_speed.json` and `.md`. Never run by the tests.
"""

from __future__ import annotations

import functools
import json
import os
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import timed
from nca import data
from nca.selforg_mnist import adversarial, losses, model, pretrained

_OUT = flags.DEFINE_string("out", "benchmarks/results", "Folder for the JSON and Markdown.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds of both ways.")
FRACTION = 0.1
WAYS = {"each rule its own rows": FRACTION, "both rules every fired row": None}


def gradient_seconds(params, other, grey, share, repeats=10):
    """Seconds per adversary gradient (batch of `grey`, 20 steps)."""
    state = model.seed_state(grey)
    mask = adversarial.adversary_mask(jax.random.PRNGKey(1), grey.shape, FRACTION)
    targets = jnp.full(grey.shape[0], 8)

    @jax.jit
    def gradient(other, key):
        def loss(other):
            final, _ = adversarial.mixed_rollout(params, other, mask, state, key, 20, 0.5, 0.02,
                                                 impl="table", second_share=share,
                                                 fire_compaction=True)  # fmt: skip
            return losses.l2_loss(final, targets)

        return jax.grad(loss)(other)

    keys = iter(jax.random.split(jax.random.PRNGKey(2), repeats + 1))
    return timed(lambda: gradient(other, next(keys)), repeats)


def attack_seconds(params, other, grey, labels, share, num_steps=100):
    """Seconds for `num_steps` of the attack on `grey` with its metrics."""
    mask = adversarial.adversary_mask(jax.random.PRNGKey(1), grey.shape, FRACTION)
    observe = lambda previous, s: adversarial.attack_metrics(s, labels, mask, 8)  # noqa: E731
    rows = functools.partial(adversarial.attack_row_metrics, labels=labels, mask=mask, target=8)

    @jax.jit
    def run(key):
        return adversarial.mixed_rollout(
            params, other, mask, model.seed_state(grey), key, num_steps, 0.5, 0.02, observe,
            impl="table", observe_rows=rows, second_share=share, dead_cells_zero=True,
        )[1]  # fmt: skip

    return timed(lambda: run(jax.random.PRNGKey(3)), 1)


def main(argv):
    del argv
    out = Path(_OUT.value)
    out.mkdir(parents=True, exist_ok=True)
    _, params = pretrained.load("l2_noise")
    _, other = pretrained.load("adversary_eight")
    images, labels = data.load_mnist("test")
    grey = data.to_grey(images[:1000])
    train_grey = data.to_grey(images[1000:1016])
    seconds = {way: {"gradient": [], "attack": []} for way in WAYS}
    for r in range(_ROUNDS.value):
        for way, share in WAYS.items():
            seconds[way]["gradient"].append(gradient_seconds(params, other, train_grey, share))
            seconds[way]["attack"].append(
                attack_seconds(params, other, grey, jnp.asarray(labels[:1000]), share)
            )
            print(f"round {r}: {way}: {seconds[way]}")
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__}",
        "seconds": seconds,
    }
    (out / "mixed_speed.json").write_text(json.dumps(results, indent=2) + "\n")
    base = "both rules every fired row"
    lines = [
        f"Machine: {results['machine']}; two rules at {FRACTION:.0%} adversaries, median of "
        f"{_ROUNDS.value} interleaved rounds",
        "",
        "| way | adversary gradients/s (batch 16, 20 steps) | x before | attack: 1000 digits x "
        "100 steps (s) | x before |",
        "| --- | --- | --- | --- | --- |",
    ]
    median = {w: {k: float(np.median(v)) for k, v in s.items()} for w, s in seconds.items()}
    for way in WAYS:
        g, a = median[way]["gradient"], median[way]["attack"]
        lines.append(
            f"| {way} | {1 / g:.2f} | {median[base]['gradient'] / g:.2f} | {a:.1f} | "
            f"{median[base]['attack'] / a:.2f} |"
        )
    (out / "mixed_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
