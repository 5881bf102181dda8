"""Shipped pretrained models load by name, without data or training."""

import jax
import numpy as np
import pytest

from nca.config import load_config
from nca.selforg_mnist import model, pretrained, reference
from tests.conftest import SHARED_ADVERSARY, SHARED_MODEL


def test_distill_weights_are_shipped_and_load():
    assert "distill_l2_noise" in pretrained.available()
    config, params = pretrained.load("distill_l2_noise")
    assert model.num_params(params) == 22_499
    assert (config.loss, config.model.noise_std) == ("l2", 0.02)
    init = model.init_params(jax.random.PRNGKey(0))
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, init)


@pytest.mark.skipif(not SHARED_MODEL.is_file(), reason="needs ../shared/reference")
def test_shipped_weights_equal_the_published_file():
    _, params = pretrained.load("distill_l2_noise")
    want = reference.load_distill_params(SHARED_MODEL)
    jax.tree.map(np.testing.assert_array_equal, params, want)


@pytest.mark.skipif(not SHARED_ADVERSARY.is_file(), reason="needs ../shared/reference")
def test_shipped_adversary_equals_the_published_file():
    _, params = pretrained.load("distill_adversary_eight")
    want = reference.load_distill_params(SHARED_ADVERSARY)
    jax.tree.map(np.testing.assert_array_equal, params, want)


def test_export_round_trip_and_unknown_name(tmp_path, monkeypatch):
    params = jax.device_get(model.init_params(jax.random.PRNGKey(1)))
    config = load_config("ce:smoke")
    pretrained.export(params, config, "mine", "a test", folder=tmp_path)
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path)
    loaded_config, loaded = pretrained.load("mine")
    jax.tree.map(np.testing.assert_array_equal, loaded, params)
    assert loaded_config.name == "ce:smoke"
    with pytest.raises(ValueError, match="available: mine"):
        pretrained.load("theirs")
