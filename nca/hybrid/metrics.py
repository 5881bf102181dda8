"""PSNR definitions and FLOP counts (analytic, and XLA's cost analysis of the jitted forward).

PSNR (the number this project reports): per image, peak 1.0, `10 log10(1 / MSE)` with the MSE over
all 784 pixels of the restored image against the clean digit (observed pixels are NOT pasted
back), then the mean over images. `mask=` restricts the MSE to the hidden pixels. Identical
images give +inf. `pooled_psnr` (one MSE over the whole set) is reported beside it.

FLOPs per sample of a forward pass in eval mode: `analytic_flops` counts 2 per multiply-add of
every dense / conv layer (`matmul`) and 1 per elementwise add, multiply, max, compare or
normalisation operation (`elementwise`); transcendental functions (tanh, sigmoid, rsqrt) are
counted apart, as XLA does. `xla_flops` asks XLA (`jitted.lower(...).compile().cost_analysis()`)
for the same forward with the CA loop unrolled (XLA counts a while-loop body once).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nca.hybrid import models


def psnr(pred, target, mask=None) -> np.ndarray:
    """Per-image PSNR `(B,)` in dB, peak 1.0. pred, target: `(B, H, W)` in [0, 1]; `mask`
    `(B, H, W)`: 1 on the pixels the MSE is taken over (all pixels when None)."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    err = (pred - target) ** 2
    if mask is None:
        mse = err.mean((1, 2))
    else:
        mask = np.asarray(mask, np.float64)
        mse = (err * mask).sum((1, 2)) / mask.sum((1, 2))
    with np.errstate(divide="ignore"):
        return -10.0 * np.log10(mse)


def mean_psnr(pred, target, mask=None) -> float:
    """The reported PSNR: the mean over images of the per-image PSNR."""
    return float(np.mean(psnr(pred, target, mask)))


def pooled_psnr(pred, target, mask=None) -> float:
    """PSNR of the MSE pooled over all images (>= nothing in particular; reported beside)."""
    err = (np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2
    mse = err.mean() if mask is None else (err * mask).sum() / np.sum(mask)
    with np.errstate(divide="ignore"):
        return float(-10.0 * np.log10(mse))


# --------------------------------------------------------------------------------------------
# FLOPs


def _dense(n, k, m):
    """n positions of a dense layer k -> m with bias: (matmul, elementwise)."""
    return 2 * n * k * m, n * m


def _taps(n_in: int, stride: int) -> int:
    """Kernel taps of a 3x3 SAME convolution along one axis that land inside the image (XLA
    does not count the multiply-adds on the zero padding)."""
    n_out = -(-n_in // stride)
    pad_lo = max((n_out - 1) * stride + 3 - n_in, 0) // 2
    return sum(0 <= o * stride - pad_lo + k < n_in for o in range(n_out) for k in range(3))


def _conv3(n_in, c_in, c_out, stride=1):
    """A 3x3 SAME convolution on an `n_in x n_in` image: (matmul, elementwise)."""
    n_out = -(-n_in // stride)
    return 2 * _taps(n_in, stride) ** 2 * c_in * c_out, n_out * n_out * c_out


def analytic_flops(m: ml_collections.ConfigDict) -> dict[str, int]:
    """Per-sample forward FLOPs: `{"matmul", "elementwise", "transcendental", "total"}` where
    total = matmul + elementwise (transcendentals apart, as XLA reports them)."""
    mm = el = tr = 0

    def add(pair, extra_el=0):
        nonlocal mm, el
        mm += pair[0]
        el += pair[1] + extra_el

    if m.arch == "autoencoder":
        w1, w2, w3 = m.ae_widths
        layers = (
            (28, 2, w1, 1),
            (28, w1, w2, 2),
            (14, w2, w3, 2),
            (14, w3, w2, 1),
            (28, w2, w1, 1),
        )
        for n, ci, co, stride in layers:
            add(_conv3(n, ci, co, stride), (n // stride) ** 2 * co)  # + ReLU
        add(_conv3(28, w1, 1))
        return {
            "matmul": mm,
            "elementwise": el + 784 * 2,
            "transcendental": 784,
            "total": mm + el + 784 * 2,
        }  # fmt: skip  (2 for the input [x*keep, keep])
    if m.arch == "classifier":
        w1, w2 = m.classifier_widths
        add(_conv3(28, 1, w1), 784 * w1 + 784 * w1 * 3 // 4)  # ReLU, 2x2 max pool
        add(_conv3(14, w1, w2), 196 * w2 + 196 * w2 * 3 // 4)
        add(_dense(1, 49 * w2, m.classifier_dense), m.classifier_dense)
        add(_dense(1, m.classifier_dense, 10))
        return {"matmul": mm, "elementwise": el, "transcendental": 0, "total": mm + el}

    hw, c, cm, hd = 32 * 32, m.channels, m.channels * m.dw_multiplier, m.hidden
    add(_dense(hw, 2, c), 784)  # encoder (and x * keep)
    step_mm = step_el = 0
    mm0, el0 = mm, el
    # depthwise 3x3: 9 multiplies + 8 adds per output, + bias, ReLU
    el += hw * cm * (9 + 8 + 1 + 1)
    add(_dense(hw, cm, hd), hw * hd)  # mix + ReLU
    add(_dense(hw, hd, c), 2 * hw * c)  # out, + residual add, + gate add
    el += hw * c * 8  # LayerNorm: mean, subtract, square, mean, scale, shift (approx.)
    tr += hw
    gate = models.gate_kind(m)
    if gate == "local":
        # its 3x3 conv is one im2col product: every tap counts, the zero padding's too
        add(_dense(hw, 9 * c, m.gate_local_hidden), hw * m.gate_local_hidden)  # + ReLU
        add(_dense(hw, m.gate_local_hidden, c))
        tr += hw * c
    elif gate != "none":
        n_mlp = (32 // m.patch_size) ** 2 if gate == "patch" else 1
        if gate == "global":
            add(_dense(hw, c, 1))
            add(_dense(hw, 1, c))
        elif gate == "channel":
            el += hw * c  # average pool
        else:
            add(_dense(hw, m.gate_out // m.patch_size**2, c))
        add(_dense(n_mlp, m.gate_in, m.gate_hidden), n_mlp * m.gate_hidden)
        add(_dense(n_mlp, m.gate_hidden, m.gate_out))
        tr += hw * c
    step_mm, step_el = mm - mm0, el - el0
    mm += step_mm * (m.num_ca_steps - 1)
    el += step_el * (m.num_ca_steps - 1)
    tr = tr * m.num_ca_steps + hw
    add(_dense(hw, c, 1))  # read-out
    return {"matmul": mm, "elementwise": el, "transcendental": tr, "total": mm + el}


def forward_fn(m: ml_collections.ConfigDict, unroll: int | bool = 1):
    """The eval-mode forward `(params, x, keep) -> restored` (restorers) or `(params, x) ->
    logits` (classifier)."""
    if m.arch == "classifier":
        return models.classifier_logits
    return lambda params, x, keep: models.restore(params, x, keep, m, unroll=unroll)


def xla_cost(m: ml_collections.ConfigDict, params, batch: int = 4) -> dict[str, float]:
    """Per-sample `flops` and `transcendentals` of the jitted forward, from XLA's cost analysis
    (the CA loop unrolled)."""
    x = jnp.zeros((batch, 28, 28))
    args = (params, x) if m.arch == "classifier" else (params, x, x)
    compiled = jax.jit(forward_fn(m, unroll=True)).lower(*args).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return {k: float(cost.get(k, 0.0)) / batch for k in ("flops", "transcendentals")}
