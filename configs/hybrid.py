"""Hybrid CA + global neural gate restoring 70 %-masked MNIST digits (issue 8).

    python -m experiments.train --config=hybrid --workdir=/root/runs/hybrid
    python -m experiments.train --config=hybrid:gate_patch --workdir=/root/runs/hybrid_patch

Gate ablations: `:gate_channel`, `:gate_patch`; `:smoke` trains in seconds.
"""

from configs.common_hybrid import hybrid_config


def get_config(arg=None):
    return hybrid_config("hybrid", arg)
