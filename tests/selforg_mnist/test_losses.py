"""Losses and metrics on hand-built states."""

import jax.numpy as jnp
import numpy as np
import pytest

from nca.selforg_mnist import losses


def make_state(grey, class_values):
    """grey: (B, H, W); class_values: (B, H, W, 10); hidden channels 0."""
    grey = jnp.asarray(grey, jnp.float32)
    hidden = jnp.zeros((*grey.shape, 9))
    return jnp.concatenate([grey[..., None], hidden, jnp.asarray(class_values, jnp.float32)], -1)


def test_l2_loss_hand_computed():
    grey = [[[1.0, 0.0]]]  # one alive, one dead cell
    values = np.zeros((1, 1, 2, 10))
    values[0, 0, 0, 3] = 0.5  # alive cell, label 3: error 0.5 on channel 3
    values[0, 0, 0, 4] = 1.0  # and 1 on channel 4
    loss = losses.l2_loss(make_state(grey, values), jnp.array([3]))
    assert float(loss) == pytest.approx((0.5**2 + 1.0**2) / 2)


def test_l2_loss_is_a_batch_mean():
    values = np.zeros((2, 1, 1, 10))
    state = make_state([[[1.0]], [[1.0]]], values)
    assert float(losses.l2_loss(state, jnp.array([0, 1]))) == pytest.approx(0.5)


def test_ce_loss_counts_alive_cells_only():
    values = np.zeros((1, 1, 2, 10))
    values[0, 0, 0, 2] = 100.0  # alive, confidently right: ~0 loss
    values[0, 0, 1, 5] = 100.0  # dead, "wrong": must not count
    loss = losses.ce_loss(make_state([[[1.0, 0.0]]], values), jnp.array([2]))
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    uniform = losses.ce_loss(make_state([[[1.0, 0.0]]], np.zeros((1, 1, 2, 10))), jnp.array([2]))
    assert float(uniform) == pytest.approx(np.log(10), rel=1e-6)


def test_accuracy_pools_cells_over_the_batch():
    values = np.zeros((2, 1, 3, 10))
    values[0, 0, :, 1] = 1.0  # image 0: 3 alive cells vote 1 (right)
    values[1, 0, 0, 7] = 1.0  # image 1: one alive cell votes 7 (wrong, label 2)
    grey = [[[1.0, 1.0, 1.0]], [[1.0, 0.0, 0.0]]]
    acc = losses.average_cell_accuracy(make_state(grey, values), jnp.array([1, 2]))
    assert float(acc) == pytest.approx(3 / 4)


def test_agreement_ignores_all_negative_and_dead_cells():
    values = np.zeros((3, 1, 3, 10))
    values[0, 0, 0, 4] = 1.0
    values[0, 0, 1, 4] = 2.0
    values[0, 0, 2] = -1.0  # all negative: not counted, though argmax says 0
    values[1, 0, 0, 4] = 1.0
    values[1, 0, 1, 5] = 1.0  # disagrees
    values[2, 0, 0, 6] = 1.0
    values[2, 0, 2, 1] = 1.0  # dead cell: not counted
    grey = [[[1.0, 1.0, 1.0]], [[1.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]]]
    agree = losses.agreement(make_state(grey, values))
    np.testing.assert_array_equal(agree, [True, False, True])
    assert float(losses.total_agreement(make_state(grey, values))) == pytest.approx(2 / 3)


def test_evaluation_metrics_on_hand_built_digits():
    """An all-agreeing digit, a split digit, one with an all-negative cell, dead cells."""
    import jax

    from nca.selforg_mnist import evaluate

    values = np.zeros((3, 1, 4, 10))
    values[0, 0, :3, 2] = 1.0  # digit 0 (label 2): 3 alive cells agree on 2; cell 3 is dead
    values[0, 0, 3, 5] = 9.0  # dead cell: ignored
    values[1, 0, :2, 3] = 1.0  # digit 1 (label 3): split between 3 and 8
    values[1, 0, 2:, 8] = 1.0
    values[2, 0, 0, 4] = 1.0  # digit 2 (label 4): one cell says 4, one cell all negative
    values[2, 0, 1] = -1.0
    grey = [[[1.0, 1.0, 1.0, 0.0]], [[1.0] * 4], [[1.0, 1.0, 0.0, 0.0]]]
    state = make_state(grey, values)
    previous = state.at[..., 1:].set(0.0)
    sums = jax.device_get(evaluate.step_metrics(previous, state, jnp.array([2, 3, 4])))
    assert sums["alive_cells"] == 3 + 4 + 2
    assert sums["correct_cells"] == 3 + 2 + 1  # the all-negative cell votes 0: wrong
    assert sums["agreeing_images"] == 2  # digits 0 and 2
    # |state| over alive cells and 19 channels: 3*1 + 4*1 + (1 + 10)
    assert sums["state_abs"] == pytest.approx(18.0)
    assert sums["update_abs"] == pytest.approx(18.0)
    # every alive cell left the previous vote (0) but the all-negative one (argmax 0 again)
    assert sums["changed_cells"] == 3 + 4 + 1
    assert sums["no_vote_images"] == 0
    # digit 2's voting cell also all negative: no counted cell, so it no longer agrees
    no_vote = state.at[2, 0, 0, -10:].set(-1.0)
    sums = jax.device_get(evaluate.step_metrics(previous, no_vote, jnp.array([2, 3, 4])))
    assert sums["no_vote_images"] == 1 and sums["agreeing_images"] == 1
    assert sums["changed_cells"] == 3 + 4


def test_variants_in_one_pass_are_the_variants_run_alone():
    import jax

    from nca.selforg_mnist import evaluate
    from tests.selforg_mnist.test_model import random_digits, random_params

    params = random_params(jax.random.PRNGKey(0), scale=0.3)
    grey = np.asarray(random_digits(jax.random.PRNGKey(1), batch=6))
    labels = np.arange(6) % 10
    kwargs = dict(num_steps=4, batch_size=3, noise_std=0.02, impl="im2col", progress=False)
    both = evaluate.evaluate_variants(params, grey, labels, variants=("restart", "persist"),
                                      **kwargs)  # fmt: skip
    for variant in ("restart", "persist"):
        alone = evaluate.evaluate(params, grey, labels, variant=variant, **kwargs)
        for name in evaluate.CURVES:
            assert both[variant][name].shape == (8,)
            np.testing.assert_array_equal(both[variant][name], alone[name])
    # the second halves differ (a restart forgets the evolved state), the first is shared
    assert not np.array_equal(both["restart"]["state_magnitude"][4:],
                              both["persist"]["state_magnitude"][4:])  # fmt: skip
    np.testing.assert_array_equal(both["restart"]["accuracy"][:4], both["persist"]["accuracy"][:4])
    with pytest.raises(ValueError, match="unknown evaluation variant"):
        evaluate.evaluate_variants(params, grey, labels, variants=("both",), **kwargs)


def test_batches_on_two_devices_give_one_devices_numbers():
    """`sum_over_batches` runs the batches side by side on 2 CPU devices: the protocol's curves
    and the attack's are those of one device (each batch keeps its key), on the `table` path."""
    from tests.conftest import run_python

    script = """
        import jax
        jax.config.update("jax_num_cpu_devices", 2)
        import numpy as np
        from nca.selforg_mnist import adversarial, evaluate
        from tests.selforg_mnist.test_model import random_digits, random_params
        params = random_params(jax.random.PRNGKey(0), scale=0.3)
        other = random_params(jax.random.PRNGKey(5), scale=0.3)
        grey = np.asarray(random_digits(jax.random.PRNGKey(1), batch=10))
        labels = np.arange(10) % 10
        one, both = [jax.devices()[0]], jax.devices()
        assert len(both) == 2
        kw = dict(num_steps=3, batch_size=3, noise_std=0.02, progress=False)  # 4 batches, 3 3 3 1
        got = evaluate.evaluate_variants(params, grey, labels, devices=both, **kw)
        want = evaluate.evaluate_variants(params, grey, labels, devices=one, **kw)
        for variant in want:
            for name in evaluate.CURVES:
                np.testing.assert_allclose(got[variant][name], want[variant][name], rtol=1e-6)
        assert want["restart"]["accuracy"].std() > 0
        got = adversarial.evaluate_attack(params, other, grey, labels, 0.3, devices=both, **kw)
        want = adversarial.evaluate_attack(params, other, grey, labels, 0.3, devices=one, **kw)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6)
        print("two devices ok")
    """
    assert "two devices ok" in run_python(script)
