"""The restorers and the digit-ID classifier as pure functions of `(params, ...)`.

Params are nested dicts of arrays; every `init_*` returns them, every forward takes them. Static
settings come from the config's `model` section (`arch`, sizes, gate kind), read in Python, so a
jitted forward closes over them.

Hybrid reading (docs/hybrid/README.md; ../shared/reference/HYBRID.md):
- input `[x * keep, keep]` (the mask channel is an addition to the blog), zero-padded to 32x32;
  1x1 conv encoder 2 -> 16 gives the lattice `(B, 32, 32, 16)`;
- CA step (shared weights, 1,936 params): depthwise 3x3 (multiplier 2) -> ReLU -> 1x1 32->32 ->
  ReLU -> 1x1 32->16 (zero-init) = update; `s <- LayerNorm_cell(s + update + gate(s))`; Gaussian
  state noise while training; `num_ca_steps` (10) steps in a `lax.scan`;
- gate (about 1.31M params, the blog's 1024 -> 1024 -> 256 MLP, Dropout 0.5 while training):
  `global`: 1x1 conv 16->1 -> 1024-vector -> MLP -> 16x16 -> upsample x2 -> 1x1 conv 1->16 ->
  tanh; `channel`: 4x4 average pool of all 16 channels (8x8x16 = 1024) -> MLP -> 4x4x16 ->
  upsample x8 -> tanh (a per-channel delta); `patch`: the MLP shared over the 16 non-overlapping
  8x8x16 patches -> 8x8x4 each -> 1x1 conv 4->16 -> tanh; `local` (not in the blog; the
  ablation that separates "CA + local capacity" from "CA + a global layer"): 3x3 conv 16 ->
  `gate_local_hidden` (8) -> ReLU -> 1x1 conv -> 16 (zero-init) -> tanh, 1,304 params, of the
  CA's order, no dropout; `none`: the CA-only reservoir;
- read-out: 1x1 conv 16->1, sigmoid, centre crop 28x28.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nca import draws

Params = dict[str, Any]
# A microbatch's digits `(index, batch size)`: their rows of the whole batch's random draws
# (`draws`), so that how a training batch is split changes no random number. None: the batch.
Rows = tuple[jax.Array, int] | None
GATES = ("global", "channel", "patch", "local", "none")
ARCHS = ("hybrid", "ca_only", "autoencoder", "classifier")
PAD = 2  # 28 -> 32 lattice


def _he(key, shape, fan_in):
    return jax.random.normal(key, shape, jnp.float32) * np.sqrt(2.0 / fan_in)


def _dense(key, n_in, n_out, zero=False):
    w = jnp.zeros((n_in, n_out)) if zero else _he(key, (n_in, n_out), n_in)
    return {"w": w, "b": jnp.zeros((n_out,))}


def _conv(key, k, c_in, c_out):
    return {"w": _he(key, (k, k, c_in, c_out), k * k * c_in), "b": jnp.zeros((c_out,))}


def _apply_dense(p, x):
    return x @ p["w"] + p["b"]


def _apply_conv(p, x, stride=1):
    y = jax.lax.conv_general_dilated(
        x, p["w"], (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + p["b"]


def _conv3x3_im2col(p, x):
    """`_apply_conv` of a 3x3 kernel (SAME, stride 1) as one matrix product over the nine
    shifted copies of `x`: on a CPU several times faster than `lax.conv` in training."""
    b, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate([xp[:, i : i + h, j : j + w] for i in range(3) for j in range(3)], -1)
    return patches @ p["w"].reshape(9 * c, -1) + p["b"]


def gate_kind(m: ml_collections.ConfigDict) -> str:
    return "none" if m.arch == "ca_only" else m.gate


def count_params(params: Params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


# --------------------------------------------------------------------------------------------
# CA lattice models (hybrid, CA only)


def init_lattice_model(key: jax.Array, m: ml_collections.ConfigDict) -> Params:
    """Encoder, CA step, gate (unless CA only) and read-out params."""
    c, h, mult = m.channels, m.hidden, m.dw_multiplier
    k = jax.random.split(key, 8)
    params = {
        "encoder": _dense(k[0], 2, c),
        "ca": {
            "dw": _he(k[1], (3, 3, c, mult), 9),
            "dw_b": jnp.zeros((c * mult,)),
            "mix": _dense(k[2], c * mult, h),
            "out": _dense(k[3], h, c, zero=True),
            "ln_scale": jnp.ones((c,)),
            "ln_bias": jnp.zeros((c,)),
        },
        "readout": _dense(k[4], c, 1),
    }
    gate = gate_kind(m)
    if gate == "local":
        params["gate"] = {
            "hidden": _conv(k[5], 3, c, m.gate_local_hidden),
            "delta": _dense(k[6], m.gate_local_hidden, c, zero=True),
        }
    elif gate != "none":
        g = {
            "hidden": _dense(k[5], m.gate_in, m.gate_hidden),
            "delta": _dense(k[6], m.gate_hidden, m.gate_out, zero=True),
        }
        if gate == "global":
            g["proj"] = _dense(k[7], c, 1)
            g["expand"] = _dense(jax.random.fold_in(k[7], 1), 1, c)
        elif gate == "patch":
            g["expand"] = _dense(k[7], m.gate_out // m.patch_size**2, c)
        params["gate"] = g
    return params


def encode(params: Params, x: jax.Array, keep: jax.Array) -> jax.Array:
    """x, keep: `(B, 28, 28)` -> initial lattice `(B, 32, 32, C)`."""
    inp = jnp.stack([x * keep, keep], -1)
    inp = jnp.pad(inp, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))
    return _apply_dense(params["encoder"], inp)


def ca_update(p: Params, s: jax.Array) -> jax.Array:
    """The CA's residual update: `(B, H, W, C)` -> `(B, H, W, C)`.

    The depthwise 3x3 (output channel `c * mult + m`, as `lax.conv` with `feature_group_count=C`
    orders it; `tests/hybrid` checks it against that) is nine shifted multiply-adds per
    multiplier `m`, each over all C channels, concatenated multiplier-major; the bias and the
    mix layer's rows are permuted to match. On a CPU this trains 1.5-2.1x faster than
    multiply-adds over a trailing `(C, mult)` pair of axes, whose backward pass made XLA loop
    over a minor axis of 2 (`benchmarks/hybrid_speed`); grouped `lax.conv` is far slower still.
    """
    b, h, w, c = s.shape
    mult = p["dw"].shape[-1]
    sp = jnp.pad(s, ((0, 0), (1, 1), (1, 1), (0, 0)))
    taps = [sp[:, i : i + h, j : j + w] for i in range(3) for j in range(3)]
    dw = p["dw"].reshape(9, c, mult)
    y = jnp.concatenate([sum(t * dw[k, :, m] for k, t in enumerate(taps)) for m in range(mult)], -1)

    def multiplier_major(a):  # rows ordered (c, m) -> (m, c)
        return a.reshape(c, mult, *a.shape[1:]).swapaxes(0, 1).reshape(a.shape)

    y = jax.nn.relu(y + multiplier_major(p["dw_b"]))
    y = jax.nn.relu(y @ multiplier_major(p["mix"]["w"]) + p["mix"]["b"])
    return _apply_dense(p["out"], y)


def layer_norm(s: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Per-cell LayerNorm over the channel axis."""
    mean = s.mean(-1, keepdims=True)
    var = ((s - mean) ** 2).mean(-1, keepdims=True)
    return (s - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def _normal(key: jax.Array, shape: tuple[int, ...], rows: Rows) -> jax.Array:
    """`jax.random.normal(key, shape)`, or a microbatch's rows of the batch's draw."""
    if rows is None:
        return jax.random.normal(key, shape)
    index, batch = rows
    return draws.normal_rows(key, index, batch, math.prod(shape[1:])).reshape(shape)


def _bernoulli(key: jax.Array, p: float, shape: tuple[int, ...], rows: Rows) -> jax.Array:
    """`jax.random.bernoulli(key, p, shape)`, or a microbatch's rows of the batch's draw."""
    if rows is None:
        return jax.random.bernoulli(key, p, shape)
    index, batch = rows
    return draws.bernoulli_rows(key, p, index, batch, math.prod(shape[1:])).reshape(shape)


def _mlp(g: Params, v: jax.Array, dropout: float, key: jax.Array | None, rows: Rows) -> jax.Array:
    hid = jax.nn.relu(_apply_dense(g["hidden"], v))
    if key is not None and dropout > 0:
        hid = hid * _bernoulli(key, 1 - dropout, hid.shape, rows) / (1 - dropout)
    return _apply_dense(g["delta"], hid)


def gate_delta(
    g: Params,
    s: jax.Array,
    m: ml_collections.ConfigDict,
    key: jax.Array | None = None,
    rows: Rows = None,
) -> jax.Array:
    """The gate's additive delta `(B, H, W, C)` in (-1, 1); `key` set means training (dropout;
    `rows`: a microbatch's)."""
    b, h, w, c = s.shape
    if m.gate == "local":
        return jnp.tanh(_apply_dense(g["delta"], jax.nn.relu(_conv3x3_im2col(g["hidden"], s))))
    if m.gate == "global":
        v = _apply_dense(g["proj"], s).reshape(b, h * w)
        d = _mlp(g, v, m.gate_dropout, key, rows)
        side = int(np.sqrt(m.gate_out))
        d = d.reshape(b, side, side, 1)
        d = jnp.repeat(jnp.repeat(d, h // side, 1), w // side, 2)
        return jnp.tanh(_apply_dense(g["expand"], d))
    if m.gate == "channel":
        pooled = s.reshape(b, h // 4, 4, w // 4, 4, c).mean((2, 4))  # (B, 8, 8, C)
        v = pooled.transpose(0, 3, 1, 2).reshape(b, -1)  # channel-major 1024-vector
        side = int(np.sqrt(m.gate_out // c))
        d = _mlp(g, v, m.gate_dropout, key, rows).reshape(b, c, side, side).transpose(0, 2, 3, 1)
        return jnp.tanh(jnp.repeat(jnp.repeat(d, h // side, 1), w // side, 2))
    if m.gate == "patch":
        ps = m.patch_size
        patches = s.reshape(b, h // ps, ps, w // ps, ps, c).transpose(0, 1, 3, 2, 4, 5)
        d = _mlp(g, patches.reshape(b, h // ps, w // ps, -1), m.gate_dropout, key, rows)
        d = d.reshape(b, h // ps, w // ps, ps, ps, -1).transpose(0, 1, 3, 2, 4, 5)
        return jnp.tanh(_apply_dense(g["expand"], d.reshape(b, h, w, -1)))
    raise ValueError(f"unknown gate {m.gate!r}; choose one of {', '.join(GATES)}.")


def ca_step(
    params: Params,
    s: jax.Array,
    m: ml_collections.ConfigDict,
    key: jax.Array | None = None,
    rows: Rows = None,
) -> jax.Array:
    """One CA step `(B, 32, 32, C) -> (B, 32, 32, C)`; `key` set means training (gate dropout,
    Gaussian state noise; `rows`: a microbatch's)."""
    return state_noise(ca_step_noiseless(params, s, m, key, rows), m, key, rows)


def ca_step_noiseless(params, s, m, key=None, rows: Rows = None) -> jax.Array:
    """`ca_step` before its state noise: the CA update, the gate's delta, the LayerNorm."""
    p = params["ca"]
    update = ca_update(p, s)
    if "gate" in params:
        k_gate = None if key is None else jax.random.fold_in(key, 0)
        update = update + gate_delta(params["gate"], s, m, k_gate, rows)
    return layer_norm(s + update, p["ln_scale"], p["ln_bias"])


def state_noise(s, m, key=None, rows: Rows = None) -> jax.Array:
    """`s` plus the training's Gaussian state noise (none without `key`)."""
    if key is None or m.state_noise_std == 0:
        return s
    return s + m.state_noise_std * _normal(jax.random.fold_in(key, 1), s.shape, rows)


def run_lattice(
    params: Params,
    s0: jax.Array,
    m: ml_collections.ConfigDict,
    key: jax.Array | None = None,
    damage: jax.Array | None = None,
    damage_step: int = 5,
    unroll: int | bool = 1,
    rows: Rows = None,
) -> jax.Array:
    """`m.num_ca_steps` CA steps from `s0` `(B, 32, 32, C)` in a `lax.scan`. `damage` `(B, 32,
    32, 1)` multiplies the state after `damage_step` steps (the damage test). `unroll=True` for
    XLA's cost analysis, which counts a loop body once. A microbatch (`rows` set) recomputes each
    step's activations in the backward pass instead of storing them (`jax.checkpoint`): with the
    small working set, a CPU trains 1.6-2.3x faster (`benchmarks/hybrid_speed`). The state noise
    stays outside the recomputed part: the backward pass does not need it, and drawing it again
    cost 12 % of a microbatch's gradient, 3-6 % of a CA-only or local-gate training step (best
    of 6 interleaved rounds, one core; this CPU's step times vary by 10-20 % between rounds)."""

    def noiseless(s, k):
        return ca_step_noiseless(params, s, m, k, rows)

    if rows is not None:
        noiseless = jax.checkpoint(noiseless)

    def body(s, t):
        k = None if key is None else jax.random.fold_in(key, t)
        s = state_noise(noiseless(s, k), m, k, rows)
        if damage is not None:
            s = jnp.where(t + 1 == damage_step, s * damage, s)
        return s, None

    s, _ = jax.lax.scan(body, s0, jnp.arange(m.num_ca_steps), unroll=unroll)
    return s


def readout(params: Params, s: jax.Array) -> jax.Array:
    """Lattice `(B, 32, 32, C)` -> image `(B, 28, 28)` in (0, 1)."""
    y = jax.nn.sigmoid(_apply_dense(params["readout"], s)[..., 0])
    return y[:, PAD:-PAD, PAD:-PAD]


# --------------------------------------------------------------------------------------------
# CNN autoencoder baseline


def init_autoencoder(key: jax.Array, m: ml_collections.ConfigDict) -> Params:
    w1, w2, w3 = m.ae_widths
    k = jax.random.split(key, 6)
    return {
        "enc1": _conv(k[0], 3, 2, w1),  # 28x28
        "enc2": _conv(k[1], 3, w1, w2),  # stride 2 -> 14x14
        "enc3": _conv(k[2], 3, w2, w3),  # stride 2 -> 7x7
        "dec1": _conv(k[3], 3, w3, w2),  # upsample -> 14x14
        "dec2": _conv(k[4], 3, w2, w1),  # upsample -> 28x28
        "out": _conv(k[5], 3, w1, 1),
    }


def _up2(x):
    return jnp.repeat(jnp.repeat(x, 2, 1), 2, 2)


def autoencoder(params: Params, x: jax.Array, keep: jax.Array, clip: bool = True) -> jax.Array:
    """x, keep `(B, 28, 28)` -> restored `(B, 28, 28)`, clipped to [0, 1] unless `clip=False`
    (training). A linear output: with a sigmoid output, MSE and Adam, this unnormalised network
    drove every pixel's sigmoid to 0 within 25 steps and never recovered (vanishing gradients
    that Adam's normalisation still follows at full speed)."""
    h = jnp.stack([x * keep, keep], -1)
    h = jax.nn.relu(_apply_conv(params["enc1"], h))
    h = jax.nn.relu(_apply_conv(params["enc2"], h, 2))
    h = jax.nn.relu(_apply_conv(params["enc3"], h, 2))
    h = jax.nn.relu(_apply_conv(params["dec1"], _up2(h)))
    h = jax.nn.relu(_apply_conv(params["dec2"], _up2(h)))
    out = _apply_conv(params["out"], h)[..., 0]
    return jnp.clip(out, 0.0, 1.0) if clip else out


# --------------------------------------------------------------------------------------------
# Digit-ID classifier (trained on clean digits, then frozen)


def init_classifier(key: jax.Array, m: ml_collections.ConfigDict) -> Params:
    w1, w2 = m.classifier_widths
    k = jax.random.split(key, 4)
    return {
        "conv1": _conv(k[0], 3, 1, w1),
        "conv2": _conv(k[1], 3, w1, w2),
        "dense": _dense(k[2], 7 * 7 * w2, m.classifier_dense),
        "logits": _dense(k[3], m.classifier_dense, 10),
    }


def _pool2(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max((2, 4))


def classifier_logits(params: Params, x: jax.Array) -> jax.Array:
    """x `(B, 28, 28)` in [0, 1] -> logits `(B, 10)`."""
    h = _pool2(jax.nn.relu(_apply_conv(params["conv1"], x[..., None])))
    h = _pool2(jax.nn.relu(_apply_conv(params["conv2"], h)))
    h = jax.nn.relu(_apply_dense(params["dense"], h.reshape(h.shape[0], -1)))
    return _apply_dense(params["logits"], h)


# --------------------------------------------------------------------------------------------
# One entry point per arch


def init_params(key: jax.Array, m: ml_collections.ConfigDict) -> Params:
    if m.arch in ("hybrid", "ca_only"):
        return init_lattice_model(key, m)
    if m.arch == "autoencoder":
        return init_autoencoder(key, m)
    if m.arch == "classifier":
        return init_classifier(key, m)
    raise ValueError(f"unknown model.arch {m.arch!r}; choose one of {', '.join(ARCHS)}.")


def restore(
    params: Params,
    x: jax.Array,
    keep: jax.Array,
    m: ml_collections.ConfigDict,
    key: jax.Array | None = None,
    damage: jax.Array | None = None,
    unroll: int | bool = 1,
    rows: Rows = None,
) -> jax.Array:
    """Restored digits `(B, 28, 28)` from observed pixels `x * keep`. `key` set means training
    (dropout, state noise); `damage` `(B, 32, 32, 1)` is the lattice damage test (CA models);
    `rows`: the digits are a microbatch of a training batch (`Rows`)."""
    if m.arch == "autoencoder":
        return autoencoder(params, x, keep, clip=key is None)
    s = run_lattice(params, encode(params, x, keep), m, key, damage, m.damage_step, unroll, rows)
    return readout(params, s)
