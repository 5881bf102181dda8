"""Two rules on one grid: the fast table path against the dense reference."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nca import bundle, checkpoint, loop
from nca.config import ConfigError
from nca.selforg_mnist import adversarial, fast, losses, model, pretrained, train
from tests.selforg_mnist.test_fast import KEY, assert_grads_close, problem
from tests.selforg_mnist.test_model import random_params
from tests.selforg_mnist.test_train import tiny_config


@functools.lru_cache
def two_rules():
    params, state, labels = problem()
    other = random_params(jax.random.PRNGKey(5), scale=0.3)
    mask = adversarial.adversary_mask(jax.random.PRNGKey(6), state.shape[:3], 0.3)
    return params, other, mask, state, labels


def test_mask_fraction_and_the_step_of_each_rule():
    params, other, mask, state, _ = two_rules()
    assert mask.shape == (*state.shape[:3], 1) and 0.25 < float(jnp.mean(mask)) < 0.35
    key = jax.random.PRNGKey(2)
    nobody = jnp.zeros_like(mask)
    mixed = adversarial.mixed_step(params, state, key, 0.5, 0.02, other=other, mask=nobody)
    np.testing.assert_array_equal(mixed, model.step(params, state, key, 0.5, 0.02))
    mixed = adversarial.mixed_step(params, state, key, 0.5, 0.02, other=other, mask=~nobody)
    np.testing.assert_array_equal(mixed, model.step(other, state, key, 0.5, 0.02))


def mixed_loss_and_grads(rollout, params=None):
    """The adversary's loss, the final state, and the gradients for both rules and the start
    state; `params`: another first rule than `two_rules`'."""
    first, other, mask, state, labels = two_rules()
    params = first if params is None else params

    def loss(params, other, state):
        final, _ = rollout(params, other, mask, state, KEY, 20, 0.5, 0.02)
        return losses.l2_loss(final, jnp.full_like(labels, 8)), final

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(params, other, state)


def test_table_path_computes_the_reference_with_gradients_for_both_rules(monkeypatch):
    """Both rules on every fired row, each on its own (`second_share`: the mask's 0.3; 0.01:
    the second rule's fired rows overflow their segment, every fired row instead), and the
    dense fallback (a capacity too small for the alive cells)."""
    monkeypatch.setattr(fast, "ROW_ALIGN", 8)  # segments small enough to overflow here
    reference = functools.partial(adversarial.mixed_rollout, impl="conv")
    (want_loss, want), want_grads = mixed_loss_and_grads(reference)
    _, _, mask, state, _ = two_rules()
    rows = fast.table_sizes(state[..., 0].size, 0.3, 1)[0]  # one table size, large enough
    assert isinstance(fast._capacities(rows, 0.5, True, 0.3), tuple)  # to split the rows
    fired_theirs = 0.5 * float(jnp.sum(model.alive_mask(state) & mask))
    assert fast._capacities(rows, 0.5, True, 0.01)[1] < fired_theirs  # it overflows
    for capacity, share in ((0.22, None), (0.3, 0.3), (0.3, 0.01), (0.01, 0.3)):
        table = functools.partial(
            fast.mixed_table_rollout, capacity_fraction=capacity, exact_randomness=True,
            second_share=share, num_buckets=1,
        )  # fmt: skip
        (loss, got), grads = mixed_loss_and_grads(table)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
        assert_grads_close(grads, want_grads)
    # both rules really act: the mixed trajectory is neither rule's alone
    params, other, mask, state, _ = two_rules()
    alone = model.rollout(params, state, KEY, 20, 0.5, 0.02)[0]
    assert not np.allclose(alone, want, atol=1e-3)


def test_rules_of_different_widths_on_the_table_path():
    """A 96-filter rule beside an 80-filter one (a widened defender against the article's
    adversary): the table path computes the dense reference, values and gradients."""
    wide = random_params(jax.random.PRNGKey(8), scale=0.3, filters=96)
    reference = functools.partial(adversarial.mixed_rollout, impl="conv")
    (want_loss, want), want_grads = mixed_loss_and_grads(reference, wide)
    table = functools.partial(fast.mixed_table_rollout, exact_randomness=True, second_share=0.3,
                              num_buckets=1)  # fmt: skip
    (loss, got), grads = mixed_loss_and_grads(table, wide)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    assert_grads_close(grads, want_grads)


def attacked_states():
    """Hand-built class channels: digit 0 votes 8 everywhere, digit 1 its label, digit 2 is an
    8 (not attacked, not counted), digit 3 votes at random."""
    params, other, mask, state, _ = two_rules()
    labels = jnp.array([1, 4, 8, 9])
    classes = jax.random.normal(jax.random.PRNGKey(9), (*state.shape[:3], 10))
    classes = classes.at[0].set(jax.nn.one_hot(8, 10) - 0.5)
    classes = classes.at[1].set(jax.nn.one_hot(4, 10) - 0.5)
    state = state.at[..., -10:].set(classes * model.alive_mask(state))
    return params, other, mask, state, labels, classes


def test_attack_metrics_count_the_originals_cells_of_attacked_digits():
    _, _, mask, state, labels, classes = attacked_states()
    got = jax.device_get(adversarial.attack_metrics(state, labels, mask, target=8))

    alive = np.asarray(model.alive_mask(state)[..., 0] & ~mask[..., 0])
    votes = np.asarray(classes).argmax(-1)
    counted = alive & np.array([1, 1, 0, 1], bool)[:, None, None]
    assert got["cells"] == counted.sum() and got["digits"] == 3
    assert got["target_cells"] == (counted & (votes == 8)).sum()
    assert got["correct_cells"] == (counted & (votes == np.asarray(labels)[:, None, None])).sum()
    assert got["target_agreeing"] == 1  # digit 0 only


def test_attack_metrics_on_the_tables_rows_are_the_grids():
    """`attack_row_metrics` (the table's rows) equals `attack_metrics` (the grid) at every
    step, with both rules and after the adversaries' removal, and with each rule computing its
    own rows (`second_share`, as `attack_batch` runs it)."""
    params, other, mask, state, labels, _ = attacked_states()
    observe = lambda previous, s: adversarial.attack_metrics(s, labels, mask, 8)  # noqa: E731
    rows = functools.partial(adversarial.attack_row_metrics, labels=labels, mask=mask, target=8)

    @jax.jit
    def both(fire_rate):
        run = functools.partial(adversarial.scheduled_rollout, params, other, mask, state, KEY,
                                place_at=0, remove_at=3, num_steps=6, fire_rate=fire_rate,
                                noise_std=0.02, observe=observe, impl="table")  # fmt: skip
        split = run(observe_rows=rows, second_share=0.3, sizes=(576,))[1]  # rows: 384 + 128
        return run()[1], run(observe_rows=rows)[1], split

    for fire_rate in (0.0, 0.5):  # the hand-built states, then their dynamics
        want, got, split = jax.device_get(both(fire_rate))
        jax.tree.map(np.testing.assert_array_equal, split, got)
        if fire_rate == 0.0:  # nothing fires: the hand-built votes at every step
            assert list(want["target_agreeing"]) == [1] * 6 and want["digits"][0] == 3
        else:
            assert len(set(want["target_cells"])) > 1  # the votes move
        jax.tree.map(np.testing.assert_array_equal, got, want)


def test_scheduled_rollout_places_and_removes_the_adversaries():
    params, other, mask, state, _ = two_rules()
    key = jax.random.PRNGKey(4)
    got, _ = adversarial.scheduled_rollout(
        params, other, mask, state, key, place_at=0, remove_at=3, num_steps=6, impl="conv"
    )
    mixed, _ = adversarial.mixed_rollout(
        params, other, mask, state, jax.random.fold_in(key, 0), 3, impl="conv"
    )
    want, _ = model.rollout(params, mixed, jax.random.fold_in(key, 1), 3)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_adversary_training_keeps_masks_of_kept_members_and_lowers_the_loss(mnist_dir, tmp_path):
    config = tiny_config(mnist_dir, "adversary_eight:smoke", num_train_steps=40, log_every=1,
                         learning_rate=3e-3, lr_boundaries=(1000,))  # fmt: skip
    mesh = loop.make_mesh(1)
    trainer = train.make_trainer(config, mesh)
    state, step = loop.compile_trainer(trainer, mesh)
    before = np.asarray(state.pool_masks)
    batch = loop.sample_batch(trainer.train_data, trainer.batch_size, config.seed, 0)
    key = jax.random.fold_in(state.rng, 0)
    _, _, idx = train.assemble_batch(config, state, batch, jax.random.split(key, 3)[0])
    idx = np.asarray(idx)
    after = np.asarray(step(state, batch, key)[0].pool_masks)  # (the step donates `state`)
    untouched = np.setdiff1d(np.arange(config.pool_size), idx)
    np.testing.assert_array_equal(after[untouched], before[untouched])
    np.testing.assert_array_equal(after[idx[1:]], before[idx[1:]])  # a quarter (1 of 4) is new

    final = loop.train_and_evaluate(config, tmp_path, progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    losses_ = [r["train/loss"] for r in rows]
    assert np.mean(losses_[-10:]) < 0.8 * np.mean(losses_[:10]), losses_
    _, shipped = pretrained.load(config.adversary.original)  # the original stays frozen
    assert not np.allclose(final.params["hidden"]["kernel"], shipped["hidden"]["kernel"])


def continue_from_bundle_without(config, source, tmp_path):
    """Trains `config` 4 of its 8 iterations, bundles the run, deletes the workdir `source` it
    started from, restores the bundle into a fresh workdir and trains on; the final state."""
    import shutil  # noqa: PLC0415

    loop.train_and_evaluate(config, tmp_path / "run", max_iterations=4, progress=False)
    bundle.write(tmp_path / "run", tmp_path / "run.npz")
    shutil.rmtree(source)
    bundle.restore(tmp_path / "run.npz", tmp_path / "restored", log=lambda *_: None)
    final = loop.train_and_evaluate(config, tmp_path / "restored", progress=False)
    assert int(final.step) == 8
    return final


def test_an_adversary_resumes_from_its_bundle_without_its_original_workdir(mnist_dir, tmp_path):
    """An adversary trained against `adversary.original=WORKDIR` (a CA of 96 filters) continues
    from its bundle after that workdir is gone, against the same frozen original (its state's)."""
    wide = tiny_config(mnist_dir, num_train_steps=2)
    wide.model.perception_filters = 96
    loop.train_and_evaluate(wide, tmp_path / "original", progress=False)
    _, original, _ = checkpoint.load_params(tmp_path / "original")
    config = tiny_config(mnist_dir, "adversary_eight:smoke", num_train_steps=8, checkpoint_every=4)
    config.adversary.original = str(tmp_path / "original")
    with pytest.raises(ConfigError, match="96 perception filters.*original_filters=96"):
        train.make_trainer(config, loop.make_mesh(1))
    config.adversary.original_filters = 96
    final = continue_from_bundle_without(config, tmp_path / "original", tmp_path)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(final.original), original)


def test_adversary_config_errors(mnist_dir):
    config = tiny_config(mnist_dir, "adversary_eight:smoke")
    config.adversary.original = "nonexistent"
    with pytest.raises(ConfigError, match="neither a shipped model"):
        train.make_trainer(config, loop.make_mesh(1))
    config.adversary.original = ""
    with pytest.raises(ConfigError, match="adversary.original is empty"):
        loop.check_config(config)
    config = tiny_config(mnist_dir, "adversary_eight:smoke", use_pool=False)
    with pytest.raises(ConfigError, match="adversary section trains with the pool and mutation"):
        train.validate_config(config)
    config = tiny_config(mnist_dir, "adversary_eight:smoke")
    config.adversary.fraction = 0.0
    with pytest.raises(ConfigError, match=r"adversary.fraction=0.0 is out of range"):
        loop.check_config(config)
