"""Config names, options and their errors."""

import pytest

from nca.config import ConfigError, available_configs, load_config
from nca.loop import available_systems


def test_every_config_and_option_loads():
    assert {"ce", "l2", "l2_noise", "metanca_iris", "hybrid"} <= set(available_configs())
    for name in available_configs():
        for arg in ("", ":smoke"):
            config = load_config(name + arg)
            assert config.name == name + arg
            assert config.model.kind in available_systems()
        # a smoke run is seconds long, also where a config sets its own schedule
        assert load_config(name + ":smoke").num_train_steps <= 20, name
    for name in ("ce", "l2", "l2_noise"):
        for arg in (":short", ":no_pool,smoke", ":no_mutation"):
            config = load_config(name + arg)
            assert config.batch_size % 4 == 0 and config.pool_size >= config.batch_size


def test_article_settings():
    c = load_config("l2_noise")
    assert (c.loss, c.model.noise_std, c.model.fire_rate) == ("l2", 0.02, 0.5)
    assert (c.batch_size, c.pool_size, c.num_ca_steps, c.num_train_steps) == (16, 160, 20, 100_000)
    assert tuple(c.lr_boundaries) == (30_000, 70_000) and c.adam_eps == 1e-7
    assert load_config("ce").loss == "ce" and load_config("l2").model.noise_std == 0.0
    assert not load_config("l2_noise:no_pool").use_pool
    assert not load_config("l2_noise:no_mutation").mutate


def test_shorter_schedules():
    for option, iterations, drops in ((":short", 40_000, (20_000, 32_000)),
                                      (":20k", 20_000, (10_000, 16_000))):  # fmt: skip
        c = load_config("l2_noise" + option)
        assert (c.num_train_steps, tuple(c.lr_boundaries)) == (iterations, drops)
    with pytest.raises(ConfigError, match="different schedules"):
        load_config("ce:short,20k")


def test_unknown_name_and_option_are_clear():
    with pytest.raises(ConfigError, match="Available configs: .*l2_noise"):
        load_config("l3")
    with pytest.raises(ConfigError, match="valid options"):
        load_config("l2_noise:tiny")


def test_configs_are_locked():
    with pytest.raises(AttributeError):
        load_config("l2").no_such_field = 1
