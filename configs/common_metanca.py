"""The base config of MetaNCA and the options every MetaNCA config accepts.

Options, comma-separated after the config name (`--config=metanca_iris:no_pool,smoke`):
- `smoke`: a tiny run that meta-trains in seconds;
- `no_pool`: every iteration grows fresh task nets (ablation of the sample pool);
- `damage`: half of the pooled start states are zero-out damaged (one random layer and 30 % of
  the other weights zeroed), to train regrowth;
- `same_matrix`: the 2024 prototype's neighbourhoods (same weight matrix only);
- `no_fan_in`: no fan-in scaling (ablation; multi-layer nets collapse).
"""

from __future__ import annotations

import ml_collections

from configs import common

OPTIONS = ("smoke", "no_pool", "damage", "same_matrix", "no_fan_in")


def parse_options(arg: str | None) -> set[str]:
    return common.parse_options(arg, OPTIONS, "metanca_iris:no_pool,smoke")


def metanca_config(arg: str | None) -> ml_collections.ConfigDict:
    """Defaults shared by the iris and MNIST configs (which set task, archs and sizes)."""
    options = parse_options(arg)
    c = common.base_config("metanca", log_every=20, checkpoint_every=200, max_checkpoints_to_keep=2)
    c.model.code_dims = 10  # per position code; hidden state H = 3 * code_dims
    c.model.rule_hidden = (64, 64)
    c.model.input_grid = ()  # (rows, cols): inputs are pixels, coded by row and column
    c.model.conv_kernel = 3  # conv layers ("cN" in an architecture): kernel size and stride,
    c.model.conv_stride = 2  # SAME padding
    c.model.layer_kind_input = False  # the rule also perceives whether a weight is in a conv
    c.model.fire_rate = 0.8
    c.model.fan_in_scaling = "no_fan_in" not in options
    c.model.same_matrix_only = "same_matrix" in options

    c.train_archs = ((4, 3),)
    c.test_archs = ((4, 3),)  # held out, for evaluation only
    c.num_rule_steps = 10
    c.curriculum_steps = 500  # active rule steps 1 -> num_rule_steps over these iterations
    c.arch_weights = ()  # the meta-loss's weight per training architecture; (): equal
    c.nets_per_arch = 4
    c.batch_size = 0  # 0: the whole training split every iteration

    c.use_pool = "no_pool" not in options
    c.pool_size = 64
    c.pool_prob = 0.8
    c.damage_prob = 0.5 if "damage" in options else 0.0
    c.damage_fraction = 0.3

    c.num_train_steps = 3000
    c.init_from = ""  # a training workdir whose newest rule a fresh run starts from (fine-tune)
    c.learning_rate = 1e-3
    c.grad_clip = 1.0
    c.spike_factor = 10.0
    c.loss_avg_decay = 0.95

    c.data = ml_collections.ConfigDict()
    c.data.task = "iris"
    c.data.mnist_dir = ""
    c.data.split_seed = 0
    c.data.max_images = 0  # MNIST: 0 uses all 60,000 training images
    c.options = ",".join(sorted(options))
    return c


def add_training_archs(c: ml_collections.ConfigDict, archs, num_train_steps: int) -> None:
    """A fine-tune's config: `archs` join the training architectures and the run is
    `num_train_steps` long, except under `smoke`, which keeps its tiny set and schedule."""
    if "smoke" not in c.options.split(","):
        c.train_archs += tuple(archs)
        c.num_train_steps = num_train_steps
