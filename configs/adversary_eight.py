"""An adversary whose cells, scattered over 10 % of the grid among a frozen original's, make
every digit vote 8 (Randazzo et al., "Adversarial Reprogramming of Neural Cellular Automata",
Distill 2021; nca/selforg_mnist/adversarial.py).

    python -m experiments.train --config=adversary_eight --config.num_train_steps=50000 \
        --workdir=workdirs/adversary_eight
    python -m experiments.train --config=adversary_eight --config.num_train_steps=50000 \
        --config.adversary.original=distill_l2_noise --workdir=workdirs/adversary_distill
    python -m experiments.attack --model=l2_noise --adversary=workdirs/adversary_eight \
        --out=docs/selforg_mnist/adversarial/ours

The shipped `adversary_eight` is the first command's run: its attack had converged by 28.5k
(97.7 % of the cells vote 8 at 10 %, 97.9 at 47.9k), so it stopped at 50k of the 100k schedule
(the learning-rate drops are absolute iterations: the first 50k are the 100k schedule's).

The notebook's recipe, the original's: batch 16, pool 160 with mutation (fresh digits get a
fresh mask, mutated ones keep theirs), L2 on every alive cell's class channels against the
one-hot of `target` after 20 steps, Adam 1e-3 x0.1 at 30k and 70k of 100k iterations; only the
adversary trains. Options: `smoke`, `short`, `20k` (as for `l2_noise`; the ablations do not apply).
"""

import ml_collections

from configs.common import parse_options, selforg_mnist_config


def get_config(arg=None):
    parse_options(arg, ("smoke", "short", "20k"), example="adversary_eight:smoke")
    c = selforg_mnist_config(loss="l2", noise_std=0.02, arg=arg)
    c.adversary = ml_collections.ConfigDict()
    c.adversary.original = "l2_noise"  # the frozen original: a shipped model or a workdir
    c.adversary.original_filters = 80  # its perception filters (model.perception_filters)
    c.adversary.fraction = 0.1  # share of the cells that are adversarial (one draw per cell)
    c.adversary.target = 8  # the label the adversary pushes every digit to
    return c
