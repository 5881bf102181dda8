"""MetaNCA: a learned local rule that grows the weights of task MLPs of any size.

A task net T with layer sizes `[n_0, ..., n_L]` is held as a tuple of L layers; layer l is a pair
`(w, h)`:

- `w: (n_l + 1, n_{l+1}) float32`: the weight matrix with the bias as its last row (a bias is a
  weight from a constant unit, so it has neighbours and a hidden state like any other weight);
- `h: (n_l + 1, n_{l+1}, H) float32`: a hidden state per weight, initialised with sinusoidal
  position codes of (input neuron, output neuron, layer).

One rule step perceives, for every weight, `[w, h, w_f, h_f, w_b, h_b]` (size `3 + 3H`): its own
values and the means over its forward and backward neighbourhoods (`neighbourhood_means`), maps
it through the rule R (a small MLP, last layer zero-initialised, tanh output) to `(dw, dh)` and
adds that to a random `fire_rate` share of the weights. With fan-in scaling (the default) the
rule perceives `sqrt(n_l) * w` and applies `dw / sqrt(n_l)`, so it sees unit-scale weights in
every layer. Everything is array code: neighbourhood sums come from row and column sums, the rule
is an MLP applied over the last axis of all weights at once, and many task nets are grown in one
call with `jax.vmap` over init keys. The only Python loop is over the layers of an architecture.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Arch = Sequence[int]  # layer sizes [n_0, ..., n_L]
Layer = tuple[jax.Array, jax.Array]  # (w (n_in + 1, n_out), h (n_in + 1, n_out, H))
NetState = tuple[Layer, ...]
RuleParams = dict  # {"layers": [{"kernel": (a, b), "bias": (b,)}, ...]}

BIAS_INDEX = -1  # the input-neuron index whose position code a bias gets


# --------------------------------------------------------------------------------------------
# Task net


def forward(state: NetState, x: jax.Array, negative_slope: float = 0.01) -> jax.Array:
    """Logits of the task MLP: leaky ReLU between layers, identity output.

    x: `(B, n_0)`; returns `(B, n_L)`.
    """
    for i, (w, _) in enumerate(state):
        x = x @ w[:-1] + w[-1]
        if i < len(state) - 1:
            x = jax.nn.leaky_relu(x, negative_slope)
    return x


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy; logits `(B, C)`, labels `(B,)` int."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(logits, -1) == labels)


def sinusoid(position, dims: int, base: float) -> np.ndarray:
    """Sinusoidal codes: `position (...,)` -> `(..., dims)`, frequencies `base ** (-m / k)`."""
    k = (dims + 1) // 2
    freqs = base ** (-np.arange(k) / k)
    angle = np.asarray(position, np.float64)[..., None] * freqs
    code = np.concatenate([np.sin(angle), np.cos(angle)], -1)[..., :dims]
    return code.astype(np.float32)


def grid_code(index: np.ndarray, grid: Sequence[int], dims: int) -> np.ndarray:
    """Codes of input neurons laid out on an image grid (row-major `index`, -1 for the bias):
    half the dims code the row, half the column, as `sin / cos(pi * m * pos / size)` for
    m = 1, 2, ... (a smooth Fourier basis over the image)."""
    rows, cols = grid
    parts = []
    for pos, size, d in ((index // cols, rows, dims // 2), (index % cols, cols, dims - dims // 2)):
        k = (d + 1) // 2
        angle = np.pi * (pos.astype(np.float64)[:, None] + 0.5) / size * np.arange(1, k + 1)
        code = np.concatenate([np.sin(angle), np.cos(angle)], -1)[:, :d]
        parts.append(np.where(index[:, None] < 0, -1.0, code))
    return np.concatenate(parts, -1).astype(np.float32)


def position_codes(
    arch: Arch, code_dims: int, input_grid: Sequence[int] = ()
) -> tuple[np.ndarray, ...]:
    """The initial hidden states: per layer `(n_l + 1, n_{l+1}, 3 * code_dims)` float32.

    Each weight's state is `[code(input neuron), code(output neuron), code(layer)]`. Neuron
    codes use absolute indices (the bias row gets index -1), so output neuron j is class j in
    every architecture; the layer code holds half a code of the layer index counted from the
    input and half counted from the output, so "last layer" looks the same at every depth.
    With `input_grid` (e.g. `(28, 28)`), the network inputs are pixels and get `grid_code`s of
    their row and column instead of a code of their flat index. Computed with numpy on the
    host: built inside `jit` from `arange`, XLA would constant-fold them at every compile, which
    took tens of seconds per architecture.
    """
    depth = len(arch) - 1
    states = []
    for layer, (n_in, n_out) in enumerate(zip(arch[:-1], arch[1:], strict=True)):
        rows = np.concatenate([np.arange(n_in), np.array([BIAS_INDEX])])
        if layer == 0 and input_grid:
            in_code = grid_code(rows, input_grid, code_dims)
        else:
            in_code = sinusoid(rows, code_dims, 1000.0)  # (n_in + 1, k)
        out_code = sinusoid(np.arange(n_out), code_dims, 1000.0)  # (n_out, k)
        half = code_dims // 2
        layer_code = np.concatenate(
            [
                sinusoid(np.asarray(layer), half, 10.0),
                sinusoid(np.asarray(depth - 1 - layer), code_dims - half, 10.0),
            ]
        )
        states.append(
            np.concatenate(
                [
                    np.broadcast_to(in_code[:, None], (n_in + 1, n_out, code_dims)),
                    np.broadcast_to(out_code[None], (n_in + 1, n_out, code_dims)),
                    np.broadcast_to(layer_code, (n_in + 1, n_out, code_dims)),
                ],
                -1,
            )
        )
    return tuple(states)


def init_net(
    key: jax.Array, arch: Arch, code_dims: int, input_grid: Sequence[int] = ()
) -> NetState:
    """A fresh task net as Flax's `nn.Dense` initialises it (kernel LeCun normal, bias zero),
    with position-code hidden states. vmap over `key` for many nets."""
    keys = jax.random.split(key, len(arch) - 1)
    lecun = jax.nn.initializers.lecun_normal()
    layers = []
    for k, h, n_in, n_out in zip(
        keys, position_codes(arch, code_dims, input_grid), arch[:-1], arch[1:], strict=True
    ):
        w = jnp.concatenate([lecun(k, (n_in, n_out)), jnp.zeros((1, n_out))])
        layers.append((w, jnp.asarray(h)))
    return tuple(layers)


# --------------------------------------------------------------------------------------------
# Neighbourhoods


def neighbourhood_means(
    values: Sequence[jax.Array], same_matrix_only: bool = False
) -> tuple[list[jax.Array], list[jax.Array]]:
    """Forward and backward neighbourhood means of every weight, from row and column sums.

    values: per layer `(n_l + 1, n_{l+1}, F)` (bias as last row). For weight `[i, j]` of layer
    l (input neuron i, output neuron j):
    - forward set: everything attached to output neuron j: the rest of column j (j's other
      inputs and its bias) and j's outgoing weights, row j of layer l + 1;
    - backward set: everything attached to input neuron i: the rest of row i (i's other
      outgoing weights) and what feeds i, column i of layer l - 1 (weights and bias). A bias
      row's input is the constant unit, fed by nothing.
    Self is excluded; terms past the first or last layer are dropped; `same_matrix_only` keeps
    only the rest of the row and column (the 2024 prototype). Returns two lists of arrays
    shaped like `values`.
    """
    depth = len(values)
    col_sums = [v.sum(0) for v in values]  # (n_{l+1}, F)
    row_sums = [v.sum(1) for v in values]  # (n_l + 1, F)
    forward, backward = [], []
    for layer, v in enumerate(values):
        n_rows, n_cols = v.shape[:2]
        f_sum = col_sums[layer][None] - v
        f_count = n_rows - 1
        b_sum = row_sums[layer][:, None] - v
        b_count = jnp.full((n_rows,), n_cols - 1, v.dtype)
        if not same_matrix_only and layer + 1 < depth:
            nxt = values[layer + 1]
            f_sum = f_sum + row_sums[layer + 1][:-1][None]  # row j of the next layer, no bias row
            f_count = f_count + nxt.shape[1]
        if not same_matrix_only and layer > 0:
            prev = values[layer - 1]
            feed = jnp.concatenate([col_sums[layer - 1], jnp.zeros_like(col_sums[layer - 1][:1])])
            b_sum = b_sum + feed[:, None]  # column i of the previous layer (none for the bias)
            b_count = b_count.at[:-1].add(prev.shape[0])
        forward.append(f_sum / max(f_count, 1))
        backward.append(b_sum / jnp.maximum(b_count, 1)[:, None, None])
    return forward, backward


# --------------------------------------------------------------------------------------------
# The rule


def init_rule(key: jax.Array, hidden_dims: int, rule_hidden: Sequence[int]) -> RuleParams:
    """The rule MLP `3 + 3H -> rule_hidden -> 1 + H`, last layer zero (the rule starts as the
    identity update)."""
    sizes = [3 + 3 * hidden_dims, *rule_hidden, 1 + hidden_dims]
    keys = jax.random.split(key, len(sizes) - 1)
    lecun = jax.nn.initializers.lecun_normal()
    layers = []
    for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True)):
        last = i == len(sizes) - 2
        layers.append(
            {
                "kernel": jnp.zeros((a, b)) if last else lecun(k, (a, b)),
                "bias": jnp.zeros((b,)),
            }
        )
    return {"layers": layers}


def apply_rule(rule: RuleParams, perception: jax.Array) -> jax.Array:
    """`(..., 3 + 3H) -> (..., 1 + H)` in [-1, 1]: the MLP over the last axis of every weight."""
    x = perception
    layers = rule["layers"]
    for i, layer in enumerate(layers):
        x = x @ layer["kernel"] + layer["bias"]
        x = jnp.tanh(x) if i == len(layers) - 1 else jax.nn.leaky_relu(x, 0.01)
    return x


def fan_in_scales(state: NetState, fan_in_scaling: bool) -> list[float]:
    return [math.sqrt(w.shape[0] - 1) if fan_in_scaling else 1.0 for w, _ in state]


def rule_update(
    rule: RuleParams,
    state: NetState,
    *,
    fan_in_scaling: bool = True,
    same_matrix_only: bool = False,
) -> tuple[list[jax.Array], list[jax.Array]]:
    """The update the rule proposes for every weight, before the random mask: per layer
    `(dw (n_l + 1, n_{l+1}), dh (n_l + 1, n_{l+1}, H))`, dw already divided by `sqrt(n_l)`."""
    scales = fan_in_scales(state, fan_in_scaling)
    values = [
        jnp.concatenate([(w * s)[..., None], h], -1)
        for (w, h), s in zip(state, scales, strict=True)
    ]
    forward, backward = neighbourhood_means(values, same_matrix_only)
    dws, dhs = [], []
    for v, f, b, s in zip(values, forward, backward, scales, strict=True):
        out = apply_rule(rule, jnp.concatenate([v, f, b], -1))
        dws.append(out[..., 0] / s)
        dhs.append(out[..., 1:])
    return dws, dhs


def rule_step(
    rule: RuleParams,
    state: NetState,
    key: jax.Array,
    *,
    fire_rate: float = 0.8,
    fan_in_scaling: bool = True,
    same_matrix_only: bool = False,
) -> NetState:
    """One rule step: the update added to a random `fire_rate` share of the weights."""
    dws, dhs = rule_update(
        rule, state, fan_in_scaling=fan_in_scaling, same_matrix_only=same_matrix_only
    )
    new = []
    for layer, ((w, h), dw, dh) in enumerate(zip(state, dws, dhs, strict=True)):
        fire = fire_mask(key, layer, w.shape, fire_rate).astype(w.dtype)
        new.append((w + fire * dw, h + fire[..., None] * dh))
    return tuple(new)


def fire_mask(key: jax.Array, layer: int, shape: tuple[int, ...], fire_rate: float) -> jax.Array:
    """A random boolean mask, True with probability `fire_rate`, from XLA's RngBitGenerator
    keyed by `(key, layer)`. `jax.random.bernoulli` (threefry) costs about a second of compile
    time per call site on a CPU; this costs next to none."""
    words = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    k4 = jnp.concatenate([words.astype(jnp.uint32), jnp.array([layer, 0x9E3779B9], jnp.uint32)])
    _, bits = jax.lax.rng_bit_generator(k4, shape, dtype=jnp.uint32)
    return bits < jnp.uint32(min(fire_rate, 1.0 - 2**-32) * 2**32)


def rollout(
    rule: RuleParams,
    state: NetState,
    key: jax.Array,
    num_steps: int,
    *,
    active_steps: jax.Array | int | None = None,
    metric_fn: Callable | None = None,
    remat: bool = False,
    **step_kwargs,
) -> tuple[NetState, jax.Array | None]:
    """`num_steps` rule steps with `lax.scan` (static length). Steps at index >= `active_steps`
    (a traced int, for the curriculum) leave the state unchanged, so one compiled scan serves
    every curriculum length. `metric_fn(state)` is recorded after every step (stacked outputs).
    `remat` recomputes each step in the backward pass (gradient checkpointing).
    """

    def step(carry, t):
        new = rule_step(rule, carry, jax.random.fold_in(key, t), **step_kwargs)
        if active_steps is not None:
            new = jax.tree.map(lambda a, b: jnp.where(t < active_steps, a, b), new, carry)
        return new, (metric_fn(new) if metric_fn is not None else None)

    if remat:
        step = jax.checkpoint(step)
    return jax.lax.scan(step, state, jnp.arange(num_steps))


def damage(state: NetState, key: jax.Array, zero_fraction: float = 0.3) -> NetState:
    """Zero-out damage: one random layer zeroed, and `zero_fraction` of the other weights
    (biases included). Hidden states are kept."""
    k_layer, k_mask = jax.random.split(key)
    layer = jax.random.randint(k_layer, (), 0, len(state))
    keys = jax.random.split(k_mask, len(state))
    new = []
    for i, ((w, h), k) in enumerate(zip(state, keys, strict=True)):
        keep = jax.random.bernoulli(k, 1.0 - zero_fraction, w.shape) & (layer != i)
        new.append((w * keep, h))
    return tuple(new)
