"""L2 loss on the class channels, no residual noise.

python -m experiments.train --config=l2 --workdir=workdirs/l2
"""

from configs.common import selforg_mnist_config


def get_config(arg=None):
    return selforg_mnist_config(loss="l2", noise_std=0.0, arg=arg)
