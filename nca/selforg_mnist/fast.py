"""Fast rollouts that compute the same function as `nca.model.rollout` with `nca.model.step`.

`model.step` (dense `lax.conv`) stays the readable reference; the tests check every path here
against it, values and gradients, for the same params, masks and noise. Implementations:

- `conv`: the reference, `lax.conv_general_dilated` over every cell.
- `im2col`: the 3x3 perception as one matrix product over gathered neighbourhoods, every cell.
- `alive`: only alive cells are computed. Only alive cells ever change (and grey is constant), so
  the set of cells to update is fixed for a whole rollout: it is gathered once into an index table
  of static size (`capacity_fraction` of all cells of the batch), each step gathers the 3x3
  neighbourhoods of those cells from the (padded, flattened) grid, runs the MLP on them and
  scatter-adds the update back. If a batch has more alive cells than the table holds, the
  rollout falls back to `im2col` (same result, dense cost), so the result never depends on it.
- `table`: the alive cells in a compact table whose neighbour indices point into the table, so
  neither pass scatters into the grid. What never changes in a rollout (every grey pixel, and a
  dead neighbour's whole state) is gathered once; each step does one gather for all nine
  neighbours. The table has one of a few static sizes (the capacity x 0.9**i, rounded up to 64
  rows), the smallest that holds the batch's alive cells (too many: `im2col`, as `alive`). The
  backward pass is written by hand (`jax.custom_vjp` over the whole rollout): it keeps each
  step's table and fire mask, recomputes the activations, and transposes the neighbour gather as
  a gather through an inverse neighbour table; no `cond` sits inside differentiated code.
- Inference on `table` (no gradient) with `observe_rows` observes on the table instead of
  rebuilding the grid every step (the evaluation's metrics, `evaluate.row_metrics`; the
  attack's, `adversarial.attack_row_metrics`), and on one core computes the updates in
  cache-sized chunks (`inference_chunk`): a step of 1000 test digits takes 165 ms instead of
  265 ms on one core, 82 instead of 130 on two; 100 steps of the attack (two rules, 1000
  digits) 15.6 s instead of 19.5 s on one core, the same sums.
- Fire compaction (`table`'s default, `fire_compaction`): each step gathers the rows that fire
  (about half) into a compact table of `fire_capacity` rows and computes their updates, in the
  forward and the backward pass; a step that fires more rows than that computes every row.
  Measured on one core (the other busy), `l2_noise` training 5.6 / 6.1 -> 8.5 / 8.0 it/s (two
  interleaved rounds); 1000 test digits x 100 steps 14.4 -> 10.8 s; the full evaluation, both
  protocols, 9.3 min on one core (about 17 before).
- `mixed_table_rollout`: two rules on one grid (the adversarial article's attack) on `table`,
  with the same hand-written backward pass for both rules: 2.3-2.5x faster to train than
  plain autodiff through the table-size `switch` (adversary 0.70 -> 1.6-1.7 it/s, defence game
  0.42 -> 0.93-1.05 it/s, measured on a shared core). With `second_share` (the attack, the
  adversary's training and the defence game pass their mask's fraction) each step's compact
  table holds each rule's fired rows in a segment of its own, so each rule computes its own
  rows instead of both computing every fired row: `benchmarks/mixed_speed` (2026-12-05, both
  cores shared with two training runs) 1.29x the adversary's gradients/s, 1.20x the attack's
  inference, the same trajectory bit for bit in the test.
- `auto`: `table` on CPU, `conv` on GPU / TPU (their convolution kernels are tuned; the sparse
  paths are not measured there yet).

Where `alive`'s training time went (perf stat, strace -c, perf record; 1 core): of 365-380 ms of
CPU per iteration, 208-220 ms were kernel time, page faults (~120k minor faults, ~480 MB of
freshly mapped memory per iteration, `clear_page` inside XLA copies and memsets). The step's
temp buffer was 494 MB, mostly because under autodiff `lax.cond` makes the taken branch also
write out the other branch's residuals: the `alive` branch wrote the dense fallback's zeros every
iteration. Thread wake-ups (futex time was idle waiting), glibc malloc settings and
`--xla_cpu_multi_thread_eigen=false` were not the cause. `table` uses 131-166 ms of CPU per
iteration (4-11 ms kernel): ~45 % matrix products, ~40 % XLA's fused loops, the threefry draws
~12 ms, the inverse-gather ~18 ms. Storing activations instead of recomputing them (164 vs
144 ms per gradient), the Philox generator (16-23 ms) and `unsafe_rbg` keys (33 ms) were slower.
In inference the residual noise was the largest cost after the products: 1000 test digits x 100
steps of `l2_noise` took 26.0 s with its noise and 16.5 s without (one core shared with a
training run), as the 19 normals of every table row cost more than half a row's MLP. threefry
draws 28 M normals/s at a step's 139k x 19 and 46 M/s at training's 2.4k x 19; `rbg` and
`unsafe_rbg` keys 13 M/s at both. So each step now draws the noise of its fired rows only, and
the same numbers: `normal_rows` evaluates threefry at those rows' counters of the whole draw.

Where an inference step went (`jax.profiler` trace of `evaluate.run_batch`, 1000 test digits,
both cores, 2026-12-04), and what changed, all without changing a number the rollout returns:
64 -> 48 ms per step. The three products 21.5 ms (the 180 -> 80 layer at about 160 GFLOP/s,
73 % of the matmul rate); gathering the fired rows' patches 10 ms (kept: the constant patches
they read are 50 MB a step); the noise 9 ms for every row -> about 5 ms for the fired ones;
putting the fired rows' updates back 6.3 ms as a gather-and-select over every row -> 0.9 ms as
a scatter-add of the fired rows alone; the metrics 9.6 ms -> about 3 ms (`row_metrics` sums
the magnitudes over whole rows, which are zero where unused and in the grey channel, instead
of slicing and masking them). The full protocol: 258-270 s -> 215 s (1 device), training
52.7 -> 44.8 ms per gradient of the `l2_noise` batch, bit-identical results in both.
Then (2026-12-05), for evaluation and the attack: the constant patches were 180 numbers a row
(every neighbour's grey pixel and the state of dead neighbours), but every state the evaluation
and the attack roll out has dead cells at 0 (`seed_state`, `mutate`, and dead cells never
change), so with `dead_cells_zero` they are the 9 grey pixels alone; and the evaluation compiles
only the table sizes its batches pick (`table_size_of`, outside `jit`) instead of all six and
the dense fallback. Per step of 1000 test digits 50.8 / 57.0 -> 44.9 / 46.0 ms (interleaved,
both cores); the full protocol on one device 193.2 -> 180.9 s, measured back to back in one
process, every curve identical (the documented 95.9 / 88.5 at step 200).

`conv` and `im2col` draw the fire mask and residual noise over the whole grid exactly as
`model.step` does, so for the same key they run the same trajectory. `alive` and `table` do the
same with `exact_randomness=True`; by default they draw only for the cells they compute (same
distribution, other numbers; `table` draws the first rows of `alive`'s draw, so a run resumed
with the other of the two sees the same randomness): drawing 19 normals for every cell of the
grid costs more than the alive cells' MLP on a CPU.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from nca.draws import normal_rows, take
from nca.selforg_mnist import model

IMPLS = ("auto", "conv", "im2col", "alive", "table")
DEFAULT_CAPACITY_FRACTION = 0.22  # MNIST: 17.4 % of cells alive on average, 44 % at most


def perceive_im2col(params: model.Params, state: jax.Array) -> jax.Array:
    """`model.perceive` as one matrix product over gathered 3x3 neighbourhoods (im2col)."""
    b, h, w, c = state.shape
    padded = jnp.pad(state, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # (B, H, W, 9*C): neighbours in the kernel's (row, column, channel) order.
    patches = jnp.concatenate(
        [padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)], axis=-1
    )
    p = params["perceive"]
    return jax.nn.relu(patches @ p["kernel"].reshape(9 * c, -1) + p["bias"])


step_im2col = functools.partial(model.step, perceive_fn=perceive_im2col)


def resolve_impl(impl: str) -> str:
    """`auto` -> the fastest measured implementation for the default backend."""
    if impl not in IMPLS:
        raise ValueError(f"unknown CA implementation {impl!r}; choose one of {IMPLS}.")
    if impl == "auto":
        return "table" if jax.default_backend() == "cpu" else "conv"
    return impl


def alive_rollout(
    params: model.Params,
    state: jax.Array,
    key: jax.Array,
    num_steps: int,
    fire_rate: float = 0.5,
    noise_std: float = 0.0,
    observe: Callable | None = None,
    capacity_fraction: float = DEFAULT_CAPACITY_FRACTION,
    exact_randomness: bool = False,
):
    """`model.rollout`, computing only alive cells. Same arguments and results.

    exact_randomness: draw the masks and noise over the whole grid as `model.step` does (the same
    trajectory as the reference for the same key) instead of for the computed cells only.
    """
    b, h, w, c = state.shape
    capacity = max(1, min(b * h * w, int(b * h * w * capacity_fraction)))
    num_alive = jnp.sum(model.alive_mask(state))

    def sparse(state):
        hp, wp = h + 2, w + 2
        flat = jnp.pad(state, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(b * hp * wp, c)
        alive = flat[:, 0] > model.ALIVE_THRESHOLD  # the zero border is never alive
        # Index of every alive cell in `flat`; unused slots point at an interior cell of image 0
        # (index wp + 1) and are masked out, so they add exactly 0 wherever they point.
        cells = jnp.nonzero(alive, size=capacity, fill_value=wp + 1)[0]
        in_use = jnp.arange(capacity) < num_alive
        offsets = jnp.array([dy * wp + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        neighbours = cells[:, None] + offsets  # (capacity, 9)
        # Where each cell sits in the unpadded (B, H, W) grid, to pick its random draws.
        image, rest = jnp.divmod(cells, hp * wp)
        row, col = jnp.divmod(rest, wp)
        grid_index = (image * h + row - 1) * w + col - 1
        kernel = params["perceive"]["kernel"].reshape(9 * c, -1)

        def to_grid(flat):
            return flat.reshape(b, hp, wp, c)[:, 1:-1, 1:-1]

        def body(flat, t):
            key_t = jax.random.fold_in(key, t)
            if exact_randomness:
                fire, noise = model.draw_step_randomness(key_t, state.shape, fire_rate, noise_std)
                fire = fire.reshape(-1)[grid_index]
                noise = noise.reshape(-1, model.NUM_MUTABLE)[grid_index]
            else:
                fire, noise = model.draw_step_randomness(key_t, (capacity, c), fire_rate, noise_std)
                fire = fire[:, 0]
            fire = fire & in_use
            patches = flat[neighbours].reshape(capacity, 9 * c)
            perception = jax.nn.relu(patches @ kernel + params["perceive"]["bias"])
            ds = (model.update(params, perception) + noise) * fire[:, None]
            new = flat.at[cells, 1:].add(ds)
            return new, (None if observe is None else observe(to_grid(flat), to_grid(new)))

        flat, observed = jax.lax.scan(body, flat, jnp.arange(num_steps))
        return to_grid(flat), observed

    def dense(state):
        return model.rollout(
            params, state, key, num_steps, fire_rate, noise_std, step_im2col, observe
        )

    if capacity >= b * h * w:
        return dense(state)
    return jax.lax.cond(num_alive <= capacity, sparse, dense, state)


# --------------------------------------------------------------------------------------------
# `table`: the alive cells in a compact table, hand-written backward pass


OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))  # the kernel's order
DEFAULT_BUCKETS = 6  # table sizes: the capacity x 0.9**i, i < DEFAULT_BUCKETS
BUCKET_RATIO = 0.9
ROW_ALIGN = 64
INFERENCE_CHUNK = 1024  # rows per matrix product in inference on one core (`inference_chunk`)
FIRE_MARGIN = 4.0  # standard deviations of the fired count a step's compact table holds


def fire_capacity(rows: int, fire_rate, fire_compaction: bool = True) -> int:
    """Rows of a step's compact table of fired rows (`fire_compaction`): the mean of a
    Binomial(rows, fire_rate) count plus `FIRE_MARGIN` standard deviations, rounded up to 64
    rows; `rows` (no compaction) if that is not fewer, if fire_rate is traced, or without
    fire_compaction. A step with more fired rows than that computes every row instead (the
    same result)."""
    if not fire_compaction or not isinstance(fire_rate, (int, float)):
        return rows
    spread = FIRE_MARGIN * math.sqrt(rows * fire_rate * (1.0 - fire_rate))
    capacity = -(-(int(rows * fire_rate + spread) + 1) // ROW_ALIGN) * ROW_ALIGN
    return min(rows, capacity)


def _capacities(rows: int, fire_rate, fire_compaction: bool, second_share=None):
    """A step's compact table of fired rows (`_on_fired_rows`): `fire_capacity` rows for one
    rule; for two rules with second_share (the expected share of table rows the second rule
    holds, e.g. its random mask's fraction), `(first, second)`: the fired rows of each rule in
    a segment of its own, the second's sized like `fire_capacity` for a fire rate of
    fire_rate * second_share, so each rule computes its own rows only. Without second_share,
    both rules compute every fired row."""
    capacity = fire_capacity(rows, fire_rate, fire_compaction)
    if second_share is None or capacity >= rows:
        return capacity
    second = fire_capacity(rows, fire_rate * second_share)
    return capacity if capacity + second >= rows else (capacity, second)


def _fired(fire: jax.Array, capacity: int) -> tuple[jax.Array, jax.Array]:
    """The fired rows of `fire` (`(rows,)`) in a compact table of `capacity` rows: `index`
    `(capacity,)`, the table row of each (`rows`, out of range, where unused), and `position`
    `(rows,)`, each row's place in it (`capacity`, out of range, if it did not fire)."""
    index = jnp.nonzero(fire, size=capacity, fill_value=fire.shape[0])[0]
    position = jnp.where(fire, jnp.cumsum(fire) - 1, capacity)
    return index, position


def table_sizes(num_cells: int, capacity_fraction: float, num_buckets: int) -> tuple[int, ...]:
    """The static table sizes (rows) `table` compiles, smallest first: `capacity_fraction` of
    the cells, then x0.9 each, rounded up to 64 rows (fewer if they coincide)."""
    top = max(1, min(num_cells, int(num_cells * capacity_fraction)))
    sizes = {top}
    for i in range(1, num_buckets):
        size = -(-int(top * BUCKET_RATIO**i) // ROW_ALIGN) * ROW_ALIGN
        if size < top:
            sizes.add(size)
    return tuple(sorted(sizes))


def table_size_of(grey, capacity_fraction: float = DEFAULT_CAPACITY_FRACTION,
                  num_buckets: int = DEFAULT_BUCKETS) -> tuple[int, ...]:  # fmt: skip
    """The size a `table` rollout picks among `table_sizes` for a batch whose alive cells are
    those of `grey` (`(B, H, W)`, a numpy array: computed outside `jit`): `(rows,)`, or `()` if
    none holds them (the dense fallback). Given as `table_rollout`'s `sizes`, only that size
    compiles, and the rollout draws the numbers it would draw with every size compiled."""
    num_alive = int(np.sum(np.asarray(grey) > model.ALIVE_THRESHOLD))
    sizes = table_sizes(np.asarray(grey).size, capacity_fraction, num_buckets)
    return tuple(size for size in sizes if size >= num_alive)[:1]


def _geometry(state: jax.Array, rows: int) -> dict[str, jax.Array]:
    """Index tables of the alive cells of `state` (`(B, H, W, C)`) in a table of `rows` rows.

    Table rows `[0, num_alive)` are the alive cells in row-major order; the rest are unused:
    they read only zeros and never fire.
    - grid: `(rows,)` flat index of each row's cell in `(B*H*W)` (out of range if unused);
    - neighbours: `(rows, 9)` table row of each 3x3 neighbour (kernel order) if it is alive,
      else `rows` (out of range: reads 0; the neighbour's state is in `_constant_patches`);
    - inverse: `(rows, 9)`: `inverse[j, n] = k*9 + n` if table row j is neighbour n of table
      row k, else `rows*9` (a zero slot): the neighbour gather's transpose as a gather;
    - padded: `(rows, 9)` flat index of each neighbour in the zero-padded
      `(B*(H+2)*(W+2))` grid (out of range if unused).
    """
    b, h, w, _ = state.shape
    hp, wp = h + 2, w + 2
    alive = jnp.pad(state[..., 0] > model.ALIVE_THRESHOLD, ((0, 0), (1, 1), (1, 1)))
    alive = alive.reshape(-1)  # the zero border is never alive
    cells = jnp.nonzero(alive, size=rows, fill_value=alive.size)[0]
    in_use = cells < alive.size
    row_of_cell = jnp.full(alive.size, rows, jnp.int32)
    row_of_cell = row_of_cell.at[cells].set(jnp.arange(rows, dtype=jnp.int32), mode="drop")
    offsets = jnp.array([dy * wp + dx for dy, dx in OFFSETS])
    padded = jnp.where(in_use[:, None], cells[:, None] + offsets, alive.size)
    neighbours = row_of_cell.at[padded].get(mode="fill", fill_value=rows)
    opposite = neighbours[:, ::-1]
    inverse = jnp.where(opposite < rows, opposite * 9 + jnp.arange(9), rows * 9)
    image, rest = jnp.divmod(cells, hp * wp)
    row, col = jnp.divmod(rest, wp)
    grid = jnp.where(in_use, (image * h + row - 1) * w + col - 1, b * h * w)
    return {"grid": grid, "neighbours": neighbours, "inverse": inverse, "padded": padded}


def _constant_patches(state: jax.Array, geo, grey_only: bool = False) -> jax.Array:
    """`(rows, 9, C)`: what of each row's 3x3 neighbourhood never changes in a rollout: every
    neighbour's grey pixel and the whole state of dead neighbours (0 elsewhere). grey_only:
    `(rows, 9)`, the grey pixels alone, which is all of it where dead cells' mutable channels
    are 0 (`dead_cells_zero`)."""
    c = state.shape[-1]
    if grey_only:
        grey = jnp.pad(state[..., 0], ((0, 0), (1, 1), (1, 1))).reshape(-1)
        return grey.at[geo["padded"]].get(mode="fill", fill_value=0.0)
    flat = jnp.pad(state, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(-1, c)
    patches = flat.at[geo["padded"]].get(mode="fill", fill_value=0.0)
    dead = (geo["neighbours"] >= geo["grid"].shape[0])[..., None]
    return jnp.where(dead | (jnp.arange(c) == 0), patches, 0.0)


def _to_table(state: jax.Array, geo) -> jax.Array:
    """`(rows, C)`: the alive cells' mutable channels, channel 0 (grey) kept at 0."""
    table = state.reshape(-1, state.shape[-1]).at[geo["grid"]].get(mode="fill", fill_value=0.0)
    return table.at[:, 0].set(0.0)


def _to_grid(state: jax.Array, table: jax.Array, geo) -> jax.Array:
    """`state` with the alive cells' mutable channels from `table` (`(rows, C)`)."""
    flat = state.reshape(-1, state.shape[-1])
    return flat.at[geo["grid"], 1:].set(table[:, 1:], mode="drop").reshape(state.shape)


def _step_randomness(key_t, state, geo, fire_rate, noise_std, exact_randomness):
    """The fire mask `(rows,)` (False on unused rows) and `noise(index)`, the residual noise
    `(len(index), 19)` of the table rows `index`: the numbers of a whole draw, computed for
    those rows only (`normal_rows`), so a step draws noise for the rows that fire alone."""
    rows = geo["grid"].shape[0]
    k_fire, k_noise = jax.random.split(key_t)  # as `model.draw_step_randomness`
    if exact_randomness:  # the grid's draws, read at each row's cell
        fire = jax.random.uniform(k_fire, (*state.shape[:-1], 1)) <= fire_rate
        # Unused rows read a clamped index: they never fire.
        fire = fire.reshape(-1)[geo["grid"]]
        num_draws = state[..., 0].size

        def draw_index(index):
            return take(geo["grid"], index, num_draws)
    else:  # the numbers `alive` draws (a prefix of them: same key, fewer rows)
        fire = jax.random.uniform(k_fire, (rows, 1))[:, 0] <= fire_rate
        num_draws = rows

        def draw_index(index):
            return index

    def noise(index):
        if not noise_std:
            return jnp.zeros((index.shape[0], model.NUM_MUTABLE), jnp.float32)
        draws = normal_rows(k_noise, draw_index(index), num_draws, model.NUM_MUTABLE)
        return noise_std * draws

    return fire & (geo["grid"] < state[..., 0].size), noise


def _mlp_forward(params, kernel, table, const, neighbours):
    """Every table row's update `(rows, 19)`, and the activations the backward pass needs."""
    rows = neighbours.shape[0]
    # (rows, 180): one gather for all 9 neighbours; `x + 0` is exact, so these are the patches
    # of `perceive_im2col` bit for bit.
    patches = table.at[neighbours].get(mode="fill", fill_value=0.0)
    if const.ndim == 2:  # the grey pixels alone: channel 0, which is 0 in the table
        patches = jnp.where(jnp.arange(patches.shape[-1]) == 0, const[..., None], patches)
    else:
        patches = patches + const
    patches = patches.reshape(rows, -1)
    pre = patches @ kernel + params["perceive"]["bias"]
    perception = jax.nn.relu(pre)
    hidden_pre = perception @ params["hidden"]["kernel"] + params["hidden"]["bias"]
    hidden = jax.nn.relu(hidden_pre)
    ds = hidden @ params["output"]["kernel"] + params["output"]["bias"]
    return ds, (patches, pre, perception, hidden_pre, hidden)


def _row_updates(params, kernel, table, const, neighbours, index=None, chunk=None):
    """`_mlp_forward`'s updates `(n, 19)` of the table rows `index` (`(n,)`, `rows` where unused;
    None: every row), computed `chunk` rows at a time (None: in one product), row for row the
    same products. Each chunk gathers its rows' constant patches and neighbours itself, so
    neither a whole table of patches (139k rows of 1000 digits: 100 MB) nor the fired rows'
    constant patches (50 MB) are ever written out: a chunk's patches and activations stay in
    the CPU's cache, where the 180 -> 80 product runs at about twice the rate of a whole
    table's (101 vs 57 GFLOP/s on one core)."""
    rows = neighbours.shape[0]

    def of(index):
        if index is None:
            return _mlp_forward(params, kernel, table, const, neighbours)[0]
        row_const, row_neighbours = take(const, index, 0.0), take(neighbours, index, rows)
        return _mlp_forward(params, kernel, table, row_const, row_neighbours)[0]

    n = rows if index is None else index.shape[0]
    if chunk is None or n <= chunk:
        return of(index)
    index = jnp.arange(n) if index is None else index
    index = jnp.pad(index, (0, -n % chunk), constant_values=rows)  # padding reads zeros
    ds = jax.lax.map(of, index.reshape(-1, chunk))
    return ds.reshape(-1, ds.shape[-1])[:n]


def _on_fired_rows(fire, capacity, on_rows, on_all, expand, others=None):
    """One step's computation on its fired rows only: `on_rows(index)` on a compact table of
    `capacity` rows, `index` the table row of each (`rows`, out of range, where unused), then
    `expand(result, position)` puts it back in table order. `on_all()` (every row) instead if
    `capacity` covers every row or this step fired more rows than it holds. An unfired row
    contributes nothing to either pass, so both give the same result. capacity `(first,
    second)` (`_capacities`): the compact table is the fired rows not in `others` (`(rows,)`,
    the second rule's), in `first` rows, then those in `others`, in `second` rows."""
    if not isinstance(capacity, tuple):
        if capacity >= fire.shape[0]:
            return on_all()

        def compact(_):
            index, position = _fired(fire, capacity)
            return expand(on_rows(index), position)

        return jax.lax.cond(jnp.sum(fire) <= capacity, compact, lambda _: on_all(), None)

    first, second = capacity
    mine, theirs = fire & ~others, fire & others

    def split(_):
        index_mine, position_mine = _fired(mine, first)
        index_theirs, position_theirs = _fired(theirs, second)
        index = jnp.concatenate([index_mine, index_theirs])
        position = jnp.where(theirs, position_theirs + first, position_mine)
        position = jnp.where(fire, position, first + second)
        return expand(on_rows(index), position)

    fits = (jnp.sum(mine) <= first) & (jnp.sum(theirs) <= second)
    return jax.lax.cond(fits, split, lambda _: on_all(), None)


def inference_chunk(rows: int) -> int:
    """Rows per matrix product in inference (`_row_updates`): `INFERENCE_CHUNK` when this
    process has one core, else all rows. Measured per step of 1000 test digits (139k rows): on
    one core 165 ms in chunks of 1024 against 191 ms unchunked (cache); on two, 82 ms unchunked
    against 113 ms in chunks (XLA splits one large product over the cores, not a small one).
    Two batches side by side on two devices (`evaluate.sum_over_batches`) are also faster
    unchunked: 4000 test digits x 200 steps 32.4 s against 39.7 s chunked (2026-12-05)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return INFERENCE_CHUNK if cores == 1 else rows


def _table_forward(params, state, key, num_steps, fire_rate, noise_std, rows, exact_randomness,
                   observe=None, keep=0, second_rule=None, observe_rows=None,
                   fire_compaction=True, dead_cells_zero=False, second_share=None):  # fmt: skip
    """`num_steps` steps with a table of `rows` rows. Returns the final state, the stacked
    observations and, if `keep`, the table before each step `(num_steps, keep, C)` and the fire
    masks `(num_steps, keep)`, zero-padded to `keep` rows (the backward pass recomputes each
    step's activations from them). second_rule: `(params, mask)`: the cells of the `(B, H, W,
    1)` bool mask update with these params instead (no hand-written backward pass).
    observe_rows: observe on the table instead of the grid, `observe_rows(previous, table,
    image, cell)`: the tables `(rows, C)` (grey 0) before and after the step, the image of each
    row `(rows,)` and its cell's flat index in `(B*H*W)` (B and B*H*W on unused rows); no grid
    is rebuilt inside the rollout. Without `keep` (inference) the updates are computed in chunks
    (`inference_chunk`). fire_compaction: compute each step's updates on its fired rows only
    (`fire_capacity`), the same numbers. dead_cells_zero: `table_rollout`'s (inference only:
    the backward pass needs the full constant patches). second_share: with second_rule, each
    rule computes its own fired rows only (`_capacities`), the same numbers."""
    geo = _geometry(state, rows)
    const = _constant_patches(state, geo, grey_only=dead_cells_zero and not keep)
    kernel = params["perceive"]["kernel"].reshape(-1, model.perception_filters(params))
    capacity = _capacities(rows, fire_rate, fire_compaction,
                           second_share if second_rule is not None else None)  # fmt: skip
    split = isinstance(capacity, tuple)  # the compact table: the first rule's rows, the second's
    other_rows = jnp.zeros(rows, bool)
    if second_rule is not None:
        other, mask = second_rule
        other_kernel = other["perceive"]["kernel"].reshape(-1, model.perception_filters(other))
        other_rows = mask.reshape(-1).at[geo["grid"]].get(mode="fill", fill_value=False)
    image = geo["grid"] // (state[0, ..., 0].size)

    def updates(table, index, others):
        """The updates `(n, 19)` of the table rows `index` (None: every row), given whether the
        second rule updates them; in inference in chunks of `inference_chunk` rows. A split
        compact table (`split`) computes each rule on its own segment."""
        n = rows if index is None else index.shape[0]
        chunk = None if keep else inference_chunk(n)
        if split and index is not None:
            first = capacity[0]
            return jnp.concatenate([
                _row_updates(params, kernel, table, const, geo["neighbours"], index[:first],
                             chunk),
                _row_updates(other, other_kernel, table, const, geo["neighbours"],
                             index[first:], chunk),
            ])  # fmt: skip
        ds = _row_updates(params, kernel, table, const, geo["neighbours"], index, chunk)
        if second_rule is not None:
            other_ds = _row_updates(other, other_kernel, table, const, geo["neighbours"], index,
                                    chunk)  # fmt: skip
            ds = jnp.where(others[:, None], other_ds, ds)
        return ds

    def body(carry, t):
        table, grid = carry
        fire, noise = _step_randomness(
            jax.random.fold_in(key, t), state, geo, fire_rate, noise_std, exact_randomness
        )

        def fired_rows(index):  # only the fired rows compute their updates and draw their noise
            ds = updates(table, index, take(other_rows, index, False)) + noise(index)
            return table.at[index, 1:].add(ds, mode="drop", indices_are_sorted=not split)

        def every_row():
            ds = updates(table, None, other_rows) + noise(jnp.arange(rows))
            return table + jnp.pad(jnp.where(fire[:, None], ds, 0.0), ((0, 0), (1, 0)))

        new = _on_fired_rows(fire, capacity, fired_rows, every_row, lambda new, _: new,
                             other_rows)  # fmt: skip
        out = {}
        if observe_rows is not None:
            out["observed"] = observe_rows(table, new, image, geo["grid"])
        elif observe is not None:
            new_grid = _to_grid(grid, new, geo)
            out["observed"] = observe(grid, new_grid)
            grid = new_grid
        if keep:
            out["table"] = jnp.pad(table, ((0, keep - rows), (0, 0)))
            out["fire"] = jnp.pad(fire, (0, keep - rows))
        return (new, grid), out

    grid_observed = observe is not None and observe_rows is None
    init = (_to_table(state, geo), state if grid_observed else None)
    (table, _), out = jax.lax.scan(body, init, jnp.arange(num_steps))
    final = _to_grid(state, table, geo)
    return final, out.get("observed"), out.get("table"), out.get("fire")


def _table_backward(rules, mask, state, rows, tables, fires, g_final, capacity):
    """Cotangents of the rules and the state for `_table_forward`'s final state, one step at a
    time backwards, recomputing each step's activations from the stored table. rules: `(params,)`,
    or `(params, other)` with `mask` the cells `other` updates (`second_rule`). capacity: rows
    of each step's compact table of fired rows (`_capacities`; `rows`: none). Returns
    `(per-rule cotangents, state cotangent)`."""
    geo = _geometry(state, rows)
    tables, fires = tables[:, :rows], fires[:, :rows]
    c = state.shape[-1]
    const, const_vjp = jax.vjp(lambda s: _constant_patches(s, geo), state)
    _, to_grid_vjp = jax.vjp(lambda s, t: _to_grid(s, t, geo), state, tables[0])
    g_state, g_table = to_grid_vjp(g_final)
    kernels = [p["perceive"]["kernel"].reshape(-1, model.perception_filters(p)) for p in rules]
    other_rows = jnp.zeros(rows, bool)
    if len(rules) == 2:
        other_rows = mask.reshape(-1).at[geo["grid"]].get(mode="fill", fill_value=False)
    zero_slot = jnp.zeros((1, c), state.dtype)

    def grads(table, row_const, neighbours, others, g_fired, first=None):
        """The patches' cotangent `(n, 180)` of `n` rows and each rule's weight gradients
        from them, given their constant patches, neighbours, whether the second rule updates
        them, and their updates' cotangent `(n, 19)`. first: the rows are the first rule's
        `first` rows, then the second's (a split compact table); None: each rule computes
        every row and keeps its own."""
        g_perception, increments = [], []
        for r, (p, kernel) in enumerate(zip(rules, kernels, strict=True)):
            own = slice(None) if first is None else slice(first) if r == 0 else slice(first, None)
            _, (patches, pre, perception, hidden_pre, hidden) = _mlp_forward(
                p, kernel, table, row_const[own], neighbours[own]
            )
            kept = others if r else ~others  # the rows this rule's update was kept on
            g_ds = g_fired[own]
            if len(rules) == 2 and first is None:
                g_ds = jnp.where(kept[:, None], g_ds, 0.0)
            g_hidden_pre = jnp.where(hidden_pre > 0, g_ds @ p["output"]["kernel"].T, 0.0)
            g_pre = jnp.where(pre > 0, g_hidden_pre @ p["hidden"]["kernel"].T, 0.0)
            g_perception.append(g_pre @ kernel.T)
            increments.append({
                "output": hidden.T @ g_ds,
                "output_bias": g_ds.sum(0),
                "hidden": perception.T @ g_hidden_pre,
                "hidden_bias": g_hidden_pre.sum(0),
                "perceive": patches.T @ g_pre,
                "perceive_bias": g_pre.sum(0),
            })  # fmt: skip
        if first is None:
            return sum(g_perception[1:], g_perception[0]), increments
        return jnp.concatenate(g_perception), increments

    def body(carry, xs):
        g_table, acc, slots = carry
        table, fire = xs

        def compact(index):  # every row taken fired: its update's cotangent is the table's
            def at_index(array, fill):
                return take(array, index, fill)

            row_const, neighbours = at_index(const, 0.0), at_index(geo["neighbours"], rows)
            g_fired = at_index(g_table[:, 1:], 0.0)
            first = capacity[0] if isinstance(capacity, tuple) else None
            return grads(table, row_const, neighbours, at_index(other_rows, False), g_fired, first)

        def every_row():
            g_fired = jnp.where(fire[:, None], g_table[:, 1:], 0.0)
            return grads(table, const, geo["neighbours"], other_rows, g_fired)

        g_perception, increments = _on_fired_rows(
            fire, capacity, compact, every_row,
            lambda out, position: (take(out[0], position, 0.0), out[1]), other_rows,
        )  # fmt: skip
        new_acc = jax.tree.map(jnp.add, acc, increments)
        g_patches = jnp.concatenate([g_perception.reshape(rows * 9, c), zero_slot])
        # The neighbour gather's transpose, as a gather: table row j collects slot (k, n) of
        # each table row k whose neighbour n it is.
        g_table = g_table + g_patches[geo["inverse"]].sum(axis=1)
        slots = slots + g_patches[:-1]  # for the constant patches' cotangent
        return (g_table, new_acc, slots), None

    zeros = [
        {
            "output": jnp.zeros_like(p["output"]["kernel"]),
            "output_bias": jnp.zeros_like(p["output"]["bias"]),
            "hidden": jnp.zeros_like(p["hidden"]["kernel"]),
            "hidden_bias": jnp.zeros_like(p["hidden"]["bias"]),
            "perceive": jnp.zeros_like(kernel),
            "perceive_bias": jnp.zeros_like(p["perceive"]["bias"]),
        }
        for p, kernel in zip(rules, kernels, strict=True)
    ]
    init = (g_table, zeros, jnp.zeros((rows * 9, c), state.dtype))
    (g_table, acc, slots), _ = jax.lax.scan(body, init, (tables, fires), reverse=True)
    (g_state_const,) = const_vjp(slots.reshape(const.shape))
    _, to_table_vjp = jax.vjp(lambda s: _to_table(s, geo), state)
    (g_state_table,) = to_table_vjp(g_table)
    g_rules = tuple(
        {
            "perceive": {
                "kernel": a["perceive"].reshape(p["perceive"]["kernel"].shape),
                "bias": a["perceive_bias"],
            },
            "hidden": {"kernel": a["hidden"], "bias": a["hidden_bias"]},
            "output": {"kernel": a["output"], "bias": a["output_bias"]},
        }
        for p, a in zip(rules, acc, strict=True)
    )
    return g_rules, g_state + g_state_const + g_state_table


def _bucket(state, sizes):
    """Index of the smallest table size that holds the alive cells; `len(sizes)` (dense) if
    none does."""
    num_alive = jnp.sum(model.alive_mask(state))
    return jnp.sum(num_alive > jnp.array(sizes))


def _dense_step(rules, mask):
    """The `im2col` step over every cell (the table's fallback): one rule, or two with `mask`
    the cells of the second (`adversarial.mixed_step`)."""
    if len(rules) == 1:
        return step_im2col
    from nca.selforg_mnist import adversarial

    return functools.partial(adversarial.mixed_step, other=rules[1], mask=mask,
                             perceive_fn=perceive_im2col)  # fmt: skip


def _dense_final(rules, mask, state, key, num_steps, fire_rate, noise_std):
    """The final state of `_dense_step`'s rollout."""
    step = _dense_step(rules, mask)
    return model.rollout(rules[0], state, key, num_steps, fire_rate, noise_std, step)[0]


def _second_rule(rules, mask):
    return (rules[1], mask) if len(rules) == 2 else None


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8, 9, 10))
def _table_final(rules, mask, state, key, num_steps, fire_rate, noise_std, sizes,
                 exact_randomness, fire_compaction, second_share):  # fmt: skip
    """The final state of a `table` rollout of `rules` (`(params,)`, or `(params, other)` with
    `mask` the cells of `other`), with a hand-written backward pass."""
    args = (num_steps, fire_rate, noise_std)

    def table_branch(rows):
        def run(r, s, k):
            return _table_forward(r[0], s, k, *args, rows, exact_randomness,
                                  second_rule=_second_rule(r, mask),
                                  fire_compaction=fire_compaction,
                                  second_share=second_share)[0]  # fmt: skip

        return run

    branches = [table_branch(rows) for rows in sizes]
    branches.append(lambda r, s, k: _dense_final(r, mask, s, k, *args))
    return jax.lax.switch(_bucket(state, sizes), branches, rules, state, key)


def _table_final_fwd(rules, mask, state, key, num_steps, fire_rate, noise_std, sizes,
                     exact_randomness, fire_compaction, second_share):  # fmt: skip
    args = (num_steps, fire_rate, noise_std)
    top = sizes[-1]

    def table_branch(rows):
        def run(r, s, k):
            final, _, tables, fires = _table_forward(
                r[0], s, k, *args, rows, exact_randomness, keep=top,
                second_rule=_second_rule(r, mask), fire_compaction=fire_compaction,
                second_share=second_share,
            )  # fmt: skip
            return final, tables, fires

        return run

    def dense_branch(r, s, k):
        tables = jnp.zeros((num_steps, top, s.shape[-1]), s.dtype)
        fires = jnp.zeros((num_steps, top), bool)
        return _dense_final(r, mask, s, k, *args), tables, fires

    bucket = _bucket(state, sizes)
    branches = [table_branch(rows) for rows in sizes] + [dense_branch]
    final, tables, fires = jax.lax.switch(bucket, branches, rules, state, key)
    return final, (rules, mask, state, key, bucket, tables, fires)


def _table_final_bwd(num_steps, fire_rate, noise_std, sizes, exact_randomness, fire_compaction,
                     second_share, res, g_final):  # fmt: skip
    rules, mask, state, key, bucket, tables, fires = res

    def table_branch(rows):
        share = second_share if len(rules) == 2 else None
        capacity = _capacities(rows, fire_rate, fire_compaction, share)
        return lambda r, s, k, t, f, g: _table_backward(r, mask, s, rows, t, f, g, capacity)

    def dense_branch(r, s, k, t, f, g):
        run = lambda r, s: _dense_final(r, mask, s, k, num_steps, fire_rate, noise_std)  # noqa: E731
        return jax.vjp(run, r, s)[1](g)

    branches = [table_branch(rows) for rows in sizes] + [dense_branch]
    g_rules, g_state = jax.lax.switch(bucket, branches, rules, state, key, tables, fires, g_final)
    return g_rules, None, g_state, None


_table_final.defvjp(_table_final_fwd, _table_final_bwd)


def table_rollout(
    params: model.Params,
    state: jax.Array,
    key: jax.Array,
    num_steps: int,
    fire_rate: float = 0.5,
    noise_std: float = 0.0,
    observe: Callable | None = None,
    capacity_fraction: float = DEFAULT_CAPACITY_FRACTION,
    exact_randomness: bool = False,
    num_buckets: int = DEFAULT_BUCKETS,
    observe_rows: Callable | None = None,
    fire_compaction: bool = True,
    dead_cells_zero: bool = False,
    sizes: tuple[int, ...] | None = None,
):
    """`model.rollout`, on a compact table of the alive cells. Same arguments and results.

    The table has one of a few static sizes (`table_sizes`: `capacity_fraction` of the cells and
    smaller), the smallest that holds this batch's alive cells plus a spare row; with more alive
    cells the rollout runs `im2col` (same result, dense cost). Gradients flow to params and
    state through a hand-written backward pass (`_table_backward`). exact_randomness: as
    `alive_rollout`; by default the same numbers as `alive` for the same key. observe_rows: the
    same observation as `observe`, computed on the table (`_table_forward`; the fast way to
    watch a large batch); `observe` still serves the dense fallback, so both are needed.
    fire_compaction: each step computes its fired rows only, both passes (`fire_capacity`;
    about half the rows at fire rate 0.5); False computes every row and masks the unfired.
    dead_cells_zero: the caller's promise that every dead cell's mutable channels are 0 in
    `state`, as in every state `model.seed_state` and `model.mutate` make and every rollout of
    them (dead cells never change). Then, with `observe` (inference), a step reads only its
    rows' neighbours' grey pixels besides the table (9 numbers a row instead of 180), with the
    same result; a state that breaks the promise would read its dead neighbours as 0.
    sizes: the table sizes to compile instead of `table_sizes(...)` (a state with more alive
    cells than the largest runs `im2col`): with the sizes that `table_size_of` picks for the
    batches to come, outside `jit`, only those compile and the numbers stay the same.
    """
    if sizes is None:
        sizes = table_sizes(state[..., 0].size, capacity_fraction, num_buckets)
    static = (sizes, exact_randomness, fire_compaction, None)
    if observe is None:
        final = _table_final((params,), None, state, key, num_steps, fire_rate, noise_std, *static)
        return final, None
    args = (num_steps, fire_rate, noise_std)
    branches = [
        functools.partial(
            _table_forward,
            rows=rows,
            exact_randomness=exact_randomness,
            observe=observe,
            observe_rows=observe_rows,
            fire_compaction=fire_compaction,
            dead_cells_zero=dead_cells_zero,
        )
        for rows in sizes
    ]
    branches = [lambda p, s, k, f=f: f(p, s, k, *args)[:2] for f in branches]
    branches.append(lambda p, s, k: model.rollout(p, s, k, *args, step_im2col, observe))
    return jax.lax.switch(_bucket(state, sizes), branches, params, state, key)


def mixed_table_rollout(
    params: model.Params,
    other: model.Params,
    mask: jax.Array,
    state: jax.Array,
    key: jax.Array,
    num_steps: int,
    fire_rate: float = 0.5,
    noise_std: float = 0.0,
    observe: Callable | None = None,
    capacity_fraction: float = DEFAULT_CAPACITY_FRACTION,
    exact_randomness: bool = False,
    num_buckets: int = DEFAULT_BUCKETS,
    observe_rows: Callable | None = None,
    fire_compaction: bool = True,
    dead_cells_zero: bool = False,
    second_share: float | None = None,
    sizes: tuple[int, ...] | None = None,
):
    """Two rules on one grid, on the table: the cells of `mask` (`(B, H, W, 1)` bool) update
    with `other`'s params, the rest with `params`; one fire mask and noise for all cells (as
    `table_rollout` draws them). The same function as `nca.selforg_mnist.adversarial.
    mixed_rollout`'s reference; gradients to both rules and the state through the hand-written
    backward pass of `table_rollout`. observe_rows, fire_compaction, dead_cells_zero, sizes: as
    `table_rollout`'s. second_share: the share of the cells `mask` holds (a static float, e.g.
    the fraction of `adversarial.adversary_mask`): then each rule computes its own fired rows
    only, in both passes, instead of both rules computing every fired row (the same numbers; a
    step whose mask holds more fired rows than that allows computes both on every fired row)."""
    if sizes is None:
        sizes = table_sizes(state[..., 0].size, capacity_fraction, num_buckets)
    args = (num_steps, fire_rate, noise_std)
    if observe is None:
        rules = (params, other)
        static = (sizes, exact_randomness, fire_compaction, second_share)
        return _table_final(rules, mask, state, key, *args, *static), None

    def table_branch(rows):
        def run(p, o, s, k):
            options = {"observe": observe, "observe_rows": observe_rows,
                       "fire_compaction": fire_compaction, "second_share": second_share,
                       "dead_cells_zero": dead_cells_zero}  # fmt: skip
            return _table_forward(
                p, s, k, *args, rows, exact_randomness, second_rule=(o, mask), **options
            )[:2]

        return run

    def dense_branch(p, o, s, k):
        return model.rollout(p, s, k, *args, _dense_step((p, o), mask), observe)

    branches = [table_branch(rows) for rows in sizes] + [dense_branch]
    return jax.lax.switch(_bucket(state, sizes), branches, params, other, state, key)


def get_rollout(
    impl: str = "auto",
    capacity_fraction: float = DEFAULT_CAPACITY_FRACTION,
    exact_randomness: bool = False,
    num_buckets: int = DEFAULT_BUCKETS,
    fire_compaction: bool = True,
    dead_cells_zero: bool = False,
    sizes: tuple[int, ...] | None = None,
):
    """The rollout function of `impl`, with `model.rollout`'s signature plus `observe_rows`:
    `(params, state, key, num_steps, fire_rate, noise_std, observe=None, *, observe_rows=None)
    -> (final, observed)`. observe_rows: `observe` on the rows of `table`
    (`table_rollout`'s); every other path ignores it and calls `observe`, so callers pass
    both whatever the path. num_buckets, fire_compaction, dead_cells_zero, sizes:
    `table_rollout`'s."""
    impl = resolve_impl(impl)
    if impl == "table":
        return functools.partial(
            table_rollout,
            capacity_fraction=capacity_fraction,
            exact_randomness=exact_randomness,
            num_buckets=num_buckets,
            fire_compaction=fire_compaction,
            dead_cells_zero=dead_cells_zero,
            sizes=sizes,
        )
    if impl == "alive":
        grid_rollout = functools.partial(
            alive_rollout, capacity_fraction=capacity_fraction, exact_randomness=exact_randomness
        )
    else:
        step_fn = {"conv": model.step, "im2col": step_im2col}[impl]
        grid_rollout = functools.partial(model.rollout, step_fn=step_fn)

    def rollout(params, state, key, num_steps, fire_rate=0.5, noise_std=0.0, observe=None, *,
                observe_rows=None):  # fmt: skip
        del observe_rows  # the grid paths observe the grid
        return grid_rollout(params, state, key, num_steps, fire_rate, noise_std, observe=observe)

    return rollout


def per_device(rollout: Callable, mesh: jax.sharding.Mesh) -> Callable:
    """`rollout` run by every device of `mesh` on its own slice of the batch (axis `data`), with
    `rollout`'s signature (`observe` unsupported): data parallelism for `alive` and `table`,
    whose compaction of the alive cells would otherwise span the whole batch and run on one
    device. The batch must divide over the devices. Each device folds its index into the key, so
    the masks and noise have the distribution of one device's, not its numbers. Gradients flow
    as through `rollout` (the replicated params' gradient is summed over the devices)."""

    def local(params, state, key, num_steps, fire_rate, noise_std):
        key = jax.random.fold_in(key, jax.lax.axis_index("data"))
        return rollout(params, state, key, num_steps, fire_rate, noise_std)[0]

    def run(params, state, key, num_steps, fire_rate=0.5, noise_std=0.0):
        body = functools.partial(
            local, num_steps=num_steps, fire_rate=fire_rate, noise_std=noise_std
        )
        # check_vma=False: the table sizes' `lax.switch` branches differ in which values vary
        # over devices, which the checker cannot reconcile; every output is per-device anyway.
        sharded = jax.shard_map(
            body, mesh=mesh, in_specs=(P(), P("data"), P()), out_specs=P("data"), check_vma=False
        )
        return sharded(params, state, key), None

    return run
