"""Rows of a whole random draw, computed alone.

`jax.random.normal(key, (num_rows, width))[index]` costs the whole draw; these functions compute
only the rows in `index`, bit for bit. The default `threefry2x32` draws element `i` of a flat
array from counter `i` alone (`jax_threefry_partitionable`), so the counters of the chosen rows
give their numbers. With another generator, or more than 2**32 elements, the whole array is
drawn and gathered. Users: the selforg table path draws the noise of the cells that fire, the
hybrid's microbatches draw their digits' rows of the whole batch's noise and dropout, so that
how a batch is split changes no number (`tests/test_draws.py` checks them against `jax.random`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p


def _rows_computable(key: jax.Array, num_rows: int, width: int) -> bool:
    return (
        jax.config.jax_threefry_partitionable
        and jax.config.jax_default_prng_impl == "threefry2x32"
        and key.dtype == jnp.uint32
        and key.shape == (2,)
        and num_rows * width < 2**32
    )


def take(array: jax.Array, index: jax.Array, fill=0) -> jax.Array:
    """`array[index]` along axis 0; `fill` for an out-of-range index."""
    return array.at[index].get(mode="fill", fill_value=fill)


def _unit_floats(key: jax.Array, index: jax.Array, width: int) -> jax.Array:
    """The rows `index` of a threefry draw of 32-bit floats in [0, 1) of `width` columns, as
    `jax.random.uniform` makes them: the bits' top 23 as the mantissa of a float in [1, 2),
    minus 1."""
    counter = index.astype(jnp.uint32)[:, None] * width + jnp.arange(width, dtype=jnp.uint32)
    bits1, bits2 = threefry2x32_p.bind(key[0], key[1], jnp.zeros_like(counter), counter)
    mantissa = jax.lax.shift_right_logical(bits1 ^ bits2, jnp.uint32(32 - 23))
    one = jnp.uint32(np.float32(1.0).view(np.uint32))
    return jax.lax.bitcast_convert_type(mantissa | one, jnp.float32) - np.float32(1.0)


def uniform_rows(key: jax.Array, index: jax.Array, num_rows: int, width: int) -> jax.Array:
    """`jax.random.uniform(key, (num_rows, width))[index]` (`(len(index), width)` float32 in
    [0, 1); any value for an out-of-range index)."""
    if not _rows_computable(key, num_rows, width):
        return take(jax.random.uniform(key, (num_rows, width)), index)
    return _unit_floats(key, index, width)


def normal_rows(key: jax.Array, index: jax.Array, num_rows: int, width: int) -> jax.Array:
    """`jax.random.normal(key, (num_rows, width))[index]` (`(len(index), width)`; any value for
    an out-of-range index)."""
    if not _rows_computable(key, num_rows, width):
        return take(jax.random.normal(key, (num_rows, width)), index)
    # `normal`'s uniform on (-1, 1), then sqrt(2) * erfinv, as jax.random computes them
    low, high = np.nextafter(np.float32(-1.0), np.float32(0.0)), np.float32(1.0)
    uniform = jax.lax.max(low, _unit_floats(key, index, width) * (high - low) + low)
    return np.float32(np.sqrt(2)) * jax.lax.erf_inv(uniform)


def bernoulli_rows(key: jax.Array, p: float, index: jax.Array, num_rows: int,
                   width: int) -> jax.Array:  # fmt: skip
    """`jax.random.bernoulli(key, p, (num_rows, width))[index]`."""
    return uniform_rows(key, index, num_rows, width) < p
