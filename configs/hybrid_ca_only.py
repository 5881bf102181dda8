"""The CA-only reservoir: the hybrid without its gate (issue 8).

python -m experiments.train --config=hybrid_ca_only --workdir=/root/runs/ca_only
"""

from configs.common_hybrid import hybrid_config


def get_config(arg=None):
    return hybrid_config("ca_only", arg)
