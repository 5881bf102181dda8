"""Evaluating a trained MetaNCA rule: grow fresh task nets, measure them, damage them, and the
backprop baseline. Pure functions over arrays; the experiment script (experiments/metanca.py)
reloads the rule from a workdir and writes figures and tables."""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nca.metanca import model
from nca.metanca import train as metanca_train


def init_keys(seed: int, n: int) -> jax.Array:
    return jax.random.split(jax.random.PRNGKey(seed), n)


def timed(fn, *args):
    """`fn(*args)` for a jitted `fn`, compiled first and then run once: `(outputs, seconds of
    the run alone)`."""
    compiled = fn.lower(*args).compile()
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, time.perf_counter() - start


def grow_final_accuracy(
    config: ml_collections.ConfigDict,
    rule,
    arch,
    keys,
    x,
    y,
    num_steps: int,
    *,
    with_seconds: bool = False,
):
    """Accuracy `(len(keys),)` on `(x, y)` of nets grown from fresh inits for `num_steps` rule
    steps (vmapped over the init keys); `with_seconds`: and the seconds the growing took
    (compiled beforehand)."""
    kw = metanca_train.step_kwargs(config, arch)

    @jax.jit
    def run(rule, keys, x, y):
        def one(k):
            net = metanca_train.init_net(config, arch, k)
            grown, _ = model.rollout(rule, net, jax.random.fold_in(k, 1), num_steps, **kw)
            return model.accuracy(model.forward(grown, x, kw["spec"]), y)

        return jax.lax.map(one, keys) if len(keys) > 16 else jax.vmap(one)(keys)

    acc, seconds = timed(run, rule, keys, x, y)
    return (np.asarray(acc), seconds) if with_seconds else np.asarray(acc)


def grow_curves(
    config: ml_collections.ConfigDict,
    rule,
    arch,
    keys,
    x,
    y,
    num_steps: int,
    *,
    damage_at: int | None = None,
    damage_fraction: float = 0.3,
) -> dict[str, np.ndarray]:
    """Loss and accuracy on `(x, y)` after every rule step of fresh nets, `(len(keys),
    num_steps + 1)` each (column 0: the init). With `damage_at`, the nets are zero-out damaged
    after that many steps (one random layer and `damage_fraction` of the other weights)."""
    kw = metanca_train.step_kwargs(config, arch)

    def measure(state):
        logits = model.forward(state, x, kw["spec"])
        return model.cross_entropy(logits, y), model.accuracy(logits, y)

    @jax.jit
    def run(rule, keys):
        def one(k):
            net = metanca_train.init_net(config, arch, k)
            k_rule, k_dmg = jax.random.split(jax.random.fold_in(k, 1))
            first = num_steps if damage_at is None else damage_at
            net1, m1 = model.rollout(rule, net, k_rule, first, metric_fn=measure, **kw)
            curves = [jax.tree.map(lambda a: a[None], measure(net)), m1]
            if damage_at is not None:
                hit = model.damage(net1, k_dmg, damage_fraction)
                _, m2 = model.rollout(
                    rule,
                    hit,
                    jax.random.fold_in(k_rule, 7),
                    num_steps - damage_at,
                    metric_fn=measure,
                    **kw,
                )
                curves.append(m2)
            return jax.tree.map(lambda *a: jnp.concatenate(a), *curves)

        return jax.vmap(one)(keys)

    loss, acc = run(rule, keys)
    return {"loss": np.asarray(loss), "accuracy": np.asarray(acc)}


def stability(loss: np.ndarray) -> dict[str, float]:
    """The abstract's stability figures of one loss curve `(T,)`: L_min, the first step with
    loss <= 1.1 L_min ("steps to train") and the longest run of consecutive steps within it."""
    loss = np.asarray(loss, np.float64)
    l_min = float(loss.min())
    within = loss <= 1.1 * l_min
    first = int(np.argmax(within))
    longest = run = 0
    for w in within:
        run = run + 1 if w else 0
        longest = max(longest, run)
    return {"min_loss": l_min, "steps_to_train": first, "longest_within_10pct": longest}


def backprop_curves(
    spec: Sequence[model.LayerSpec],
    keys,
    train_x,
    train_y,
    x,
    y,
    num_steps: int,
    learning_rate: float,
    batch_size: int = 0,
    seed: int = 0,
    record: bool = True,
) -> dict[str, np.ndarray]:
    """The baseline: the same task nets (`spec`, same inits) trained by Adam for `num_steps`
    steps on the training split (full batch, or `batch_size` random examples a step). Loss and
    accuracy on `(x, y)` after every step, `(len(keys), num_steps + 1)`, and `seconds`: how
    long the training took (compiled beforehand). `record=False` measures only the final nets
    (`(len(keys), 1)`), so that `seconds` times Adam's steps alone."""
    opt = optax.adam(learning_rate)
    n = len(train_x)
    rng = np.random.default_rng(seed)
    if batch_size and batch_size < n:
        idx = rng.integers(0, n, (num_steps, batch_size))
    else:
        idx = np.broadcast_to(np.arange(n), (num_steps, n))

    def measure(state):
        logits = model.forward(state, x, spec)
        return model.cross_entropy(logits, y), model.accuracy(logits, y)

    @jax.jit
    def run(keys, idx):
        def one(k):
            params = model.init_weights(k, spec)

            def loss_fn(params, b):
                return model.cross_entropy(
                    model.forward(as_net(params), train_x[b], spec), train_y[b]
                )

            def step(carry, b):
                params, opt_state = carry
                grads = jax.grad(loss_fn)(params, b)
                updates, opt_state = opt.update(grads, opt_state, params)
                params = optax.apply_updates(params, updates)
                return (params, opt_state), (measure(as_net(params)) if record else None)

            (final, _), m = jax.lax.scan(step, (params, opt.init(params)), idx)
            if not record:
                return jax.tree.map(lambda a: a[None], measure(as_net(final)))
            m0 = measure(as_net(params))
            return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), m0, m)

        return jax.vmap(one)(keys)

    (loss, acc), seconds = timed(run, keys, jnp.asarray(idx))
    return {"loss": np.asarray(loss), "accuracy": np.asarray(acc), "seconds": seconds}


def as_net(weights) -> model.NetState:
    """Weights alone as a NetState (no hidden states), for `model.forward`."""
    return tuple((w, None) for w in weights)
