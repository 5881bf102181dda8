"""MetaNCA on MNIST (80/20 re-split of the training set): one rule grows [784, 10],
[784, 10, 10], [784, 30, 10] and [784, 50, 30, 10]; [784, 50, 50, 10] is held out.

[784, 10, 10] teaches the rule a narrow first hidden layer: a rule trained without it grew
[784, 10, Y, 10] nets to 0.12-0.22 accuracy (docs/metanca/README.md).

A CPU-sized rule (32-32 hidden, H = 18); the official code's 100-200-100 rule with H = 30 costs
about 7x more per meta-step (see docs/metanca/README.md).

python -m experiments.train --config=metanca_mnist --workdir=/root/runs/metanca_mnist
python -m experiments.train --config=metanca_mnist:smoke --workdir=/tmp/metanca_mnist_smoke
"""

from configs import common
from configs.common_metanca import metanca_config, parse_options


def get_config(arg=None):
    c = metanca_config(arg)
    c.data.task = "mnist"
    c.train_archs = ((784, 10), (784, 10, 10), (784, 30, 10), (784, 50, 30, 10))
    c.test_archs = ((784, 50, 50, 10),)
    c.model.code_dims = 6  # H = 18
    c.model.rule_hidden = (32, 32)
    c.model.input_grid = (28, 28)
    c.nets_per_arch = 1
    c.batch_size = 512
    c.pool_size = 32
    c.num_train_steps = 6000
    c.curriculum_steps = 300
    c.learning_rate = 2e-3
    c.log_every = 10
    c.checkpoint_every = 100
    common.apply_smoke(c, parse_options(arg), train_archs=((784, 8, 10),),
                       test_archs=((784, 6, 10),), model__code_dims=2, model__rule_hidden=(8,),
                       batch_size=16, pool_size=4, num_train_steps=6, curriculum_steps=3,
                       num_rule_steps=3, checkpoint_every=3, data__max_images=200)  # fmt: skip
    return c
