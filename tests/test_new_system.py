"""A fourth system is files only: a package with `train.make_trainer`, found by its
`config.model.kind`, trains, checkpoints and resumes through the core loop unchanged."""

import json
import sys
import textwrap

import jax
import ml_collections
import numpy as np
import pytest

import nca
from nca import checkpoint, loop
from nca.config import ConfigError

TOY_TRAIN = textwrap.dedent('''
    """A toy system: fit `w` so that `x @ w` is `y`, by SGD on random rows."""
    import flax.struct
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from nca import loop


    @flax.struct.dataclass
    class TrainState(loop.TrainState):
        pass


    def make_trainer(config, mesh):
        x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
        y = x @ np.array([1.0, -2.0, 0.5], np.float32)
        optimizer = optax.sgd(config.learning_rate)

        def train_step(state, batch, key):
            def loss_fn(w):
                return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)

            loss, grads = jax.value_and_grad(loss_fn)(state.params)
            return state.apply_gradients(grads, optimizer), {"train/loss": loss}

        state = TrainState.create(jnp.zeros(3), optimizer, jax.random.PRNGKey(config.seed))
        return loop.Trainer(state, train_step, {"x": x, "y": y}, config.batch_size,
                            shard_batch=True)
''')


def toy_config(kind: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name, c.seed = "toy", 0
    c.model = ml_collections.ConfigDict({"kind": kind})
    c.batch_size, c.learning_rate = 8, 0.1
    c.num_train_steps, c.log_every, c.checkpoint_every, c.max_checkpoints_to_keep = 40, 10, 20, 2
    return c


@pytest.fixture
def toy_in_nca(tmp_path, monkeypatch):
    """`nca/toy/train.py`, as a new system would be added, but in a temporary folder that joins
    the `nca` package's path (the source tree is left alone)."""
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "__init__.py").write_text("")
    (tmp_path / "toy" / "train.py").write_text(TOY_TRAIN)
    monkeypatch.setattr(nca, "__path__", [*nca.__path__, str(tmp_path)])
    yield
    for name in ("nca.toy", "nca.toy.train"):
        sys.modules.pop(name, None)


def test_a_new_system_package_trains_and_resumes_through_the_core_loop(toy_in_nca, tmp_path):
    assert "toy" in loop.available_systems()
    config = toy_config("toy")
    straight = loop.train_and_evaluate(config, tmp_path / "a", progress=False)
    loop.train_and_evaluate(config, tmp_path / "b", max_iterations=20, progress=False)
    resumed = loop.train_and_evaluate(config, tmp_path / "b", progress=False)
    np.testing.assert_allclose(jax.device_get(straight.params), [1.0, -2.0, 0.5], atol=0.05)
    np.testing.assert_array_equal(straight.params, resumed.params)
    assert checkpoint.load_params(tmp_path / "b")[2] == 40
    rows = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [10, 20, 30, 40]


def test_a_system_outside_nca_is_named_by_a_dotted_kind(tmp_path, monkeypatch):
    (tmp_path / "mylab_toy").mkdir()
    (tmp_path / "mylab_toy" / "__init__.py").write_text("")
    (tmp_path / "mylab_toy" / "toy").mkdir()
    (tmp_path / "mylab_toy" / "toy" / "__init__.py").write_text("")
    (tmp_path / "mylab_toy" / "toy" / "train.py").write_text(TOY_TRAIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = toy_config("mylab_toy.toy")
    config.num_train_steps = 2
    state = loop.train_and_evaluate(config, tmp_path / "w", progress=False)
    assert int(state.step) == 2


def test_an_unknown_kind_lists_the_systems():
    with pytest.raises(ConfigError, match="unknown model.kind 'nope'.*hybrid, metanca"):
        loop.train_and_evaluate(toy_config("nope"), "/nonexistent/never_written")
