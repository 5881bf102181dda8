"""The small CNN autoencoder baseline (about 0.19M params), same steps x batch (issue 8).

python -m experiments.train --config=cnn_autoencoder --workdir=/root/runs/autoencoder
"""

from configs.common_hybrid import hybrid_config


def get_config(arg=None):
    return hybrid_config("autoencoder", arg)
