"""MetaNCA: neighbourhoods, the rule's invariances, and meta-training lowering the task loss."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import metanca_iris
from nca.config import ConfigError
from nca.metanca import data as metanca_data
from nca.metanca import model
from nca.metanca import train as metanca_train

ARCH = (3, 4, 2, 3)  # biases, a first, a middle and a last layer


def brute_force_means(values, same_matrix_only):
    """Forward and backward means by enumerating every weight's neighbours one by one."""
    sizes = [v.shape[0] - 1 for v in values] + [values[-1].shape[1]]
    depth = len(values)
    fwd = [np.zeros_like(v) for v in values]
    bwd = [np.zeros_like(v) for v in values]
    for layer, v in enumerate(values):
        n_in, n_out = sizes[layer], sizes[layer + 1]
        for i, j in itertools.product(range(n_in + 1), range(n_out)):
            f = [v[k, j] for k in range(n_in + 1) if k != i]  # j's other inputs and bias
            b = [v[i, k] for k in range(n_out) if k != j]  # i's other outgoing weights
            if not same_matrix_only:
                if layer + 1 < depth:  # j's outgoing weights
                    f += [values[layer + 1][j, k] for k in range(sizes[layer + 2])]
                if layer > 0 and i < n_in:  # what feeds i: weights and bias
                    b += [values[layer - 1][k, i] for k in range(sizes[layer - 1] + 1)]
            fwd[layer][i, j] = np.mean(f, 0)
            bwd[layer][i, j] = np.mean(b, 0)
    return fwd, bwd


@pytest.mark.parametrize("same_matrix_only", [False, True])
def test_neighbourhood_means_match_brute_force(same_matrix_only):
    rng = np.random.default_rng(0)
    values = [
        rng.normal(size=(a + 1, b, 2)).astype(np.float32)
        for a, b in zip(ARCH[:-1], ARCH[1:], strict=True)
    ]
    fwd, bwd = model.neighbourhood_means([jnp.asarray(v) for v in values], same_matrix_only)
    want_f, want_b = brute_force_means(values, same_matrix_only)
    for got, want in zip(fwd + bwd, want_f + want_b, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def random_rule(key, code_dims=3, hidden=(16,), scale=0.5):
    """A rule whose last layer is not zero (the initial rule is the identity)."""
    rule = model.init_rule(key, 3 * code_dims, hidden)
    last = rule["layers"][-1]
    last["kernel"] = scale * jax.random.normal(jax.random.fold_in(key, 1), last["kernel"].shape)
    return rule


def test_zero_rule_changes_nothing_and_a_random_one_does():
    state = model.init_net(jax.random.PRNGKey(0), ARCH, 3)
    zero = model.init_rule(jax.random.PRNGKey(1), 9, (16,))
    step = jax.jit(model.rule_step)
    same = step(zero, state, jax.random.PRNGKey(2))
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(same), strict=True):
        np.testing.assert_array_equal(a, b)
    moved = step(random_rule(jax.random.PRNGKey(1)), state, jax.random.PRNGKey(2))
    w0, w1 = state[0][0], moved[0][0]
    changed = np.mean(np.asarray(w0 != w1))
    assert 0.6 < changed < 0.95  # about fire_rate = 0.8 of the weights


def test_one_rule_runs_on_any_depth_and_width():
    rule = random_rule(jax.random.PRNGKey(3))

    def grow(nets, keys):
        def one(net, key):
            return model.rollout(
                rule,
                net,
                key,
                3,
                metric_fn=lambda s: model.cross_entropy(
                    model.forward(s, jnp.ones((2, s[0][0].shape[0] - 1))), jnp.zeros(2, int)
                ),
            )

        return jax.vmap(one)(nets, keys)

    for arch in [(4, 3), (4, 7, 5, 3), (6, 9, 9, 9, 2)]:
        keys = jax.random.split(jax.random.PRNGKey(4), 3)
        nets = jax.vmap(lambda k, a=arch: model.init_net(k, a, 3))(keys)  # 3 nets at once
        grown, losses = jax.jit(grow)(nets, keys)
        assert losses.shape == (3, 3) and np.isfinite(losses).all()
        for (w, h), (w0, h0) in zip(grown, nets, strict=True):
            assert w.shape == w0.shape and h.shape == h0.shape
            assert np.isfinite(w).all() and not np.allclose(w, w0)


def test_permuting_hidden_neurons_permutes_the_update():
    arch = (5, 6, 4, 3)
    rule = random_rule(jax.random.PRNGKey(5))
    state = model.init_net(jax.random.PRNGKey(6), arch, 3)
    perm = np.random.default_rng(0).permutation(6)  # neurons of the first hidden layer
    row_perm = np.concatenate([perm, [6]])  # the bias row stays last

    def permute(layers):
        (w0, h0), (w1, h1), rest = layers[0], layers[1], layers[2:]
        return ((w0[:, perm], h0[:, perm]), (w1[row_perm], h1[row_perm]), *rest)

    update = jax.jit(model.rule_update)
    dws, dhs = update(rule, state)
    p_dws, p_dhs = update(rule, permute(state))
    want = permute(tuple(zip(dws, dhs, strict=True)))
    for (dw, dh), pdw, pdh in zip(want, p_dws, p_dhs, strict=True):
        np.testing.assert_allclose(pdw, dw, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pdh, dh, rtol=1e-5, atol=1e-6)
    assert not np.allclose(p_dws[0], dws[0])  # the update is not permutation-invariant


def test_damage_zeroes_one_layer_and_a_share_of_the_rest():
    state = model.init_net(jax.random.PRNGKey(0), (20, 30, 30, 10), 2)
    state = tuple((w + 1.0, h) for w, h in state)  # no zero weights before
    hit = jax.jit(model.damage)(state, jax.random.PRNGKey(1))
    zero_share = [float(np.mean(np.asarray(w) == 0)) for w, _ in hit]
    assert sorted(zero_share)[-1] == 1.0
    assert all(0.2 < z < 0.4 for z in sorted(zero_share)[:-1])


def test_iris_is_vendored_and_split_80_20():
    d = metanca_data.load_iris()
    assert d["train_x"].shape == (120, 4) and d["test_x"].shape == (30, 4)
    assert set(np.unique(np.concatenate([d["train_y"], d["test_y"]]))) == {0, 1, 2}
    np.testing.assert_allclose(d["train_x"].mean(0), 0, atol=1e-5)


def test_mnist_resplit(mnist_dir):
    d = metanca_data.load_mnist_resplit(str(mnist_dir))
    assert d["train_x"].shape == (51, 784) and d["test_x"].shape == (13, 784)


def test_meta_training_lowers_the_task_loss():
    """A few dozen meta-steps on iris: the loss of freshly grown nets (fixed eval keys) drops."""
    config = metanca_iris.get_config("smoke")
    with config.unlocked():
        config.curriculum_steps = 0
        config.use_pool = False
        config.learning_rate = 3e-3
    task = metanca_data.load_iris()
    x, y = jnp.asarray(task["train_x"]), jnp.asarray(task["train_y"])

    @jax.jit
    def fresh_loss(rule):
        losses = []
        for arch in metanca_train.archs(config.train_archs):
            kw = metanca_train.step_kwargs(config, arch)
            keys = jax.random.split(jax.random.PRNGKey(99), 8)
            nets = metanca_train.init_nets(config, arch, keys)
            grown, _ = jax.vmap(
                lambda s, k, kw=kw: model.rollout(rule, s, k, config.num_rule_steps, **kw)
            )(nets, keys)
            losses.append(jax.vmap(lambda s: model.cross_entropy(model.forward(s, x), y))(grown))
        return jnp.mean(jnp.stack(losses))

    state = metanca_train.init_train_state(config)
    step = jax.jit(metanca_train.make_train_step(config), donate_argnums=0)
    before = float(fresh_loss(state.params))
    for t in range(40):
        state, metrics = step(state, {"x": x, "y": y}, jax.random.fold_in(state.rng, t))
    after = float(fresh_loss(state.params))
    assert int(state.step) == 40
    assert after < before - 0.1, (before, after)


def test_arch_weights_weight_the_meta_loss_per_architecture():
    """The objective is the `arch_weights`-weighted mean of the per-architecture losses, and it,
    not the plain mean, is what the rule's update follows."""
    task = metanca_data.load_iris()
    batch = {"x": jnp.asarray(task["train_x"]), "y": jnp.asarray(task["train_y"])}
    results = {}
    for weights in ((), (3.0, 1.0)):
        config = metanca_iris.get_config("smoke")  # two training architectures
        with config.unlocked():
            config.arch_weights = weights
        metanca_train.validate_config(config)
        state = metanca_train.init_train_state(config)
        step = jax.jit(metanca_train.make_train_step(config))
        results[weights] = step(state, batch, jax.random.PRNGKey(3))
    (equal, m_equal), (weighted, m_weighted) = results.values()
    names = [f"train/loss_{metanca_train.arch_name(a)}" for a in ((4, 3), (4, 6, 3))]
    losses = [float(m_equal[n]) for n in names]
    assert losses == [float(m_weighted[n]) for n in names]  # same nets, same per-arch losses
    assert abs(losses[0] - losses[1]) > 1e-3
    assert float(m_equal["train/loss"]) == pytest.approx(np.mean(losses), rel=1e-6)
    assert float(m_weighted["train/loss"]) == pytest.approx(
        (3 * losses[0] + losses[1]) / 4, rel=1e-6
    )
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), equal.params, weighted.params)
    assert max(jax.tree.leaves(moved)) > 0
    config = metanca_iris.get_config("smoke")
    for bad, why in (((1.0,), "must be 2 numbers"), ((1.0, 0.0), "every entry must be > 0")):
        with config.unlocked():
            config.arch_weights = bad
        with pytest.raises(ConfigError, match=why):
            metanca_train.validate_config(config)


def test_fan_in_scaling_makes_the_rule_width_independent():
    """Why fan-in scaling is on by default: one rule step moves the logits of a wide net as much
    as those of a narrow one with it, and explodes them without it. (Unscaled, the rule's O(1)
    updates swamp the 1 / sqrt(n_in) init weights of a 784-wide layer: every hidden unit then
    sums hundreds of pixels with near-equal weights, the outputs stop depending on the input
    pattern, and meta-training settles on uniform predictions, loss ln 10.)"""
    rule = random_rule(jax.random.PRNGKey(7), scale=0.3)
    x = jax.random.normal(jax.random.PRNGKey(8), (64, 784))

    @functools.partial(jax.jit, static_argnums=(0, 1))
    def logit_scale(arch, fan_in_scaling):
        net = model.init_net(jax.random.PRNGKey(9), arch, 3)
        grown, _ = model.rollout(
            rule, net, jax.random.PRNGKey(10), 3, fan_in_scaling=fan_in_scaling
        )
        return jnp.std(model.forward(grown, x[:, : arch[0]]))

    narrow, wide = (16, 16, 16, 10), (784, 256, 64, 10)
    scaled = float(logit_scale(wide, True) / logit_scale(narrow, True))
    unscaled = float(logit_scale(wide, False) / logit_scale(narrow, False))
    assert scaled < 15 and unscaled > 30 * scaled, (scaled, unscaled)  # measured: 7.5, 665


def test_init_from_starts_a_fresh_run_from_a_trained_rule(tmp_path):
    """`init_from` copies a workdir's newest rule into a fresh run (step 0, fresh Adam); a rule of
    another shape, or a folder without checkpoints, is a clear config error."""
    from nca import checkpoint, loop  # noqa: PLC0415
    from nca.config import ConfigError  # noqa: PLC0415

    source = metanca_iris.get_config("smoke")  # 8 meta-steps
    loop.train_and_evaluate(source, tmp_path / "source", progress=False)
    _, trained, _ = checkpoint.load_params(tmp_path / "source")

    config = metanca_iris.get_config("smoke")
    with config.unlocked():
        config.seed = 1
        config.train_archs = ((4, 3), (4, 7, 3))
        config.init_from = str(tmp_path / "source")
    state = metanca_train.init_train_state(config)
    assert int(state.step) == 0
    jax.tree.map(np.testing.assert_array_equal, state.params, trained)
    fresh = metanca_train.init_train_state(metanca_iris.get_config("smoke"))
    assert not np.array_equal(np.asarray(fresh.params["layers"][0]["kernel"]),
                              np.asarray(state.params["layers"][0]["kernel"]))  # fmt: skip

    with config.unlocked():
        config.model.rule_hidden = (8,)
    with pytest.raises(ConfigError, match="this config's rule needs"):
        metanca_train.init_train_state(config)
    with config.unlocked():
        config.init_from = str(tmp_path)
    with pytest.raises(ConfigError, match="not a training workdir"):
        metanca_train.init_train_state(config)


def test_a_fine_tune_resumes_without_its_init_from(tmp_path):
    """A run started from `init_from` resumes from its own checkpoints after that workdir is gone
    (a fine-tune restored from its bundle alone)."""
    import shutil  # noqa: PLC0415

    from nca import checkpoint, loop  # noqa: PLC0415

    loop.train_and_evaluate(metanca_iris.get_config("smoke"), tmp_path / "source", progress=False)
    config = metanca_iris.get_config("smoke")
    with config.unlocked():
        config.init_from = str(tmp_path / "source")
        config.checkpoint_every = 4
    loop.train_and_evaluate(config, tmp_path / "tune", max_iterations=4, progress=False)
    shutil.rmtree(tmp_path / "source")
    final = loop.train_and_evaluate(config, tmp_path / "tune", progress=False)
    assert int(final.step) == config.num_train_steps
    assert checkpoint.all_steps(tmp_path / "tune")[-1] == config.num_train_steps
