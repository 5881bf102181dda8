"""MetaNCA on iris: one rule grows [4, 3], [4, 10, 3], [4, 5, 10, 3] and [4, 20, 3] nets;
[4, 10, 5, 3] is held out.

python -m experiments.train --config=metanca_iris --workdir=/root/runs/metanca_iris
python -m experiments.train --config=metanca_iris:no_pool --workdir=/root/runs/metanca_iris_nopool
python -m experiments.train --config=metanca_iris:smoke --workdir=/tmp/metanca_iris_smoke
"""

from configs import common
from configs.common_metanca import metanca_config, parse_options


def get_config(arg=None):
    c = metanca_config(arg)
    c.data.task = "iris"
    c.train_archs = ((4, 3), (4, 10, 3), (4, 5, 10, 3), (4, 20, 3))
    c.test_archs = ((4, 10, 5, 3),)
    c.model.code_dims = 10  # H = 30, as the official code
    c.model.rule_hidden = (64, 64)
    c.nets_per_arch = 8
    # Pooled chains average 1 / (1 - pool_prob) meta-steps: 0.95 trains the rule on ~200-step
    # horizons (0.8, ~50 steps, kept the loss near its minimum for far fewer steps; 0.98 left
    # too few fresh inits to learn from). See docs/metanca/README.md.
    c.pool_prob = 0.95
    c.num_train_steps = 6000  # about 5 min on one CPU core
    c.curriculum_steps = 500
    common.apply_smoke(c, parse_options(arg), train_archs=((4, 3), (4, 6, 3)),
                       test_archs=((4, 5, 3),), model__code_dims=4, model__rule_hidden=(16,),
                       nets_per_arch=2, pool_size=8, num_train_steps=8, curriculum_steps=4,
                       num_rule_steps=3)  # fmt: skip
    return c
