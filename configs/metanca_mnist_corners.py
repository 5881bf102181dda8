"""MetaNCA on MNIST with all four corners of the abstract's heatmap among the training
architectures: `metanca_mnist_grid`'s set plus [784, 10, 10, 10], the corner that rule was not
shown and its lowest heatmap cell (0.430 at 1,630 meta-steps; docs/metanca/README.md).
[784, 50, 50, 10] stays held out.

The natural run fine-tunes the finished `metanca_mnist_grid:damage` rule (`init_from`: a fresh
Adam state and pool, step 0, no curriculum):

python -m experiments.train --config=metanca_mnist_corners:damage \
    --workdir=workdirs/metanca_mnist_corners --config.init_from=workdirs/metanca_mnist_grid \
    --config.curriculum_steps=0
"""

from configs import metanca_mnist_grid
from configs.common_metanca import add_training_archs


def get_config(arg=None):
    c = metanca_mnist_grid.get_config(arg)
    add_training_archs(c, ((784, 10, 10, 10),), 1000)
    return c
