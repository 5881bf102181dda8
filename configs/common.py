"""The base config of the self-classifying MNIST CA and the options every config accepts.

Training times measured on a 2-core x86 CPU with the default `table` path (2026-12-03): 18.8
iterations/s on both cores with `--cpu_devices=2`, 12.1-12.4 on one core while the other trains
another run; the full 100k schedule takes 1.5 h on both cores, 2.3 h on one.

Options, comma-separated after the config name (`--config=l2_noise:no_pool,smoke`):
- `smoke`: a tiny run (small batch, pool, few steps and iterations) that trains in seconds;
- `short`: 40,000 iterations with the learning-rate drops moved from (30k, 70k) to (20k, 32k),
  for CPU budgets (the article trains 100k; 35 min on both cores, 55 min on one). A run of the
  full schedule that has not reached 20k can switch to it on resume: the iterations done so far
  are the same;
- `20k`: 20,000 iterations, drops at 10k and 16k (`short` halved; 18 min on both cores, 27 on
  one). A `short` or full run that has not reached 10k can switch to it on resume;
- `no_pool`: every batch is fresh digits from zero state (ablation);
- `no_mutation`: the pool persists its states, but no pool member is swapped to a new digit
  (ablation, the notebook's "persistent" model: the first and last quarters of each batch are
  fresh digits at zero state, the middle half continues from the pool).
"""

from __future__ import annotations

import ml_collections

OPTIONS = ("smoke", "short", "20k", "no_pool", "no_mutation")
# Shorter schedules than the article's: option -> (iterations, learning-rate drops).
SCHEDULES = {"short": (40_000, (20_000, 32_000)), "20k": (20_000, (10_000, 16_000))}


def parse_options(
    arg: str | None, valid: tuple[str, ...] = OPTIONS, example: str = "l2_noise:no_pool,smoke"
) -> set[str]:
    """The comma-separated options after a config name's colon; `ValueError` for unknown ones."""
    options = {a.strip() for a in (arg or "").split(",") if a.strip()}
    unknown = options - set(valid)
    if unknown:
        raise ValueError(
            f"unknown config option(s) {sorted(unknown)}; valid options: {', '.join(valid)} "
            f"(comma-separated, e.g. --config={example})."
        )
    return options


def base_config(
    kind: str,
    *,
    log_every: int,
    checkpoint_every: int,
    max_checkpoints_to_keep: int,
    keep_every: int = 0,
) -> ml_collections.ConfigDict:
    """The fields every config has, declared once: the name, the seed, `model.kind` (which
    system trains it: `nca.<kind>`) and the core loop's bookkeeping."""
    c = ml_collections.ConfigDict()
    c.name = ""  # filled in by the config loader: "l2_noise:smoke", etc.
    c.seed = 0
    c.model = ml_collections.ConfigDict()
    c.model.kind = kind
    c.log_every = log_every
    c.checkpoint_every = checkpoint_every
    c.max_checkpoints_to_keep = max_checkpoints_to_keep
    c.keep_every = keep_every  # checkpoints at its multiples survive retention (milestones); 0: off
    return c


# What `:smoke` does to the bookkeeping of every config; each family adds its own shrinking.
SMOKE_BOOKKEEPING = {"log_every": 2, "checkpoint_every": 4}


def apply_smoke(c: ml_collections.ConfigDict, options: set[str], **fields) -> None:
    """With the `smoke` option: `SMOKE_BOOKKEEPING`, then `fields` (`data__max_images=200` sets
    `c.data.max_images`), the family's shrinking to a run of seconds."""
    if "smoke" not in options:
        return
    for key, value in {**SMOKE_BOOKKEEPING, **fields}.items():
        *parents, leaf = key.split("__")
        node = c
        for parent in parents:
            node = node[parent]
        node[leaf] = value


def selforg_mnist_config(loss: str, noise_std: float, arg: str | None) -> ml_collections.ConfigDict:
    """The article's training setup (its notebook), with `loss` and residual `noise_std`."""
    options = parse_options(arg)
    c = base_config(
        "selforg_mnist", log_every=50, checkpoint_every=500, max_checkpoints_to_keep=3,
        keep_every=10_000,
    )  # fmt: skip
    # Width of the perception and hidden layers (the article's 80); a wider model can start from
    # a narrower one's params (`init_from`: `model.widen`, the same function).
    c.model.perception_filters = 80
    c.model.fire_rate = 0.5
    c.model.noise_std = noise_std
    # How the CA is computed (same function; see nca/selforg_mnist/fast.py): auto | conv |
    # im2col | alive | table (auto: table on CPU, conv on GPU / TPU).
    c.model.impl = "auto"
    c.model.alive_capacity = 0.22  # `alive`: share of cells in the index table (else dense)
    c.model.exact_randomness = False  # `alive`: draw over the whole grid, as `conv` (slower)
    c.model.table_buckets = 6  # `table`: table sizes compiled (fewer: faster compile, more padding)
    c.model.fire_compaction = True  # `table`: compute each step's fired cells only (False: all)

    c.loss = loss  # "l2" or "ce"
    c.num_ca_steps = 20
    c.batch_size = 16
    c.use_pool = "no_pool" not in options
    c.pool_size = 160
    c.mutate = "no_mutation" not in options

    # Start from a shipped model's params (a name in `nca.pretrained`) or a workdir's newest
    # checkpoint instead of a fresh init: fine-tuning. Optimizer and pool start fresh.
    c.init_from = ""
    c.num_train_steps = 100_000
    c.learning_rate = 1e-3
    c.lr_boundaries = (30_000, 70_000)  # learning rate x0.1 after each
    c.adam_eps = 1e-7  # Keras' default, as the article's code
    c.grad_norm_eps = 1e-8  # g / (||g|| + eps), per parameter tensor

    c.data = ml_collections.ConfigDict()
    c.data.mnist_dir = ""  # "": $NCA_MNIST_DIR, ./data/mnist, ../shared, download; "tfds"
    c.data.max_train_images = 0  # 0: all 60,000

    schedules = options & SCHEDULES.keys()
    if len(schedules) > 1:
        raise ValueError(f"options {sorted(schedules)} are different schedules; pick one.")
    for option in schedules:
        c.num_train_steps, c.lr_boundaries = SCHEDULES[option]
    apply_smoke(c, options, batch_size=4, pool_size=16, num_ca_steps=8, num_train_steps=12,
                lr_boundaries=(6, 9), data__max_train_images=2000,
                model__table_buckets=2)  # fmt: skip
    return c
