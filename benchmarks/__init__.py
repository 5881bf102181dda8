"""Speed benchmarks (never run by the tests); each writes its results under `results/`."""

import time

import jax


def timed(fn, repeats):
    """Seconds per call of `fn()` after one warm-up (compile) call."""
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats
