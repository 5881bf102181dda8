"""MetaNCA on convolutional task nets: the kernel-weight neighbourhoods against a brute-force
enumeration of the feature-map graph, the conv forward pass against a loop over pixels, its im2col
conv against `lax.conv`, and the architecture checks."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import metanca_mnist_cnn
from nca import loop
from nca.config import ConfigError
from nca.metanca import model
from nca.metanca import train as metanca_train

# 6x6 images with 3 channels: conv (3 maps, 3x3 -> 3x3 grid), conv (2 maps, 2x2 grid), a dense
# layer reading the 2x2x2 flattened maps (4 taps), and a last dense layer.
ARCH, GRID = (108, "c3", "c2", 5, 4), (6, 6)
SPEC = model.net_spec(ARCH, GRID)


def nodes(spec):
    """Every weight's (input node, output node) in the graph of units the net computes, per
    layer `{(row, col): (in, out)}`. Nodes: `("act", l, u)`, unit u of the activation that
    layer l reads (a neuron or a whole feature map); `("pix", l, row)`, one pixel of a map that
    a dense layer after a conv reads; `("bias", l)`, layer l's constant unit."""
    out = []
    for layer, s in enumerate(spec):
        table = {}
        for r, j in itertools.product(range(s.rows), range(s.n_out)):
            if r == s.rows - 1:
                source = ("bias", layer)
            elif s.kind == "conv" or s.taps == 1:
                source = ("act", layer, r % s.units)  # rows are (tap, unit), tap outer
            else:
                source = ("pix", layer, r)
            table[r, j] = (source, ("act", layer + 1, j))
        out.append(table)
    return out


def parent(node):
    """The map a pixel node belongs to (its unit: rows are (pixel, map), pixel outer)."""
    if node[0] == "pix":
        return ("act", node[1], node[2] % SPEC[node[1]].units)
    return node


def brute_force_means(values, spec, same_matrix_only=False):
    """Forward set of a weight: the other weights into its output node, and the weights out of
    that node (or out of a pixel of it) in the next layer. Backward set: the other weights out
    of its input node, and the weights into that node (or into the map it is a pixel of) in the
    previous layer; a bias is fed by nothing."""
    graph = nodes(spec)
    fwd = [np.zeros_like(v) for v in values]
    bwd = [np.zeros_like(v) for v in values]
    for layer, table in enumerate(graph):
        for (r, j), (src, dst) in table.items():
            f = [values[layer][k] for k, (_, d) in table.items() if d == dst and k != (r, j)]
            b = [values[layer][k] for k, (s, _) in table.items() if s == src and k != (r, j)]
            if not same_matrix_only and layer + 1 < len(graph):
                f += [values[layer + 1][k] for k, (s, _) in graph[layer + 1].items()
                      if parent(s) == dst]  # fmt: skip
            if not same_matrix_only and layer > 0 and src[0] != "bias":
                b += [values[layer - 1][k] for k, (_, d) in graph[layer - 1].items()
                      if d == parent(src)]  # fmt: skip
            fwd[layer][r, j] = np.mean(f, 0)
            bwd[layer][r, j] = np.mean(b, 0)
    return fwd, bwd


def test_spec_of_a_small_cnn():
    assert [(s.kind, s.taps, s.units, s.n_out, s.rows) for s in SPEC] == [
        ("conv", 9, 3, 3, 28), ("conv", 9, 3, 2, 28), ("dense", 4, 2, 5, 9), ("dense", 1, 5, 4, 6),
    ]  # fmt: skip
    assert SPEC[0].in_grid == (6, 6) and SPEC[1].in_grid == (3, 3) and SPEC[2].grid == (2, 2)


@pytest.mark.parametrize("same_matrix_only", [False, True])
def test_kernel_neighbourhoods_match_brute_force(same_matrix_only):
    rng = np.random.default_rng(0)
    values = [rng.normal(size=(s.rows, s.n_out, 2)).astype(np.float32) for s in SPEC]
    fwd, bwd = model.neighbourhood_means([jnp.asarray(v) for v in values], same_matrix_only, SPEC)
    want_f, want_b = brute_force_means(values, SPEC, same_matrix_only)
    for got, want in zip(fwd + bwd, want_f + want_b, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def conv_by_loops(x, w, s):
    """A SAME-padded strided conv of `x (H, W, units)` with kernel rows `(tap, unit)`, pixel by
    pixel (TensorFlow's SAME: the odd padding pixel goes after)."""
    k, (h, wd) = s.grid[0], s.in_grid
    oh, ow = -(-h // s.stride), -(-wd // s.stride)
    pad_y = max((oh - 1) * s.stride + k - h, 0) // 2
    pad_x = max((ow - 1) * s.stride + k - wd, 0) // 2
    out = np.tile(w[-1], (oh, ow, 1)).astype(np.float64)
    for oy, ox, ky, kx, u in itertools.product(
        range(oh), range(ow), range(k), range(k), range(s.units)
    ):
        y, xx = oy * s.stride + ky - pad_y, ox * s.stride + kx - pad_x
        if 0 <= y < h and 0 <= xx < wd:
            out[oy, ox] += x[y, xx, u] * w[(ky * k + kx) * s.units + u]
    return out


def test_conv_forward_matches_a_loop_over_pixels():
    """The forward pass reads the kernel rows and the flattened maps in the layout the
    neighbourhoods and position codes assume."""
    net = model.init_net(jax.random.PRNGKey(0), ARCH, 2, GRID)
    net = tuple(
        (w + 0.1 * jax.random.normal(jax.random.PRNGKey(i), w.shape), h)
        for i, (w, h) in enumerate(net)
    )  # fmt: skip  (non-zero biases)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(9), (2, 108)))
    ws = [np.asarray(w, np.float64) for w, _ in net]
    leaky = lambda a: np.where(a > 0, a, 0.01 * a)  # noqa: E731
    want = []
    for image in x:
        a = leaky(conv_by_loops(image.reshape(6, 6, 3), ws[0], SPEC[0]))
        a = leaky(conv_by_loops(a, ws[1], SPEC[1]))
        a = leaky(a.reshape(-1) @ ws[2][:-1] + ws[2][-1])  # (y, x, map) order
        want.append(a @ ws[3][:-1] + ws[3][-1])
    np.testing.assert_allclose(model.forward(net, jnp.asarray(x), SPEC), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "grid, units, stride", [((6, 6), 3, 2), ((3, 3), 3, 2), ((7, 5), 2, 2), ((5, 4), 2, 1)]
)
def test_conv_matches_lax_conv(grid, units, stride):
    """The im2col conv equals `lax.conv_general_dilated` (SAME) in values and gradients, with
    even and odd map sizes (asymmetric and symmetric padding) and strides 1 and 2."""
    s = model.LayerSpec("conv", 9, units, 4, (3, 3), grid, stride)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, *grid, units))
    w = jax.random.normal(jax.random.PRNGKey(1), (9 * units + 1, 4))
    results = [
        jax.value_and_grad(lambda x, w, f=f: jnp.sum(jnp.sin(f(x, w, s))), (0, 1))(x, w)
        for f in (model.conv, model.conv_reference)
    ]
    for got, want in zip(*map(jax.tree.leaves, results), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_weights_start_as_flax_conv_does():
    """LeCun normal over the fan-in 9 * units, bias zero; the hidden state codes map and tap."""
    nets = jax.vmap(lambda k: model.init_net(k, (784, "c16", 10), 4, (28, 28)))(
        jax.random.split(jax.random.PRNGKey(1), 64)
    )
    (w0, h0), (w1, _) = nets
    assert w0.shape == (64, 10, 16) and w1.shape == (64, 14 * 14 * 16 + 1, 10)
    assert abs(float(w0[:, :-1].std()) * 3.0 - 1.0) < 0.1 and not np.any(w0[:, -1])
    assert abs(float(w1[:, :-1].std()) * np.sqrt(14 * 14 * 16) - 1.0) < 0.05
    assert len({tuple(np.asarray(h0[0, r, 0])) for r in range(9)}) == 9  # each tap its own code


def test_rule_perceives_the_layer_kind():
    rule = model.init_rule(jax.random.PRNGKey(0), 6, (8,), layer_kind_input=True)
    assert rule["layers"][0]["kernel"].shape == (3 + 18 + 1, 8)
    rule["layers"][-1]["kernel"] = jnp.ones_like(rule["layers"][-1]["kernel"])
    net = model.init_net(jax.random.PRNGKey(1), ARCH, 2, GRID)
    base = dict(spec=SPEC, layer_kind_input=True)
    dws, _ = model.rule_update(rule, net, **base)
    assert [d.shape for d in dws] == [(s.rows, s.n_out) for s in SPEC]
    # the kind input reaches the update: flipping it changes a conv weight's update
    rule["layers"][0]["kernel"] = rule["layers"][0]["kernel"].at[-1].mul(-1.0)
    flipped, _ = model.rule_update(rule, net, **base)
    assert not np.allclose(dws[0], flipped[0]) and np.allclose(dws[3], flipped[3])


@pytest.mark.parametrize(
    "arch, grid, message",
    [
        ((784, 10, "c8", 10), (28, 28), "after a dense one"),
        ((784, "c8", 10), (), "need model.input_grid"),
        ((784, "cx", 10), (28, 28), "'cN' for a conv"),
        ((784, "c8"), (28, 28), "last layer must be dense"),
    ],
)
def test_bad_architectures_are_config_errors(arch, grid, message):
    config = metanca_mnist_cnn.get_config("smoke")
    with config.unlocked():
        config.test_archs = (arch,)
        config.model.input_grid = grid
    with pytest.raises(ConfigError, match=message):
        loop.check_config(config)


def test_one_meta_step_scores_every_training_shape_of_the_cnn_config():
    """One jitted meta-step of the CNN smoke config (an MLP and a CNN) gives each training
    architecture a finite loss near ln 10 (the initial rule leaves the init nets as they are)."""
    config = metanca_mnist_cnn.get_config("smoke")
    state = metanca_train.init_train_state(config)
    x = jax.random.normal(jax.random.PRNGKey(2), (16, 784))
    y = jnp.arange(16) % 10
    state, metrics = jax.jit(metanca_train.make_train_step(config))(
        state, {"x": x, "y": y}, jax.random.PRNGKey(3)
    )
    per_arch = {k: float(v) for k, v in metrics.items() if k.startswith("train/loss_")}
    assert len(per_arch) == len(config.train_archs)
    assert all(np.isfinite(v) and 1.5 < v < 4.0 for v in per_arch.values()), per_arch
