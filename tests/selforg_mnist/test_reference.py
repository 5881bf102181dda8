"""The published Distill weights: import, and the article's accuracy on real test digits."""

import json

import jax
import numpy as np
import pytest

from nca import data
from nca.selforg_mnist import evaluate, model, reference
from tests.conftest import SHARED_ADVERSARY, SHARED_MNIST, SHARED_MODEL, requires_shared


@pytest.mark.skipif(not SHARED_MODEL.is_file(), reason="needs ../shared/reference")
def test_import_shapes_and_count():
    params = reference.load_distill_params(SHARED_MODEL)
    init = model.init_params(jax.random.PRNGKey(0))
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, init)
    assert model.num_params(params) == 22_499
    assert np.abs(params["output"]["kernel"]).max() > 0  # trained, not a fresh init


@pytest.mark.skipif(not SHARED_ADVERSARY.is_file(), reason="needs ../shared/reference")
def test_the_published_adversary_imports_as_the_same_architecture():
    adversary = reference.load_distill_params(SHARED_ADVERSARY)
    original = reference.load_distill_params(SHARED_MODEL)
    assert jax.tree.map(np.shape, adversary) == jax.tree.map(np.shape, original)
    assert not np.allclose(adversary["hidden"]["kernel"], original["hidden"]["kernel"])

    def ops(path):  # the graph's computation, without node names
        nodes = json.loads(path.read_text())["modelTopology"]["node"]
        return sorted(n["op"] for n in nodes)

    assert ops(SHARED_ADVERSARY) == ops(SHARED_MODEL)


def test_missing_or_malformed_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=reference.ENV_VAR):
        reference.load_distill_params(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "graph-model"}')
    with pytest.raises(ValueError, match="not a TensorFlow.js graph model"):
        reference.load_distill_params(bad)
    no_output = tmp_path / "no_output.json"
    no_output.write_text('{"modelTopology": {"node": []}}')
    with pytest.raises(ValueError, match="one convolution with a"):
        reference.load_distill_params(no_output)


@pytest.mark.slow
@requires_shared
def test_published_weights_classify_the_first_1000_test_digits():
    """The article reports 95.3 % accuracy and 88.1 % agreement at 200 steps (full test set)."""
    params = reference.load_distill_params(SHARED_MODEL)
    images, labels = data.load_mnist("test", str(SHARED_MNIST))
    curves = evaluate.evaluate(
        params,
        data.to_grey(images[:1000]),
        labels[:1000],
        num_steps=200,
        noise_std=0.02,
        variant="none",
        batch_size=500,
        progress=False,
    )
    accuracy, agreement = curves["accuracy"], curves["agreement"]
    print(
        f"published weights, 1000 digits, step 200: accuracy {accuracy[-1]:.4f}, "
        f"agreement {agreement[-1]:.4f}"
    )
    assert accuracy[-1] >= 0.93
    assert agreement[-1] >= 0.85
    assert accuracy[9] < accuracy[-1]  # cells start undecided and converge
