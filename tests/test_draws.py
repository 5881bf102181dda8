"""`nca.draws`: the chosen rows of a whole random draw, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nca import draws

KEY = jax.random.PRNGKey(7)
INDEX = jnp.array([0, 5, 6, 977, 999, 1000])  # 1000: out of range (a compact table's spare slot)


@pytest.mark.parametrize("partitionable", [True, False])
def test_normal_rows_are_the_rows_of_a_whole_draw(partitionable):
    """Only the chosen rows' counters are computed (with the other threefry mode, a whole draw);
    an out-of-range index gives some finite value."""
    with jax.threefry_partitionable(partitionable):
        want = jax.random.normal(KEY, (1000, 19))[INDEX[:-1]]
        got = draws.normal_rows(KEY, INDEX, 1000, 19)
    np.testing.assert_array_equal(got[:-1], want)
    assert bool(jnp.all(jnp.isfinite(got)))
    typed = jax.random.wrap_key_data(KEY)  # a typed key: the whole draw, gathered
    want = jax.random.normal(typed, (1000, 19))[INDEX[:-1]]
    np.testing.assert_array_equal(draws.normal_rows(typed, INDEX[:-1], 1000, 19), want)


def test_uniform_and_bernoulli_rows_are_the_rows_of_a_whole_draw():
    index = INDEX[:-1]
    want = jax.random.uniform(KEY, (1000, 33))[index]
    np.testing.assert_array_equal(draws.uniform_rows(KEY, index, 1000, 33), want)
    want = jax.random.bernoulli(KEY, 0.3, (1000, 33))[index]
    got = draws.bernoulli_rows(KEY, 0.3, index, 1000, 33)
    np.testing.assert_array_equal(got, want)
    assert 0.2 < float(got.mean()) < 0.4
