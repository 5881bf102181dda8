"""MetaNCA: a learned local rule that grows the weights of task networks of any size and shape:
MLPs and small CNNs.

A task net T with layer sizes `[n_0, ..., n_L]` is held as a tuple of L layers; layer l is a pair
`(w, h)`:

- `w: (n_l + 1, n_{l+1}) float32`: the weight matrix with the bias as its last row (a bias is a
  weight from a constant unit, so it has neighbours and a hidden state like any other weight);
- `h: (n_l + 1, n_{l+1}, H) float32`: a hidden state per weight, initialised with sinusoidal
  position codes of (input neuron, output neuron, layer).

Convolutional layers use the same two arrays. An architecture entry `"cN"` is a 3x3 convolution
(stride 2, SAME padding) to N feature maps, and `(784, "c8", "c8", 10)` is conv -> conv -> dense
on 28x28 images (`net_spec`). A conv layer's `w` is its kernel as a matrix: rows are
`(tap, input map)` with the tap (kernel position) outer, plus the bias row. A dense layer after a
conv reads the flattened maps, and its rows are `(pixel, map)`, pixel outer. Every layer's rows
are thus `taps x units + 1` (`LayerSpec`), and an MLP layer is the case `taps = 1`.

One rule step perceives, for every weight, `[w, h, w_f, h_f, w_b, h_b]` (size `3 + 3H`, plus a
constant 1 for conv weights and 0 for dense ones with `layer_kind_input`): its own
values and the means over its forward and backward neighbourhoods (`neighbourhood_means`), maps
it through the rule R (a small MLP, last layer zero-initialised, tanh output) to `(dw, dh)` and
adds that to a random `fire_rate` share of the weights. With fan-in scaling (the default) the
rule perceives `sqrt(n_l) * w` and applies `dw / sqrt(n_l)`, so it sees unit-scale weights in
every layer. Everything is array code: neighbourhood sums come from row and column sums, the rule
is an MLP applied over the last axis of all weights at once, and many task nets are grown in one
call with `jax.vmap` over init keys. The only Python loop is over the layers of an architecture.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Arch = Sequence[int | str]  # [n_0, entry, ...]: an int is a dense layer, "cN" a conv to N maps
Layer = tuple[jax.Array, jax.Array]  # (w (n_in + 1, n_out), h (n_in + 1, n_out, H))
NetState = tuple[Layer, ...]
RuleParams = dict  # {"layers": [{"kernel": (a, b), "bias": (b,)}, ...]}

BIAS_INDEX = -1  # the input-neuron index whose position code a bias gets


class ArchError(ValueError):
    """An architecture that cannot be built (says which entry and why)."""


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """The shape of one task-net layer. Its `w` has `taps * units + 1` rows: `units` input units
    (input neurons, or feature maps), each read at `taps` places (1 for an MLP layer, the 3x3
    kernel positions of a conv, the pixels of the maps a dense layer after a conv flattens),
    tap outer, and the bias row last.

    kind: "dense" or "conv"; grid: the shape of the taps (`(3, 3)` for a conv, the map size for
    a dense layer after a conv, `()` otherwise); in_grid and stride: a conv's input map size
    and stride.
    """

    kind: str
    taps: int
    units: int
    n_out: int
    grid: tuple[int, ...] = ()
    in_grid: tuple[int, ...] = ()
    stride: int = 1

    @property
    def rows(self) -> int:
        return self.taps * self.units + 1


def is_conv(entry) -> bool:
    return isinstance(entry, str) and entry.startswith("c")


def net_spec(
    arch: Arch, input_grid: Sequence[int] = (), conv_kernel: int = 3, conv_stride: int = 2
) -> tuple[LayerSpec, ...]:
    """The layers of `arch`. An int entry is a dense layer of that width; `"cN"` a
    `conv_kernel` x `conv_kernel` convolution with stride `conv_stride`, SAME padding, to N
    maps. Conv layers need `input_grid` (the image the `n_0` inputs form, with
    `n_0 / (rows * cols)` channels), come before every dense layer, and a dense layer ends the
    net. Raises `ArchError` otherwise."""
    n_in = int(arch[0])
    grid, channels = tuple(int(g) for g in input_grid), None
    specs: list[LayerSpec] = []
    for entry in arch[1:]:
        if is_conv(entry):
            try:
                c_out = int(entry[1:])
            except ValueError:
                raise ArchError(
                    f"architecture entry {entry!r}: write a conv as 'c<maps>', e.g. 'c8'."
                ) from None
            if specs and specs[-1].kind == "dense":
                raise ArchError(
                    f"{list(arch)}: a conv layer ({entry}) after a dense one; convs come first."
                )
            if not specs:
                if not grid or n_in % math.prod(grid):
                    raise ArchError(
                        f"{list(arch)}: conv layers need model.input_grid, the image the {n_in} "
                        f"inputs form (got {list(grid)})."
                    )
                channels = n_in // math.prod(grid)
            specs.append(
                LayerSpec(
                    "conv", conv_kernel**2, channels, c_out, (conv_kernel,) * 2, grid, conv_stride
                )
            )
            grid, channels = tuple(-(-g // conv_stride) for g in grid), c_out
        else:
            n = int(entry)
            if specs and specs[-1].kind == "conv":
                specs.append(LayerSpec("dense", math.prod(grid), channels, n, grid))
            else:
                specs.append(LayerSpec("dense", 1, specs[-1].n_out if specs else n_in, n))
        if specs[-1].n_out < 1:
            raise ArchError(f"{list(arch)}: entry {entry!r} has no units.")
    if not specs or specs[-1].kind != "dense":
        raise ArchError(f"{list(arch)}: the last layer must be dense (the logits).")
    return tuple(specs)


def mlp_spec(weights: Sequence[jax.Array]) -> tuple[LayerSpec, ...]:
    """The spec of an all-dense net, read from its per-layer `(n_in + 1, n_out, ...)` arrays."""
    return tuple(LayerSpec("dense", 1, w.shape[0] - 1, w.shape[1]) for w in weights)


# --------------------------------------------------------------------------------------------
# Task net


def forward(
    state: NetState,
    x: jax.Array,
    spec: Sequence[LayerSpec] | None = None,
    negative_slope: float = 0.01,
) -> jax.Array:
    """Logits of the task net (`spec` from `net_spec`; None: an MLP): leaky ReLU between
    layers, identity output. Conv layers see the inputs as `(B, *input_grid, channels)` and
    a dense layer after them the flattened maps, `(y, x, map)` order.

    x: `(B, n_0)`; returns `(B, n_L)`.
    """
    spec = mlp_spec([w for w, _ in state]) if spec is None else spec
    for i, ((w, _), s) in enumerate(zip(state, spec, strict=True)):
        if s.kind == "conv":
            x = conv(x.reshape(x.shape[0], *s.in_grid, s.units), w, s)
        else:
            x = x.reshape(x.shape[0], -1) @ w[:-1] + w[-1]
        if i < len(state) - 1:
            x = jax.nn.leaky_relu(x, negative_slope)
    return x


def conv(x: jax.Array, w: jax.Array, s: LayerSpec) -> jax.Array:
    """A conv layer: `x (B, *s.in_grid, s.units)`, `w` its `(taps * units + 1, n_out)` matrix ->
    `(B, out_h, out_w, n_out)`, SAME padding (TensorFlow's: the odd padding pixel at the bottom
    and right), stride `s.stride`. One matrix product over `x`'s shifted, strided copies (im2col;
    the taps outer, the maps inner, as `w`'s rows). The same function as `conv_reference` (a test
    checks values and gradients); on a CPU much faster to train: vmapped over nets, `lax.conv`
    becomes a grouped convolution whose gradient XLA's CPU backend computes slowly
    (`python -m benchmarks.metanca_speed`)."""
    (kh, kw), st = s.grid, s.stride
    pads, (oh, ow) = [], [-(-size // st) for size in s.in_grid]
    for size, out, k in zip(s.in_grid, (oh, ow), (kh, kw), strict=True):
        total = max((out - 1) * st + k - size, 0)
        pads.append((total // 2, total - total // 2))
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    taps = [
        xp[:, i : i + (oh - 1) * st + 1 : st, j : j + (ow - 1) * st + 1 : st]
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.concatenate(taps, -1) @ w[:-1] + w[-1]


def conv_reference(x: jax.Array, w: jax.Array, s: LayerSpec) -> jax.Array:
    """`conv` by `lax.conv_general_dilated`: the oracle of the tests and the benchmark."""
    kernel = w[:-1].reshape(*s.grid, s.units, s.n_out)  # rows (tap, map) -> HWIO
    dims = ("NHWC", "HWIO", "NHWC")
    return (
        jax.lax.conv_general_dilated(x, kernel, (s.stride,) * 2, "SAME", dimension_numbers=dims)
        + w[-1]
    )


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


def tap_code(tap: np.ndarray, grid: Sequence[int], dims: int) -> np.ndarray:
    """Codes of the places a row reads (a conv's kernel positions, the pixels of a flattened
    map; row-major `tap` on `grid`, -1 for the bias): the centred row and column in (-1, 1),
    then `grid_code` Fourier features in the remaining dims; with one dim, the centred flat
    index. Distinct for every tap, also in two or three dims (a `grid_code` of one dim per axis
    codes only `sin`, which confuses a tap with its mirror image)."""
    rows, cols = grid
    centred = lambda pos, size: (2 * pos + 1) / size - 1  # noqa: E731
    if dims == 1:
        code = centred(tap.astype(np.float64), rows * cols)[:, None]
    else:
        code = np.stack([centred(tap // cols, rows), centred(tap % cols, cols)], -1)
        code = np.concatenate([code, grid_code(tap, grid, dims - 2)], -1)
    return np.where(tap[:, None] < 0, -1.0, code[:, :dims]).astype(np.float32)


def position_codes(
    spec: Sequence[LayerSpec], code_dims: int, input_grid: Sequence[int] = ()
) -> tuple[np.ndarray, ...]:
    """The initial hidden states: per layer `(rows, n_out, 3 * code_dims)` float32.

    Each weight's state is `[code(input unit), code(output unit), code(layer)]`. Unit codes use
    absolute indices (the bias row gets index -1), so output neuron j is class j in every
    architecture; the layer code holds half a code of the layer index counted from the
    input and half counted from the output, so "last layer" looks the same at every depth.
    With `input_grid` (e.g. `(28, 28)`), an MLP's inputs are pixels and get `grid_code`s of
    their row and column instead of a code of their flat index. Rows read at several taps (a
    conv's kernel positions, the pixels a dense layer after a conv flattens) code half their
    map index and half their tap's place on `LayerSpec.grid` (`tap_code`). Computed with numpy
    on the host: built inside `jit` from `arange`, XLA would constant-fold them at every
    compile, which took tens of seconds per architecture.
    """
    depth = len(spec)
    states = []
    for layer, s in enumerate(spec):
        rows = np.concatenate([np.arange(s.taps * s.units), np.array([BIAS_INDEX])])
        if s.kind == "conv" or s.taps > 1:
            unit = np.where(rows < 0, BIAS_INDEX, rows % s.units)
            tap = np.where(rows < 0, BIAS_INDEX, rows // s.units)
            half = code_dims // 2
            in_code = np.concatenate(
                [sinusoid(unit, code_dims - half, 1000.0), tap_code(tap, s.grid, half)], -1
            )
        elif layer == 0 and input_grid:
            in_code = grid_code(rows, input_grid, code_dims)
        else:
            in_code = sinusoid(rows, code_dims, 1000.0)  # (rows, k)
        out_code = sinusoid(np.arange(s.n_out), code_dims, 1000.0)  # (n_out, k)
        half = code_dims // 2
        layer_code = np.concatenate(
            [
                sinusoid(np.asarray(layer), half, 10.0),
                sinusoid(np.asarray(depth - 1 - layer), code_dims - half, 10.0),
            ]
        )
        shape = (s.rows, s.n_out, code_dims)
        states.append(
            np.concatenate(
                [
                    np.broadcast_to(in_code[:, None], shape),
                    np.broadcast_to(out_code[None], shape),
                    np.broadcast_to(layer_code, shape),
                ],
                -1,
            )
        )
    return tuple(states)


def init_weights(key: jax.Array, spec: Sequence[LayerSpec]) -> list[jax.Array]:
    """Fresh weights as Flax's `nn.Dense` / `nn.Conv` initialise them (kernel LeCun normal over
    its fan-in, bias zero): per layer `(rows, n_out)`."""
    lecun = jax.nn.initializers.lecun_normal()
    return [
        jnp.concatenate([lecun(k, (s.rows - 1, s.n_out)), jnp.zeros((1, s.n_out))])
        for k, s in zip(jax.random.split(key, len(spec)), spec, strict=True)
    ]


def init_net(
    key: jax.Array,
    arch: Arch,
    code_dims: int,
    input_grid: Sequence[int] = (),
    spec: Sequence[LayerSpec] | None = None,
) -> NetState:
    """A fresh task net of `arch`: `init_weights` with position-code hidden states. `spec`:
    `net_spec(arch, input_grid, ...)` when the conv shape is not the default 3x3 stride 2.
    vmap over `key` for many nets."""
    spec = net_spec(arch, input_grid) if spec is None else spec
    codes = position_codes(spec, code_dims, input_grid)
    return tuple((w, jnp.asarray(h)) for w, h in zip(init_weights(key, spec), codes, strict=True))


# --------------------------------------------------------------------------------------------
# Neighbourhoods


def neighbourhood_means(
    values: Sequence[jax.Array],
    same_matrix_only: bool = False,
    spec: Sequence[LayerSpec] | None = None,
) -> tuple[list[jax.Array], list[jax.Array]]:
    """Forward and backward neighbourhood means of every weight, from row and column sums.

    values: per layer `(rows, n_{l+1}, F)` (bias as last row). For weight `[i, j]` of layer
    l (input unit i, output unit j):
    - forward set: everything attached to output unit j: the rest of column j (j's other
      inputs and its bias) and j's outgoing weights in layer l + 1, i.e. its rows that read
      unit j (one row of an MLP layer; every tap of map j for a conv or a dense layer after a
      conv);
    - backward set: everything attached to input i: the rest of its row and what feeds i,
      column i of layer l - 1 (weights and bias). A conv's input is a whole map, so its rows
      of every tap of that map count as i's own row; a dense layer after a conv reads one pixel
      of a map, which the map's column in layer l - 1 feeds. A bias row's input is the
      constant unit, fed by nothing.
    Self is excluded; terms past the first or last layer are dropped; `same_matrix_only` keeps
    only the rest of the row and column (the 2024 prototype). `spec` (from `net_spec`; None: an
    MLP) says how rows group into taps and units. Returns two lists of arrays shaped like
    `values`.
    """
    spec = mlp_spec(values) if spec is None else spec
    depth = len(values)
    col_sums = [v.sum(0) for v in values]  # (n_{l+1}, F)
    row_sums = [v.sum(1) for v in values]  # (rows, F)

    def per_unit(layer):  # (units, F): the row sums of layer's weights, summed over taps
        s = spec[layer]
        return row_sums[layer][:-1].reshape(s.taps, s.units, -1).sum(0)

    def per_row(layer, unit_values, bias_value):  # (units, ...) -> (rows, ...), tap outer
        s = spec[layer]
        tiled = jnp.tile(unit_values, (s.taps,) + (1,) * (unit_values.ndim - 1))
        return jnp.concatenate([tiled, bias_value[None]])

    forward, backward = [], []
    for layer, (v, s) in enumerate(zip(values, spec, strict=True)):
        n_rows, n_cols = v.shape[:2]
        f_sum = col_sums[layer][None] - v
        f_count = n_rows - 1
        if s.kind == "conv":  # a conv's input is a whole map: every tap of it is its "row"
            own = per_row(layer, per_unit(layer), row_sums[layer][-1])
            b_count = per_row(
                layer, jnp.full((s.units,), s.taps * n_cols - 1.0), jnp.asarray(n_cols - 1.0)
            )
        else:
            own = row_sums[layer]
            b_count = jnp.full((n_rows,), n_cols - 1.0)
        b_sum = own[:, None] - v
        if not same_matrix_only and layer + 1 < depth:
            f_sum = f_sum + per_unit(layer + 1)[None]  # the rows of the next layer that read j
            f_count = f_count + spec[layer + 1].taps * values[layer + 1].shape[1]
        if not same_matrix_only and layer > 0:
            feed = per_row(layer, col_sums[layer - 1], jnp.zeros_like(col_sums[layer - 1][0]))
            b_sum = b_sum + feed[:, None]  # column i of the previous layer (none for the bias)
            b_count = b_count.at[:-1].add(values[layer - 1].shape[0])
        forward.append(f_sum / max(f_count, 1))
        backward.append(b_sum / jnp.maximum(b_count, 1)[:, None, None])
    return forward, backward


# --------------------------------------------------------------------------------------------
# The rule


def init_rule(
    key: jax.Array, hidden_dims: int, rule_hidden: Sequence[int], layer_kind_input: bool = False
) -> RuleParams:
    """The rule MLP `3 + 3H (+ 1 with layer_kind_input) -> rule_hidden -> 1 + H`, last layer
    zero (the rule starts as the identity update)."""
    sizes = [3 + 3 * hidden_dims + int(layer_kind_input), *rule_hidden, 1 + hidden_dims]
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
    """`(..., 3 + 3H [+ 1]) -> (..., 1 + H)` in [-1, 1]: the MLP over the last axis of every
    weight."""
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
    spec: Sequence[LayerSpec] | None = None,
    layer_kind_input: bool = False,
) -> tuple[list[jax.Array], list[jax.Array]]:
    """The update the rule proposes for every weight, before the random mask: per layer
    `(dw (rows, n_{l+1}), dh (rows, n_{l+1}, H))`, dw already divided by `sqrt(fan-in)`.
    `spec`: the net's `net_spec` (None: an MLP); `layer_kind_input`: the rule also perceives
    1 for a conv weight, 0 for a dense one."""
    spec = mlp_spec([w for w, _ in state]) if spec is None else spec
    scales = fan_in_scales(state, fan_in_scaling)
    values = [
        jnp.concatenate([(w * s)[..., None], h], -1)
        for (w, h), s in zip(state, scales, strict=True)
    ]
    forward, backward = neighbourhood_means(values, same_matrix_only, spec)
    dws, dhs = [], []
    for v, f, b, s, ls in zip(values, forward, backward, scales, spec, strict=True):
        parts = [v, f, b]
        if layer_kind_input:
            parts.append(jnp.full(v.shape[:-1] + (1,), float(ls.kind == "conv"), v.dtype))
        out = apply_rule(rule, jnp.concatenate(parts, -1))
        dws.append(out[..., 0] / s)
        dhs.append(out[..., 1:])
    return dws, dhs


def rule_step(
    rule: RuleParams,
    state: NetState,
    key: jax.Array,
    *,
    fire_rate: float = 0.8,
    **update_kwargs,
) -> NetState:
    """One rule step: the update (`rule_update` with `update_kwargs`) added to a random
    `fire_rate` share of the weights."""
    dws, dhs = rule_update(rule, state, **update_kwargs)
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
