"""The CA's math against an independent numpy implementation and the article's invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nca.selforg_mnist import model

KEY = jax.random.PRNGKey(0)


def random_params(key, scale=0.1, filters=80):
    """Init params, with a non-zero output layer so steps actually change the state."""
    params = model.init_params(key, filters)
    params["output"]["kernel"] = scale * jax.random.normal(key, (filters, 19))
    params["output"]["bias"] = scale * jax.random.normal(jax.random.fold_in(key, 1), (19,))
    return params


def random_digits(key, batch=3, size=28):
    """Grey images with a mix of alive (> 0.1) and dead cells."""
    grey = jax.random.uniform(key, (batch, size, size))
    return jnp.where(grey > 0.6, grey, 0.05 * grey)


def numpy_step(params, state, fire_mask, noise):
    """The article's step, written independently: explicit 3x3 loops over a zero-padded grid."""
    p = {k: {n: np.asarray(v, np.float64) for n, v in layer.items()} for k, layer in params.items()}
    state = np.asarray(state, np.float64)
    b, h, w, c = state.shape
    padded = np.zeros((b, h + 2, w + 2, c))
    padded[:, 1:-1, 1:-1] = state
    conv = np.zeros((b, h, w, 80))
    for dy in range(3):
        for dx in range(3):
            conv += padded[:, dy : dy + h, dx : dx + w] @ p["perceive"]["kernel"][dy, dx]
    perception = np.maximum(conv + p["perceive"]["bias"], 0)
    hidden = np.maximum(perception @ p["hidden"]["kernel"] + p["hidden"]["bias"], 0)
    ds = hidden @ p["output"]["kernel"] + p["output"]["bias"] + noise
    alive = state[..., :1] > 0.1
    out = state.copy()
    out[..., 1:] += ds * (np.asarray(fire_mask) & alive)
    return out


def test_param_count_and_zero_first_update():
    params = model.init_params(KEY)
    assert model.num_params(params) == 22_499
    state = model.seed_state(random_digits(KEY))
    after = model.step(params, state, KEY, fire_rate=1.0, noise_std=0.0)
    np.testing.assert_array_equal(after, state)  # output layer starts at zero


def test_widen_keeps_the_function_and_the_new_units_train():
    """A model widened from 80 to 96 filters computes the same 20 steps; its new hidden units
    are live (their output rows get gradient), and it cannot be narrowed."""
    params = random_params(KEY, scale=0.3)
    fresh = model.init_params(jax.random.PRNGKey(7), 96)
    wide = model.widen(params, fresh)
    assert jax.tree.map(jnp.shape, wide) == jax.tree.map(jnp.shape, fresh)
    assert model.perception_filters(wide) == 96
    np.testing.assert_array_equal(wide["output"]["kernel"][80:], 0.0)
    state = model.seed_state(random_digits(jax.random.PRNGKey(1)))
    narrow_final = model.rollout(params, state, KEY, 20, 0.5, 0.02)[0]
    wide_final = model.rollout(wide, state, KEY, 20, 0.5, 0.02)[0]
    scale = float(jnp.max(jnp.abs(narrow_final)))  # ~1e3: float rounding grows with it
    np.testing.assert_allclose(wide_final / scale, narrow_final / scale, atol=1e-6)

    grads = jax.grad(lambda p: jnp.sum(model.rollout(p, state, KEY, 5, 0.5, 0.02)[0] ** 2))(wide)
    assert float(jnp.abs(grads["output"]["kernel"][80:]).max()) > 0
    with pytest.raises(ValueError, match="cannot widen 96 filters to 80"):
        model.widen(wide, params)


def test_glorot_uniform_bounds():
    kernel = model.init_params(KEY)["perceive"]["kernel"]
    limit = np.sqrt(6 / (9 * 20 + 9 * 80))  # Keras: receptive field counts in fan-in and fan-out
    assert float(jnp.max(jnp.abs(kernel))) <= limit
    assert float(jnp.max(jnp.abs(kernel))) > 0.9 * limit


def test_step_matches_numpy_over_20_steps():
    params = random_params(KEY)
    state = model.seed_state(random_digits(jax.random.PRNGKey(1)))
    expected = np.asarray(state, np.float64)
    step = jax.jit(model.step, static_argnums=(3, 4))
    for t in range(20):
        key = jax.random.fold_in(KEY, t)
        fire_mask, noise = model.draw_step_randomness(key, state.shape, 0.5, 0.02)
        expected = numpy_step(params, expected, fire_mask, noise)
        state = step(params, state, key, 0.5, 0.02)
        np.testing.assert_allclose(state, expected, atol=1e-5, rtol=1e-5)
    assert np.abs(expected[..., 1:]).max() > 0.1  # the states really moved


def test_grey_and_dead_cells_never_change():
    params = random_params(KEY, scale=1.0)
    state = model.seed_state(random_digits(KEY))
    final, _ = model.rollout(params, state, KEY, 10, fire_rate=0.5, noise_std=0.02)
    dead = ~np.asarray(model.alive_mask(state))[..., 0]
    np.testing.assert_array_equal(final[..., 0], state[..., 0])
    assert np.all(np.asarray(final)[dead][:, 1:] == 0)
    assert np.abs(np.asarray(final)[~dead][:, 1:]).max() > 0


def test_fire_mask_is_per_cell_and_rate_is_respected():
    fire_mask, noise = model.draw_step_randomness(KEY, (8, 28, 28, 20), 0.5, 0.0)
    assert fire_mask.shape == (8, 28, 28, 1)
    assert 0.45 < float(jnp.mean(fire_mask)) < 0.55
    assert not np.any(noise)
    _, noise = model.draw_step_randomness(KEY, (8, 28, 28, 20), 0.5, 0.02)
    assert noise.shape == (8, 28, 28, 19)
    assert 0.019 < float(jnp.std(noise)) < 0.021


def test_mutate_keeps_state_only_where_new_digit_is_alive():
    old = jnp.concatenate([jnp.full((1, 2, 2, 1), 0.9), jnp.full((1, 2, 2, 19), 3.0)], -1)
    new_images = jnp.array([[[0.0, 0.5], [0.05, 0.2]]])
    mutated = np.asarray(model.mutate(old, new_images))
    np.testing.assert_allclose(mutated[..., 0], new_images)
    np.testing.assert_array_equal(mutated[0, 0, 1, 1:], 3.0)  # alive in both: state survives
    np.testing.assert_array_equal(mutated[0, 1, 1, 1:], 3.0)
    np.testing.assert_array_equal(mutated[0, 0, 0, 1:], 0.0)  # dead in the new digit
    np.testing.assert_array_equal(mutated[0, 1, 0, 1:], 0.0)


def test_mutate_newly_alive_cells_start_at_zero():
    old = model.seed_state(jnp.zeros((1, 3, 3)))  # all dead, all zero
    mutated = model.mutate(old, jnp.ones((1, 3, 3)))
    np.testing.assert_array_equal(mutated[..., 1:], 0.0)
    np.testing.assert_array_equal(mutated[..., 0], 1.0)


def test_cell_labels_ties_go_to_lowest_index():
    state = jnp.zeros((1, 1, 3, 20))
    state = state.at[0, 0, 1, -10:].set(jnp.array([0, 2, 0, 2, 0, 0, 0, 0, 0, 0.0]))
    state = state.at[0, 0, 2, -1].set(5.0)
    np.testing.assert_array_equal(model.cell_labels(state), [[[0, 1, 9]]])


def test_rollout_traces_once_and_vmaps():
    params = random_params(KEY)
    state = model.seed_state(random_digits(KEY, batch=2))
    traces = []

    def run(params, state, key):
        traces.append(1)
        return model.rollout(params, state, key, 5)[0]

    run = jax.jit(run)
    a = run(params, state, KEY)
    b = run(params, state, KEY)
    assert len(traces) == 1
    np.testing.assert_array_equal(a, b)
    # vmapping over per-image keys gives one independent batch-of-1 rollout per image
    keys = jax.random.split(KEY, 2)
    per_image = jax.vmap(lambda x, k: model.rollout(params, x[None], k, 5)[0])(state, keys)
    np.testing.assert_allclose(
        per_image[1], model.rollout(params, state[1:], keys[1], 5)[0], atol=1e-6
    )
