"""The frozen digit-ID CNN classifier, trained on clean MNIST (issue 8's digit-ID metric).

python -m experiments.train --config=digit_classifier --workdir=/root/runs/classifier
"""

from configs.common_hybrid import hybrid_config, parse_options


def get_config(arg=None):
    c = hybrid_config("classifier", arg)
    if "smoke" not in parse_options(arg):
        c.batch_size = 128
        c.num_train_steps = 1500
        c.learning_rate = 1e-3
    return c
