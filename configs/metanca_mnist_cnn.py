"""MetaNCA on MNIST with convolutional task nets: one rule grows MLPs and small CNNs (3x3 convs
of stride 2, SAME padding, then dense layers), perceiving which kind of layer each weight sits in
(`model.layer_kind_input`). The same 80/20 re-split and CPU-sized rule as `metanca_mnist`.

Trained: [784, 30, 10], [784, c8, 10], [784, c8, c8, 10], [784, c4, c16, 10]; held out:
[784, 50, 50, 10], [784, c16, c16, 10], [784, c6, c12, 10], [784, c8, c8, 30, 10] ("cN": a conv
to N feature maps; 28x28 -> 14x14 -> 7x7). One MLP keeps the rule growing dense nets too; the
rule's cost grows with the weights it updates (about 20 us per weight per meta-step on one
core), and a [784, 50, 30, 10] would cost more than the three CNNs together.

python -m experiments.train --config=metanca_mnist_cnn:damage --workdir=workdirs/metanca_mnist_cnn
python -m experiments.train --config=metanca_mnist_cnn:smoke --workdir=/tmp/metanca_cnn_smoke
"""

from configs import common, metanca_mnist
from configs.common_metanca import parse_options


def get_config(arg=None):
    c = metanca_mnist.get_config(arg)
    c.model.layer_kind_input = True
    c.train_archs = ((784, 30, 10), (784, "c8", 10), (784, "c8", "c8", 10), (784, "c4", "c16", 10))
    c.test_archs = ((784, 50, 50, 10), (784, "c16", "c16", 10), (784, "c6", "c12", 10),
                    (784, "c8", "c8", 30, 10))  # fmt: skip
    common.apply_smoke(c, parse_options(arg), train_archs=((784, 8, 10), (784, "c2", "c3", 10)),
                       test_archs=((784, "c3", 10),))  # fmt: skip
    return c
