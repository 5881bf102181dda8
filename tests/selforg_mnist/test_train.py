"""The training step, pool semantics, resume, and data parallelism."""

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nca import checkpoint, loop
from nca.config import ConfigError, load_config
from nca.selforg_mnist import model, pretrained, train
from tests.conftest import run_python


def tiny_config(mnist_dir, spec="l2_noise:smoke", **overrides):
    config = load_config(spec)
    config.data.mnist_dir = str(mnist_dir)
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture(scope="module")
def setup(mnist_dir):
    config = tiny_config(mnist_dir)
    images, labels = train.load_training_data(config)
    mesh = loop.make_mesh(1)
    state = train.init_train_state(config, images, labels)
    return config, images, labels, state, jax.jit(train.make_train_step(config, mesh))


def test_assemble_batch_seeds_first_quarter_and_mutates_last(setup):
    config, images, labels, state, _ = setup
    # give every pool member a recognisable non-zero state
    state = state.replace(pool_states=state.pool_states.at[..., 1:].set(7.0))
    batch = train.sample_fresh_digits(config, images, labels, step=3)
    assert batch["images"].shape[0] == 2 * (config.batch_size // 4)
    x, y, idx = train.assemble_batch(config, state, batch, jax.random.PRNGKey(0))
    q = config.batch_size // 4
    assert len(set(np.asarray(idx).tolist())) == config.batch_size  # without replacement
    np.testing.assert_array_equal(x[:q, ..., 0], batch["images"][:q])
    np.testing.assert_array_equal(x[:q, ..., 1:], 0.0)  # fresh digits start at zero
    np.testing.assert_array_equal(y[:q], batch["labels"][:q])
    np.testing.assert_array_equal(x[q:-q], state.pool_states[idx[q:-q]])  # middle persists
    np.testing.assert_array_equal(y[-q:], batch["labels"][q:])
    np.testing.assert_array_equal(
        x[-q:], model.mutate(state.pool_states[idx[-q:]], batch["images"][q:])
    )
    assert np.any(np.asarray(x[-q:, ..., 1:]) == 7.0)  # mutants keep their old states


def test_no_pool_and_no_mutation_variants(mnist_dir):
    images = jnp.ones((8, 28, 28))
    labels = jnp.arange(8) % 10
    for spec, n_fresh in (("l2_noise:no_pool,smoke", 4), ("l2_noise:no_mutation,smoke", 2)):
        config = tiny_config(mnist_dir, spec)
        assert train.num_fresh_digits(config) == n_fresh
        state = train.init_train_state(config, images, labels)
        state = state.replace(pool_states=state.pool_states.at[..., 1:].set(7.0))
        batch = {"images": images[:n_fresh], "labels": labels[:n_fresh]}
        x, y, idx = train.assemble_batch(config, state, batch, jax.random.PRNGKey(0))
        assert x.shape == (config.batch_size, 28, 28, 20)
        assert (idx is None) == (not config.use_pool)
        if config.use_pool:  # the notebook's "persistent" model: both quarters fresh digits
            b = config.batch_size
            q = b // 4
            fresh = np.concatenate([np.arange(q), np.arange(b - q, b)])
            np.testing.assert_array_equal(x[fresh], model.seed_state(batch["images"]))
            np.testing.assert_array_equal(y[fresh], batch["labels"])
            assert np.all(np.asarray(x[q:-q, ..., 1:]) == 7.0)  # the middle half persists


def test_train_step_writes_back_pool_and_steps_adam(setup):
    config, images, labels, state, step_fn = setup
    batch = train.sample_fresh_digits(config, images, labels, step=0)
    key = jax.random.PRNGKey(5)
    new_state, metrics = step_fn(state, batch, key)
    assert int(new_state.step) == 1
    assert np.isfinite(metrics["train/loss"]) and float(metrics["train/lr"]) == pytest.approx(
        config.learning_rate
    )
    changed = np.any(np.asarray(new_state.pool_states != state.pool_states), axis=(1, 2, 3))
    _, _, idx = train.assemble_batch(config, state, batch, jax.random.split(key)[0])
    assert set(np.flatnonzero(changed)) <= set(np.asarray(idx).tolist())
    assert changed.sum() >= config.batch_size // 2  # the states moved (output layer now non-zero)
    # Adam with normalised gradients moves every output weight by ~lr on the first step
    delta = np.abs(new_state.params["output"]["kernel"] - state.params["output"]["kernel"])
    assert 0.5 * config.learning_rate < delta.max() <= 1.01 * config.learning_rate


def test_gradient_normalisation_is_per_tensor():
    grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([[0.0, 10.0]])}
    out, _ = train.normalize_per_tensor(1e-8).update(grads, None)
    np.testing.assert_allclose(out["a"], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(out["b"], [[0.0, 1.0]], rtol=1e-6)


def test_loss_goes_down_on_synthetic_digits(mnist_dir, tmp_path):
    config = tiny_config(
        mnist_dir,
        "l2:no_pool,smoke",
        num_train_steps=200,
        batch_size=8,
        learning_rate=3e-3,
        lr_boundaries=(1000, 2000),
        log_every=1,
        checkpoint_every=200,
    )
    loop.train_and_evaluate(config, tmp_path, progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    losses = [r["train/loss"] for r in rows]
    assert len(rows) == 200 and rows[-1]["step"] == 200
    assert np.mean(losses[-20:]) < 0.7 * np.mean(losses[:20]), losses


def test_resume_continues_exactly_like_an_uninterrupted_run(mnist_dir, tmp_path):
    config = tiny_config(mnist_dir, num_train_steps=8, checkpoint_every=2)
    straight = loop.train_and_evaluate(config, tmp_path / "a", progress=False)
    first = loop.train_and_evaluate(config, tmp_path / "b", max_iterations=3, progress=False)
    assert int(first.step) == 3
    assert checkpoint.manager(tmp_path / "b").latest_step() == 3  # saved when stopped early
    resumed = loop.train_and_evaluate(config, tmp_path / "b", progress=False)
    assert int(resumed.step) == 8
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    _, params, step = checkpoint.load_params(tmp_path / "b")
    assert step == 8
    jax.tree.map(np.testing.assert_array_equal, params, jax.device_get(straight.params))


@pytest.mark.parametrize(
    "impl, randomness",
    [("conv", "the same masks and noise"), ("table", "no masks nor noise: per-device draws")],
)
def test_four_devices_compute_the_same_loss_as_one(mnist_dir, impl, randomness):
    # `conv` is sharded automatically and draws what one device draws; `table` rolls out each
    # device's slice (fast.per_device) with its own draws, so it is compared without randomness.
    deterministic = impl == "table"
    script = textwrap.dedent(f"""
        import jax
        jax.config.update("jax_num_cpu_devices", 4)
        import numpy as np
        from nca import loop
        from nca.config import load_config
        from nca.selforg_mnist import train
        config = load_config("l2_noise:smoke")
        config.data.mnist_dir = {str(mnist_dir)!r}
        config.model.impl = {impl!r}
        if {deterministic}:
            config.model.fire_rate, config.model.noise_std = 1.0, 0.0
        results = []
        for n in (1, 4):
            mesh = loop.make_mesh(n)
            assert train.uses_per_device_rollout(config, mesh) == ({deterministic} and n == 4)
            trainer = train.make_trainer(config, mesh)
            state, step = loop.compile_trainer(trainer, mesh)
            for t in range(3):
                batch = loop.sample_batch(trainer.train_data, trainer.batch_size, config.seed, t)
                state, metrics = step(state, batch, jax.random.fold_in(state.rng, t))
            assert len(state.pool_states.sharding.device_set) == n
            results.append((float(metrics["train/loss"]), jax.device_get(state.params)))
        (loss1, p1), (loss4, p4) = results
        print("losses", loss1, loss4)
        np.testing.assert_allclose(loss1, loss4, rtol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), p1, p4)
    """)
    assert "losses" in run_python(script)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(mnist_dir, tmp_path, monkeypatch):
    config = tiny_config(mnist_dir, num_train_steps=4, checkpoint_every=4)
    loop.train_and_evaluate(config, tmp_path, progress=False)
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    monkeypatch.setitem(train.losses.LOSSES, "l2", lambda state, labels: jnp.nan * state.sum())
    config.num_train_steps = 12
    with pytest.raises(loop.TrainingError, match=r"non-finite .* iteration 6.*step 4, is left"):
        loop.train_and_evaluate(config, tmp_path, progress=False)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    _, params, step = checkpoint.load_params(tmp_path)
    assert step == 4 and all(np.isfinite(p).all() for p in jax.tree.leaves(params))


def test_resuming_with_a_shape_changing_config_is_refused(mnist_dir, tmp_path):
    config = tiny_config(mnist_dir, num_train_steps=2, checkpoint_every=2)
    loop.train_and_evaluate(config, tmp_path, progress=False)
    config.pool_size = 32
    config.num_train_steps = 4
    with pytest.raises(checkpoint.CheckpointError, match=r"another config \(pool_size: 16 -> 32\)"):
        loop.train_and_evaluate(config, tmp_path, progress=False)
    assert checkpoint.manager(tmp_path).all_steps() == [2]


def test_moving_later_learning_rate_drops_is_resumable_moving_past_ones_is_not():
    # Resuming at 16,000 with the drops moved from (30k, 70k) to (20k, 32k): same history so far.
    assert train.resumable("lr_boundaries", [30_000, 70_000], [20_000, 32_000], 16_000)
    assert not train.resumable("lr_boundaries", [30_000, 70_000], [10_000, 32_000], 16_000)
    assert not train.resumable("lr_boundaries", [10_000], [12_000], 16_000)
    assert train.resumable("num_train_steps", 100_000, 40_000, 16_000)
    assert train.resumable("model.impl", "conv", "alive", 16_000)
    assert not train.resumable("learning_rate", 1e-3, 2e-3, 16_000)
    assert not checkpoint.resumable("lr_boundaries", [30_000], [40_000], 16_000)  # core: no


def test_init_from_starts_at_a_shipped_model_or_a_workdir_and_rejects_others(mnist_dir, tmp_path):
    key = jax.random.PRNGKey(0)
    _, shipped = pretrained.load("l2_noise")
    from_name = train.initial_params(tiny_config(mnist_dir, init_from="l2_noise"), key)
    jax.tree.map(np.testing.assert_array_equal, from_name, shipped)

    config = tiny_config(mnist_dir, init_from="l2_noise", num_train_steps=2)
    finetuned = loop.train_and_evaluate(config, tmp_path / "ca", progress=False)
    after = jax.device_get(finetuned.params)
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), after, shipped)
    assert 0 < max(jax.tree.leaves(moved)) < 0.1  # trained on from the shipped params
    _, saved, _ = checkpoint.load_params(tmp_path / "ca")
    from_workdir = train.initial_params(tiny_config(mnist_dir, init_from=str(tmp_path / "ca")), key)
    jax.tree.map(np.testing.assert_array_equal, from_workdir, saved)

    with pytest.raises(ConfigError, match="neither a shipped model"):
        train.initial_params(tiny_config(mnist_dir, init_from="no_such_model"), key)
    wider = tiny_config(mnist_dir, init_from="l2_noise")
    wider.model.perception_filters = 96  # widened: the same function (test_model), 96 filters
    widened = train.initial_params(wider, key)
    assert model.perception_filters(widened) == 96
    corner = widened["hidden"]["kernel"][:80, :80]
    np.testing.assert_array_equal(corner, shipped["hidden"]["kernel"])
    narrower = tiny_config(mnist_dir, init_from=str(tmp_path / "ca"))
    narrower.model.perception_filters = 64
    with pytest.raises(ConfigError, match="80 perception filters; this config needs 64"):
        train.initial_params(narrower, key)
    metanca_config = load_config("metanca_iris:smoke")
    metanca_config.num_train_steps = 1
    loop.train_and_evaluate(metanca_config, tmp_path / "metanca", progress=False)
    with pytest.raises(ConfigError, match="'metanca' model"):
        train.initial_params(tiny_config(mnist_dir, init_from=str(tmp_path / "metanca")), key)
