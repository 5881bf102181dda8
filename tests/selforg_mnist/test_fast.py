"""The fast paths compute the same function as the reference `model.step` rollout, with grads."""

import functools
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nca.selforg_mnist import fast, losses, model
from tests.conftest import run_python
from tests.selforg_mnist.test_model import random_digits, random_params

KEY = jax.random.PRNGKey(3)
EXACT = {
    "im2col": fast.get_rollout("im2col"),
    "alive": fast.get_rollout("alive", exact_randomness=True),
    "table": fast.get_rollout("table", exact_randomness=True),
    # one table size only: the smallest bucket of the default ones is the only one compiled
    "table_one_size": functools.partial(fast.table_rollout, exact_randomness=True, num_buckets=1),
    # every row computed each step, the unfired masked (the path before fire compaction)
    "table_every_row": functools.partial(
        fast.table_rollout, exact_randomness=True, fire_compaction=False
    ),
}


@functools.lru_cache
def problem():
    params = random_params(jax.random.PRNGKey(0), scale=0.3)
    grey = random_digits(jax.random.PRNGKey(1), batch=4)
    # realistic alive fraction (~20 %): clear most of each image
    grey = grey * (jnp.arange(28)[:, None] < 14) * (jnp.arange(28)[None, :] < 16)
    return params, model.seed_state(grey), jnp.array([1, 4, 7, 9])


def loss_and_grads(rollout):
    params, state, labels = problem()

    def loss(params):
        final, _ = rollout(params, state, KEY, 20, 0.5, 0.02)
        return losses.l2_loss(final, labels), final

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


def assert_grads_close(grads, ref_grads):
    """Every gradient tensor equal to 1e-5 of its largest entry (they reach ~1e5 after 20 steps)."""
    for g, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        scale = float(jnp.max(jnp.abs(ref)))
        assert scale > 0
        np.testing.assert_allclose(g / scale, ref / scale, atol=1e-5)


@functools.lru_cache
def reference():
    return loss_and_grads(fast.get_rollout("conv"))


@pytest.mark.parametrize("impl", sorted(EXACT))
def test_same_states_and_gradients_as_reference_over_20_steps(impl):
    """Same params, masks and noise: same states and gradients to 1e-5."""
    (ref_loss, ref_final), ref_grads = reference()
    (loss, final), grads = loss_and_grads(EXACT[impl])
    assert 0.05 < float(jnp.mean(model.alive_mask(final))) < 0.3
    np.testing.assert_allclose(final, ref_final, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    assert_grads_close(grads, ref_grads)


@pytest.mark.parametrize("impl", ["alive", "table"])
def test_falls_back_to_dense_when_the_table_is_too_small(impl):
    (_, ref_final), ref_grads = reference()
    rollout = fast.get_rollout(impl, capacity_fraction=0.01, exact_randomness=True)
    (_, final), grads = loss_and_grads(rollout)
    np.testing.assert_allclose(final, ref_final, atol=1e-5, rtol=1e-5)
    assert_grads_close(grads, ref_grads)


def test_fire_capacity():
    """About half the rows at fire rate 0.5 (the mean plus 4 standard deviations, rounded up to
    64 rows); every row where that saves nothing or the rate is not known when tracing."""
    assert fast.fire_capacity(2760, 0.5) == 1536  # 1380 + 4 x 26.3
    assert fast.fire_capacity(139_000, 0.5) == 70_272  # 50.6 % of a table of 1000 digits
    assert fast.fire_capacity(448, 1.0) == 448 and fast.fire_capacity(100, 0.5) == 100
    assert fast.fire_capacity(2760, jnp.float32(0.5) + jnp.zeros(())) == 2760
    assert fast.fire_capacity(2760, 0.5, fire_compaction=False) == 2760


def test_steps_that_fire_more_rows_than_the_compact_table_holds(monkeypatch):
    """A capacity far below the mean fired count: every step overflows and computes every row
    instead (the compact table is what the other tests run); the states and gradients are
    still the reference's."""
    monkeypatch.setattr(fast, "FIRE_MARGIN", -10.0)
    params, state, _ = problem()
    rows = fast.table_sizes(4 * 784, 0.22, fast.DEFAULT_BUCKETS)[0]
    assert fast.fire_capacity(rows, 0.5) < 0.5 * int(jnp.sum(model.alive_mask(state)))
    (_, ref_final), ref_grads = reference()
    (_, final), grads = loss_and_grads(EXACT["table"])
    np.testing.assert_allclose(final, ref_final, atol=1e-5, rtol=1e-5)
    assert_grads_close(grads, ref_grads)


def test_table_sizes_and_bucket_choice():
    """Several static sizes; the smallest that holds the alive cells is used, and the unused
    rows never change the result (an exact fit and a much larger table give the same)."""
    sizes = fast.table_sizes(4 * 784, 0.22, fast.DEFAULT_BUCKETS)
    assert sizes == (448, 512, 576, 640, 689)
    assert all(s % fast.ROW_ALIGN == 0 for s in sizes[:-1])
    params, state, labels = problem()
    num_alive = int(jnp.sum(model.alive_mask(state)))
    assert int(fast._bucket(state, (num_alive - 1, num_alive))) == 1
    assert int(fast._bucket(state, (num_alive - 1,))) == 1  # too small: dense
    (_, ref_final), ref_grads = reference()
    for fraction in ((num_alive + 0.5) / (4 * 784), 0.9):
        rollout = fast.get_rollout("table", capacity_fraction=fraction, exact_randomness=True)
        (_, final), grads = loss_and_grads(rollout)
        np.testing.assert_allclose(final, ref_final, atol=1e-5, rtol=1e-5)
        assert_grads_close(grads, ref_grads)


def test_table_gradient_with_respect_to_the_state():
    """The hand-written backward pass also gives the state's cotangent (dead cells included)."""
    params, state, labels = problem()
    state = state.at[..., 1:].set(0.1 * jax.random.normal(KEY, state[..., 1:].shape))

    def loss(state, rollout):
        return losses.l2_loss(rollout(params, state, KEY, 5, 0.5, 0.02)[0], labels)

    want = jax.jit(jax.grad(loss), static_argnums=1)(state, fast.get_rollout("conv"))
    got = jax.jit(jax.grad(loss), static_argnums=1)(state, EXACT["table"])
    np.testing.assert_allclose(got, want, atol=1e-5 * float(jnp.max(jnp.abs(want))))


def test_table_draws_the_same_numbers_as_alive():
    params, state, labels = problem()
    want, _ = fast.alive_rollout(params, state, KEY, 20, 0.5, 0.02)
    got, _ = fast.table_rollout(params, state, KEY, 20, 0.5, 0.02)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_alive_with_its_own_randomness():
    """Without noise and with every cell firing the step is deterministic: same result. With the
    default settings the draws differ from the reference but keep their distribution."""
    params, state, labels = problem()
    want, _ = model.rollout(params, state, KEY, 20, 1.0, 0.0)
    got, _ = fast.alive_rollout(params, state, KEY, 20, 1.0, 0.0)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)

    alive = np.asarray(model.alive_mask(state))[..., 0]
    one_step, _ = fast.alive_rollout(params, state, KEY, 1, 0.5, 0.0)
    changed = np.any(np.asarray(one_step != state), axis=-1)
    assert not changed[~alive].any()
    assert 0.4 < changed[alive].mean() < 0.6  # about half the alive cells fired


def test_alive_observes_the_same_per_step_values():
    params, state, labels = problem()

    def observe(previous, state):
        return losses.correct_and_alive(state, labels), jnp.abs(state - previous).sum()

    _, want = model.rollout(params, state, KEY, 6, 0.5, 0.02, observe=observe)
    _, got = fast.alive_rollout(params, state, KEY, 6, 0.5, 0.02, observe, exact_randomness=True)
    jax.tree.map(np.testing.assert_array_equal, got, want)
    got = fast.table_rollout(params, state, KEY, 6, 0.5, 0.02, observe, exact_randomness=True)[1]
    (correct, alive), change = got
    np.testing.assert_array_equal(correct, want[0][0])
    np.testing.assert_array_equal(alive, want[0][1])
    np.testing.assert_allclose(change, want[1], rtol=1e-5)


def test_table_observes_the_metrics_on_its_rows():
    """`evaluate.row_metrics` on the table's rows equals `evaluate.step_metrics` on the grid."""
    from nca.selforg_mnist import evaluate

    params, state, labels = problem()
    # Image 0 has no alive cell; image 1 votes 4 everywhere (agrees), image 2 votes 4 but one
    # cell votes 5 (disagrees), image 3 votes 4 except one all-negative cell (not counted).
    state = state.at[0, :, :, 0].set(0.0)
    state = state.at[1:, :, :, -10:].set(-1.0).at[1:, :, :, -6].set(1.0)
    alive = np.argwhere(np.asarray(state[..., 0]) > model.ALIVE_THRESHOLD)
    (y2, x2), (y3, x3) = (alive[alive[:, 0] == i][0, 1:] for i in (2, 3))  # a cell of each
    state = state.at[2, y2, x2, -5].set(2.0).at[3, y3, x3, -10:].set(-1.0)
    observe = functools.partial(evaluate.step_metrics, labels=labels)
    rows = functools.partial(evaluate.row_metrics, labels=labels)

    @jax.jit
    def both(fire_rate):
        run = functools.partial(fast.table_rollout, params, state, KEY, 8, fire_rate, 0.02,
                                observe, num_buckets=1)  # fmt: skip
        return run()[1], run(observe_rows=rows)[1]

    for fire_rate in (0.0, 0.5):  # the hand-built states, then their dynamics
        want, got = both(fire_rate)
        if fire_rate == 0.0:
            assert int(want["agreeing_images"][0]) == 2  # images 1 and 3
            assert int(want["correct_cells"][0]) == np.sum(alive[:, 0] == 1)  # labels 1, 4, 7, 9
            assert int(want["no_vote_images"][0]) == 1  # image 0: no alive cell
            assert int(want["changed_cells"][0]) == 0  # nothing fires
        for name in (
            "correct_cells",
            "alive_cells",
            "agreeing_images",
            "changed_cells",
            "no_vote_images",
        ):
            np.testing.assert_array_equal(got[name], want[name])
        for name in ("state_abs", "update_abs"):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5)


def test_dead_cells_zero_reads_only_grey_and_keeps_the_trajectory():
    """With the promise kept (a seed state and its rollout), reading the neighbours' grey
    pixels alone gives the states of the full constant patches bit for bit, for one rule and
    two, and the reference's; a state that breaks it reads its dead neighbours as 0."""

    params, state, _ = problem()
    other = random_params(jax.random.PRNGKey(5), scale=0.3)
    mask = jax.random.uniform(jax.random.PRNGKey(6), (*state.shape[:-1], 1)) < 0.1
    states = lambda previous, new: new  # noqa: E731
    # the reference after one step, so that the dead cells' neighbours are not all zero
    start = fast.get_rollout("conv")(params, state, KEY, 1, 0.5, 0.02)[0]

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def trajectory(start, dead_cells_zero, mixed):
        options = dict(exact_randomness=True, num_buckets=1, dead_cells_zero=dead_cells_zero)
        if mixed:
            return fast.mixed_table_rollout(params, other, mask, start, KEY, 12, 0.5, 0.02,
                                            states, **options)[1]  # fmt: skip
        return fast.table_rollout(params, start, KEY, 12, 0.5, 0.02, states, **options)[1]

    for mixed in (False, True):
        got, want = trajectory(start, True, mixed), trajectory(start, False, mixed)
        np.testing.assert_array_equal(got, want)
    reference = model.rollout(params, start, KEY, 12, 0.5, 0.02, observe=states)[1]
    np.testing.assert_allclose(trajectory(start, True, False), reference, atol=1e-5)
    dead = start[..., :1] <= model.ALIVE_THRESHOLD
    broken = jnp.where(dead & (jnp.arange(model.NUM_CHANNELS) > 0), 0.5, start)
    assert not np.allclose(trajectory(broken, True, False), trajectory(broken, False, False))


def test_the_size_picked_outside_jit_compiles_alone_with_the_same_numbers():
    """`table_size_of` picks the size the rollout picks among all of them, the smallest that
    holds the alive cells: compiled alone, the same trajectory bit for bit. No size (): the
    dense fallback, the reference's function."""
    params, state, _ = problem()
    states = lambda previous, new: new  # noqa: E731
    grey = np.asarray(state[..., 0])
    picked, sizes = fast.table_size_of(grey), fast.table_sizes(grey.size, 0.22, 6)
    num_alive = np.sum(grey > model.ALIVE_THRESHOLD)
    assert picked == (min(size for size in sizes if size >= num_alive),) and picked != sizes[-1:]

    def run(sizes):
        rollout = functools.partial(fast.table_rollout, sizes=sizes)
        return jax.jit(lambda p, s: rollout(p, s, KEY, 6, 0.5, 0.02, states)[1])(params, state)

    np.testing.assert_array_equal(run(picked), run(None))
    reference = model.rollout(params, state, KEY, 6, 0.5, 0.02, observe=states)[1]
    assert fast.table_size_of(np.ones((2, 28, 28))) == ()  # every cell alive: too many
    np.testing.assert_allclose(run(()), reference, atol=1e-5)


@pytest.mark.parametrize("impl", ["conv", "im2col", "alive"])
def test_grid_paths_ignore_observe_rows(impl):
    """Every `get_rollout` takes `observe_rows`, so callers need not ask which path they run;
    the grid paths observe the grid with `observe` and never call it."""
    params, state, _ = problem()
    observe = lambda previous, state: jnp.sum(state[..., 0])  # noqa: E731
    rows = lambda *args: {"rows": jnp.zeros(())}  # noqa: E731 (a different tree if ever called)
    rollout = fast.get_rollout(impl)
    want = rollout(params, state, KEY, 3, 0.5, 0.0, observe)
    got = rollout(params, state, KEY, 3, 0.5, 0.0, observe, observe_rows=rows)
    assert got[1].shape == (3,)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_chunked_updates_are_the_unchunked_ones():
    """Every row or some rows (out-of-range slots included), in chunks that gather their own
    rows (512 rows in chunks of 96: padded to 576), the updates of `_mlp_forward`."""
    params, state, _ = problem()
    geo = fast._geometry(state, 512)
    const = fast._constant_patches(state, geo)
    table = fast._to_table(state, geo) + 0.1 * jax.random.normal(KEY, (512, 20))
    kernel = params["perceive"]["kernel"].reshape(-1, model.PERCEPTION_FILTERS)
    want, _ = fast._mlp_forward(params, kernel, table, const, geo["neighbours"])
    assert float(jnp.abs(want).max()) > 0
    got = fast._row_updates(params, kernel, table, const, geo["neighbours"], chunk=96)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    index = jnp.array([3, 7, 100, 511, 512, 512] * 20)  # 120 rows: two chunks
    got = fast._row_updates(params, kernel, table, const, geo["neighbours"], index, chunk=96)
    assert got.shape == (120, 19)
    np.testing.assert_allclose(got[:4], want[index[:4]], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[100:104], want[index[100:104]], rtol=1e-6, atol=1e-6)


def test_auto_and_unknown_impl():
    assert fast.resolve_impl("auto") == ("table" if jax.default_backend() == "cpu" else "conv")
    with pytest.raises(ValueError, match="choose one of"):
        fast.get_rollout("sparse")


def test_per_device_rollout_splits_the_batch_and_draws_per_device():
    """On 2 devices: without randomness the same states and gradients as one device's `table`;
    with it, two copies of a digit on different devices draw different masks."""
    script = textwrap.dedent("""
        import jax
        jax.config.update("jax_num_cpu_devices", 2)
        import jax.numpy as jnp
        import numpy as np
        from nca import loop
        from nca.selforg_mnist import fast, losses, model
        from tests.selforg_mnist.test_fast import assert_grads_close, problem
        params, state, labels = problem()
        table = fast.get_rollout("table")
        split = fast.per_device(table, loop.make_mesh(2))

        def loss_and_grads(rollout, fire_rate, noise_std):
            def loss(params, state):
                final, _ = rollout(params, state, jax.random.PRNGKey(3), 20, fire_rate, noise_std)
                return losses.l2_loss(final, labels), final
            return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, state)

        (_, want), want_grads = loss_and_grads(table, 1.0, 0.0)
        (_, got), got_grads = loss_and_grads(split, 1.0, 0.0)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
        assert_grads_close(got_grads, want_grads)

        twins = jnp.concatenate([state[:2], state[:2]])  # device 0 and device 1 hold the same
        final, _ = jax.jit(split, static_argnums=(3, 4, 5))(params, twins, jax.random.PRNGKey(3),
                                                            1, 0.5, 0.0)
        assert not np.allclose(final[:2], final[2:])
        print("per-device ok")
    """)
    assert "per-device ok" in run_python(script)
