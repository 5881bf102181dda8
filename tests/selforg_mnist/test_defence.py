"""The defended CA's game (nca/selforg_mnist/defence.py): both players' gradients against direct
autodiff of the dense reference, the plain trainer's step when nobody attacks, and a run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nca import checkpoint, loop
from nca.config import ConfigError
from nca.selforg_mnist import adversarial, defence, model, pretrained, train
from tests.selforg_mnist.test_adversarial import continue_from_bundle_without, two_rules
from tests.selforg_mnist.test_fast import KEY, assert_grads_close
from tests.selforg_mnist.test_train import tiny_config

TARGET = 8


def reference_gradients(params, other, mask, state, labels, fire_rate, noise_std,
                        attacked_loss="label", anchor=None, anchor_weight=0.0):  # fmt: skip
    """Each player's loss and gradient by `jax.value_and_grad` of its own dense rollout."""
    one_hot = jax.nn.one_hot(labels, 10)[:, None, None, :]
    attacked = np.asarray(jnp.any(mask, axis=(1, 2, 3)))
    counted = np.ones((len(labels), 1, 1, 10))  # the class channels in the defender's loss
    if attacked_loss == "not_target":
        counted[attacked] = np.eye(10)[TARGET]

    def final(p, o):
        return adversarial.mixed_rollout(p, o, mask, state, KEY, 20, fire_rate, noise_std,
                                         impl="conv")[0]  # fmt: skip

    def defender(p):
        x = final(p, other)
        err = (one_hot * model.alive_mask(x) - model.class_channels(x)) * ~mask * counted
        loss = jnp.sum(jnp.square(err)) / 2 / len(labels)
        if anchor is not None:  # every mutable channel of the clean members
            drift = (x - anchor)[~attacked][..., 1:]
            loss += anchor_weight * jnp.sum(jnp.square(drift)) / 2 / (~attacked).sum()
        return loss

    def attacker(o):
        x = final(params, o)
        err = jax.nn.one_hot(TARGET, 10) * model.alive_mask(x) - model.class_channels(x)
        return jnp.sum(jnp.square(err[attacked])) / 2 / attacked.sum()

    return jax.value_and_grad(defender)(params), jax.value_and_grad(attacker)(other)


@pytest.mark.parametrize(
    "impl, attacked_loss, anchored",
    [("conv", "label", False), ("table", "label", False), ("table", "not_target", False),
     ("conv", "label", True), ("table", "label", True)],
)  # fmt: skip
def test_game_gradients_are_each_players_own(impl, attacked_loss, anchored):
    params, other, mask, state, labels = two_rules()
    mask = mask.at[1].set(False)  # a clean member: in the defender's loss, not the adversary's
    # every cell fires, no noise: the table's own draws then give the same function
    fire_rate, noise_std = (1.0, 0.0) if impl == "table" else (0.5, 0.02)
    anchor = jax.random.normal(KEY, state.shape) if anchored else None
    want_d, want_a = reference_gradients(params, other, mask, state, labels, fire_rate, noise_std,
                                         attacked_loss, anchor, anchor_weight=0.3)  # fmt: skip
    _, got_d, got_a = jax.jit(
        defence.game_gradients,
        static_argnames=("target", "num_steps", "fire_rate", "noise_std", "impl", "attacked_loss"),
    )(params, other, mask, state, labels, KEY, target=TARGET, num_steps=20, fire_rate=fire_rate,
      noise_std=noise_std, impl=impl, attacked_loss=attacked_loss, anchor=anchor,
      anchor_weight=0.3)  # fmt: skip
    for (loss, grads), (want_loss, want_grads) in ((got_d, want_d), (got_a, want_a)):
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
        assert_grads_close(grads, want_grads)


def test_nobody_attacked_is_the_plain_trainers_step(mnist_dir):
    config = tiny_config(mnist_dir, "l2_noise_defended:smoke")
    config.defence.attacked_share = 0.0
    mesh = loop.make_mesh(1)
    trainer = train.make_trainer(config, mesh)
    state = trainer.init_state
    assert not state.pool_masks.any()
    batch = loop.sample_batch(trainer.train_data, trainer.batch_size, config.seed, 0)
    key = jax.random.fold_in(state.rng, 0)
    got, metrics = jax.jit(trainer.train_step)(state, batch, key)
    plain_state = train.TrainState.create(
        state.params, train.make_optimizer(config), state.rng,
        pool_states=state.pool_states, pool_labels=state.pool_labels,
    )  # fmt: skip
    want, want_metrics = jax.jit(train.make_train_step(config, mesh))(plain_state, batch, key)
    jax.tree.map(np.testing.assert_array_equal, got.params, want.params)
    np.testing.assert_array_equal(got.pool_states, want.pool_states)
    np.testing.assert_array_equal(metrics["train/loss"], want_metrics["train/loss"])
    jax.tree.map(np.testing.assert_array_equal, got.adversary, state.adversary)  # no gradient
    assert float(metrics["train/attacked_share"]) == 0.0


@pytest.mark.parametrize("redraw", [0.0, 1.0])
def test_redraw_releases_attacked_members(mnist_dir, redraw):
    config = tiny_config(mnist_dir, "l2_noise_defended:smoke")
    config.defence.attacked_share, config.defence.redraw = 0.0, redraw  # a new mask is empty
    trainer = train.make_trainer(config, loop.make_mesh(1))
    state = trainer.init_state
    state = state.replace(pool_masks=jnp.ones_like(state.pool_masks))  # every member attacked
    batch = loop.sample_batch(trainer.train_data, trainer.batch_size, config.seed, 0)
    new, metrics = jax.jit(trainer.train_step)(state, batch, jax.random.fold_in(state.rng, 0))
    # the fresh quarter draws an empty mask; the members from the pool keep theirs or are released
    assert float(metrics["train/attacked_share"]) == (0.75 if redraw == 0 else 0.0)
    assert int(new.pool_masks.any(axis=(1, 2, 3)).sum()) == (
        config.pool_size - config.batch_size // 4
        if redraw == 0
        else config.pool_size - config.batch_size
    )
    # runs saved before the option existed resume with it off, and only off
    assert train.resumable("defence.redraw", None, 0.0, 100)
    assert not train.resumable("defence.redraw", None, 0.25, 100)


def test_defence_run_trains_both_players_and_exports_the_defender(mnist_dir, tmp_path):
    config = tiny_config(mnist_dir, "l2_noise_defended:smoke", num_train_steps=8, log_every=2)
    final = loop.train_and_evaluate(config, tmp_path, progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [2, 4, 6, 8]
    assert all(np.isfinite(r["train/adversary_loss"]) and r["train/adversary_loss"] > 0
               for r in rows)  # fmt: skip
    assert np.mean([r["train/attacked_share"] for r in rows]) > 0.1
    init = train.make_trainer(config, loop.make_mesh(1)).init_state
    for trained, fresh in ((final.params, init.params), (final.adversary, init.adversary)):
        assert not np.allclose(trained["hidden"]["kernel"], fresh["hidden"]["kernel"])
    # the workdir's model is the defender: what attack, evaluate and export load
    _, params, step = checkpoint.load_params(tmp_path)
    assert step == 8
    jax.tree.map(np.testing.assert_array_equal, params, jax.device_get(final.params))
    masked = np.asarray(final.pool_masks).mean()
    assert 0.01 < masked < 0.1  # 10 % of the cells of about half of the members


def test_a_fine_tune_starts_both_players_from_shipped_models(mnist_dir):
    config = tiny_config(mnist_dir, "l2_noise_defended:smoke")
    config.init_from, config.defence.adversary_init = "l2_noise", "adversary_eight"
    state = train.make_trainer(config, loop.make_mesh(1)).init_state
    for got, name in ((state.params, "l2_noise"), (state.adversary, "adversary_eight")):
        jax.tree.map(np.testing.assert_array_equal, got, pretrained.load(name)[1])
    config.defence.adversary_init = "no_such_adversary"
    with pytest.raises(ConfigError, match="defence.adversary_init 'no_such_adversary' is neither"):
        train.make_trainer(config, loop.make_mesh(1))


def test_a_defence_fine_tune_resumes_without_its_adversary_workdir(mnist_dir, tmp_path):
    """A game started from `defence.adversary_init=WORKDIR` continues from its bundle after that
    workdir is gone."""
    loop.train_and_evaluate(tiny_config(mnist_dir, num_train_steps=2), tmp_path / "adversary",
                            progress=False)  # fmt: skip
    config = tiny_config(mnist_dir, "l2_noise_defended:smoke", num_train_steps=8,
                         checkpoint_every=4)  # fmt: skip
    config.defence.adversary_init = str(tmp_path / "adversary")
    continue_from_bundle_without(config, tmp_path / "adversary", tmp_path)


def test_defence_config_errors(mnist_dir):
    config = tiny_config(mnist_dir, "l2_noise_defended:smoke", use_pool=False)
    with pytest.raises(ConfigError, match="defence section trains with the pool and mutation"):
        train.validate_config(config)
    config = tiny_config(mnist_dir, "l2_noise_defended:smoke", loss="ce")
    with pytest.raises(ConfigError, match="a defence trains the l2 loss"):
        train.validate_config(config)
    config = tiny_config(mnist_dir, "l2_noise_defended:smoke")
    config.defence.attacked_share = 1.5
    with pytest.raises(ConfigError, match=r"defence.attacked_share=1.5 is out of range"):
        loop.check_config(config)
    config = tiny_config(mnist_dir, "l2_noise_defended:smoke")
    config.defence.attacked_loss = "target"
    with pytest.raises(ConfigError, match="unknown defence.attacked_loss 'target'; choose one of"):
        train.validate_config(config)


def test_random_rules_train_the_defender_against_a_new_rule_each_iteration(mnist_dir):
    config = tiny_config(mnist_dir, "l2_noise_defended:smoke")
    config.defence.attacked_share, config.defence.random_rules = 1.0, 0.1
    trainer = train.make_trainer(config, loop.make_mesh(1))
    state = trainer.init_state
    batch = loop.sample_batch(trainer.train_data, trainer.batch_size, config.seed, 0)
    new, metrics = jax.jit(trainer.train_step)(state, batch, jax.random.fold_in(state.rng, 0))
    assert "train/adversary_loss" not in metrics  # no adversary trains, so none is logged
    # a fresh defender's output layer is zero, so only it moves on the first step
    assert not np.allclose(new.params["output"]["kernel"], state.params["output"]["kernel"])
    for got, want in ((new.adversary, state.adversary),
                      (new.adversary_opt_state, state.adversary_opt_state)):  # fmt: skip
        jax.tree.map(np.testing.assert_array_equal, got, want)  # nobody trains the foreign rule
    # the game's step against its own (untrained) adversary is another step
    config.defence.random_rules = 0.0
    game = train.make_trainer(config, loop.make_mesh(1))
    game_new, _ = jax.jit(game.train_step)(state, batch, jax.random.fold_in(state.rng, 0))
    assert not np.allclose(game_new.params["output"]["kernel"], new.params["output"]["kernel"])
    # each key draws another rule, the output layer at `scale` times Glorot's
    one, two = defence.random_rule(KEY, 0.1), defence.random_rule(jax.random.fold_in(KEY, 1), 0.1)
    assert not np.allclose(one["output"]["kernel"], two["output"]["kernel"])
    limit = 0.1 * np.sqrt(6 / (model.PERCEPTION_FILTERS + model.NUM_MUTABLE))
    assert 0.5 * limit < np.abs(one["output"]["kernel"]).max() <= limit
    # runs saved before the option existed resume with it off, and only off
    assert train.resumable("defence.random_rules", None, 0.0, 100)
    assert not train.resumable("defence.random_rules", None, 0.1, 100)


def test_the_defender_gradient_skips_a_frozen_foreign_rule():
    params, other, mask, state, labels = two_rules()
    kwargs = dict(target=TARGET, num_steps=20, fire_rate=0.5, noise_std=0.02, impl="conv")
    _, (loss, grads), (_, both_other) = defence.game_gradients(
        params, other, mask, state, labels, KEY, **kwargs
    )
    _, (frozen_loss, frozen_grads), (_, none) = defence.game_gradients(
        params, other, mask, state, labels, KEY, adversary_trains=False, **kwargs
    )
    assert none is None and both_other is not None
    np.testing.assert_allclose(frozen_loss, loss, rtol=1e-6)
    assert_grads_close(frozen_grads, grads)


def test_an_anchor_at_the_defender_is_free_and_another_one_pulls(mnist_dir):
    """Anchored to the model it starts from, the defender's first step is the unanchored one
    (same draws, so no drift and no gradient from it); anchored to another model, it is not."""
    config = tiny_config(mnist_dir, "l2_noise_defended:smoke")
    config.init_from, config.defence.adversary_init = "l2_noise", "adversary_eight"
    steps = {}
    for anchor in ("", "l2_noise", "l2"):
        config.defence.anchor, config.defence.anchor_weight = anchor, 1.0 if anchor else 0.0
        trainer = train.make_trainer(config, loop.make_mesh(1))
        state = trainer.init_state
        batch = loop.sample_batch(trainer.train_data, trainer.batch_size, config.seed, 0)
        steps[anchor] = jax.jit(trainer.train_step)(state, batch, jax.random.fold_in(state.rng, 0))
    (plain, plain_metrics), (same, same_metrics) = steps[""], steps["l2_noise"]
    (other, other_metrics) = steps["l2"]
    assert "train/anchor_drift" not in plain_metrics
    assert float(same_metrics["train/anchor_drift"]) == 0.0
    np.testing.assert_allclose(same_metrics["train/loss"], plain_metrics["train/loss"], rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7), same.params,
                 plain.params)  # fmt: skip
    drift = float(other_metrics["train/anchor_drift"])
    assert drift > 1.0
    np.testing.assert_allclose(other_metrics["train/loss"],
                               plain_metrics["train/loss"] + drift, rtol=1e-5)  # fmt: skip
    assert not np.allclose(other.params["hidden"]["kernel"], plain.params["hidden"]["kernel"])
    # runs saved before the option existed resume with it off, and only off
    assert train.resumable("defence.anchor_weight", None, 0.0, 100)
    assert not train.resumable("defence.anchor", None, "l2_noise", 100)
    config.defence.anchor = ""
    with pytest.raises(ConfigError, match=r"defence.anchor_weight=1.0 needs defence.anchor"):
        train.validate_config(config)
