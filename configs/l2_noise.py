"""L2 loss + residual noise N(0, 0.02): the article's final (published) model.

    python -m experiments.train --config=l2_noise --workdir=workdirs/l2_noise

Ablations: `--config=l2_noise:no_pool`, `--config=l2_noise:no_mutation`; add `,smoke` for a run
that finishes in seconds.
"""

from configs.common import selforg_mnist_config


def get_config(arg=None):
    return selforg_mnist_config(loss="l2", noise_std=0.02, arg=arg)
