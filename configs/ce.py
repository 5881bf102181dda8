"""Cross-entropy loss, no residual noise (the article's first model).

python -m experiments.train --config=ce --workdir=workdirs/ce
"""

from configs.common import selforg_mnist_config


def get_config(arg=None):
    return selforg_mnist_config(loss="ce", noise_std=0.0, arg=arg)
