"""MetaNCA with CNN task nets and two dense hidden layers: `metanca_mnist_cnn`'s training set
plus [784, 20, 20, 10] and [784, c8, c8, 20, 10]. The `metanca_mnist_cnn` rule, which never saw a
net with two dense hidden layers, grows its held-out [784, 50, 50, 10] and [784, c8, c8, 30, 10]
to 0.09-0.12 (docs/metanca/README.md, "CNN task nets"); these two cheap nets (16k and 9k
weights) show it that shape, and both held-out nets stay held out.

The natural run fine-tunes the `metanca_mnist_cnn:damage` rule (`init_from`: a fresh Adam state
and pool, step 0, no curriculum):

python -m experiments.train --config=metanca_mnist_cnn_deep:damage \
    --workdir=workdirs/metanca_mnist_cnn_deep --config.init_from=workdirs/metanca_mnist_cnn \
    --config.curriculum_steps=0
"""

from configs import metanca_mnist_cnn
from configs.common_metanca import add_training_archs


def get_config(arg=None):
    c = metanca_mnist_cnn.get_config(arg)
    add_training_archs(c, ((784, 20, 20, 10), (784, "c8", "c8", 20, 10)), 2000)
    return c
