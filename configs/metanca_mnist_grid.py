"""MetaNCA on MNIST with training architectures that span the abstract's heatmap: the rule of
`metanca_mnist` also grows [784, 10, 100, 10], [784, 100, 10, 10] and [784, 100, 100, 10], the
grid's corners other than [784, 10, 10, 10] (whose first layer [784, 10, 10] already covers).
[784, 50, 50, 10] stays held out. The `metanca_mnist` rule grows nets near its training widths
well (0.88) but its heatmap's mean is 0.645 and its worst cell, [784, 10, 80, 10], 0.315.

The corners triple the weights a meta-step updates (about 260k against 81k), so the natural run
fine-tunes the trained `metanca_mnist:damage` rule (`init_from`, a fresh Adam and pool, no
curriculum):

python -m experiments.bundle --restore=resume/metanca_mnist_damage.npz \
    --workdir=workdirs/metanca_mnist_damage
python -m experiments.train --config=metanca_mnist_grid:damage \
    --workdir=workdirs/metanca_mnist_grid --config.init_from=workdirs/metanca_mnist_damage \
    --config.curriculum_steps=0
"""

from configs import metanca_mnist
from configs.common_metanca import add_training_archs


def get_config(arg=None):
    c = metanca_mnist.get_config(arg)
    add_training_archs(c, ((784, 10, 100, 10), (784, 100, 10, 10), (784, 100, 100, 10)), 3000)
    return c
