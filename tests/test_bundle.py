"""Resume bundles: a run continued from a bundle in a fresh workdir ends bit for bit where an
uninterrupted one does; bad bundles fail with one clear error and touch nothing; milestone params
survive retention and session boundaries; a pool left out restarts, and every report says so."""

import json
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from nca import bundle, checkpoint, loop
from nca.config import load_config
from nca.metanca import train as metanca_train
from tests.conftest import REPO_ROOT

# Fields that do not change a system's train step: configs differing only in them share one
# compiled step (compiling dominates these tests).
BOOKKEEPING = ("name", "log_every", "checkpoint_every", "max_checkpoints_to_keep", "keep_every")


@pytest.fixture(scope="module", autouse=True)
def shared_compiles():
    with pytest.MonkeyPatch.context() as mp:
        for system in map(loop.system_module, loop.available_systems()):
            original, cache = system.make_train_step, {}

            def make_train_step(config, *args, _original=original, _cache=cache):
                fields = {k: v for k, v in config.to_dict().items() if k not in BOOKKEEPING}
                key = json.dumps(fields, sort_keys=True, default=list)
                if key not in _cache:
                    _cache[key] = _original(config, *args)
                return _cache[key]

            mp.setattr(system, "make_train_step", make_train_step)
        yield


def smoke(spec, mnist_dir, **overrides):
    config = load_config(spec)
    config.data.mnist_dir = str(mnist_dir)
    for key, value in overrides.items():
        config[key] = value
    return config


def train(config, workdir, **kwargs):
    return loop.train_and_evaluate(config, workdir, progress=False, **kwargs)


def assert_same_bits(a, b):
    flat_a, flat_b = bundle.leaves_by_path(a), bundle.leaves_by_path(b)
    assert flat_a.keys() == flat_b.keys()
    for path in flat_a:
        x, y = np.asarray(flat_a[path]), np.asarray(flat_b[path])
        assert x.dtype == y.dtype and x.shape == y.shape, path
        assert x.tobytes() == y.tobytes(), f"{path} differs"


def metrics(workdir):
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    for row in rows:
        del row["train/iterations_per_sec"]
    return rows


def snapshot(workdir):
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*"))
            if p.is_file()}  # fmt: skip


def with_config(source, destination, **changes):
    """A copy of bundle `source` whose config has `changes` (`data__mnist_dir`: data.mnist_dir)."""
    with np.load(source) as npz:
        members = {k: npz[k] for k in npz.files}
    meta = json.loads(members["meta"].tobytes())
    for key, value in changes.items():
        *parents, field = key.split("__")
        node = meta["config"]
        for parent in parents:
            node = node[parent]
        node[field] = value
    members["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    bundle._write_zip(destination, members)


def continue_through_bundle(config, tmp_path, stop, **write_kwargs):
    """Trains `stop` iterations, bundles, deletes the workdir, restores the bundle into a fresh
    one and trains to the end there. Returns (final state, bundle summary, fresh workdir)."""
    first, second = tmp_path / "first", tmp_path / "second"
    train(config, first, max_iterations=stop)
    summary = bundle.write(first, tmp_path / "run.npz", **write_kwargs)
    shutil.rmtree(first)
    restored = bundle.restore(tmp_path / "run.npz", second, log=lambda *_: None)
    assert restored["step"] == stop
    return train(config, second), summary, second


# --------------------------------------------------------------------------------------------
# The self-classifying CA


def test_continuing_from_a_bundle_is_bit_for_bit_an_uninterrupted_run(mnist_dir, tmp_path):
    config = smoke("l2_noise:smoke", mnist_dir)  # 12 iterations, checkpoints every 4
    straight = train(config, tmp_path / "straight")
    resumed, summary, second = continue_through_bundle(config, tmp_path, stop=6)
    assert summary["step"] == 6 and summary["pool_carried"] and summary["exact"]
    assert int(resumed.step) == config.num_train_steps
    assert_same_bits(straight, resumed)
    assert metrics(second) == metrics(tmp_path / "straight")  # rows to 6 carried, then recomputed
    history = [json.loads(line) for line in open(second / bundle.HISTORY_FILE)]
    assert [(h["step"], h["exact"]) for h in history] == [(6, True)]


def test_the_pool_is_stored_losslessly_and_compactly():
    rng = np.random.default_rng(0)
    grey = np.where(rng.random((16, 28, 28)) < 0.2, rng.integers(1, 256, (16, 28, 28)), 0)
    pool = np.zeros((16, 28, 28, 20), np.float32)
    pool[..., 0] = grey.astype(np.float32) / 255.0
    alive = pool[..., 0] > 0.1
    pool[alive, 1:] = rng.normal(size=(alive.sum(), 19)).astype(np.float32)
    pool[~alive & (rng.random((16, 28, 28)) < 0.3), 3] = -0.0  # mutated-away negative states
    pool[0, 0, 0, 5] = np.nan
    spec, parts = bundle.encode_array(pool)
    assert spec["encoding"] == "sparse"
    assert [g["grey"] for g in spec["groups"]][:1] == [True]  # grey levels as uint8
    decoded = bundle.decode_array({**spec, "shape": list(pool.shape), "dtype": "<f4"}, parts)
    assert decoded.tobytes() == pool.tobytes()  # -0.0 and NaN included
    assert sum(p.nbytes for p in parts.values()) < 0.3 * pool.nbytes
    for other in (rng.normal(size=(64, 64)).astype(np.float32), np.arange(5000).reshape(50, 100)):
        spec, parts = bundle.encode_array(other)  # dense: byte planes deflate better, or raw
        decoded = bundle.decode_array({**spec, "shape": other.shape, "dtype": other.dtype}, parts)
        assert decoded.dtype == other.dtype and decoded.tobytes() == other.tobytes()


@pytest.fixture(scope="module")
def small_run(mnist_dir, tmp_path_factory):
    """A run stopped at 6 of 12 iterations, its bundle, and the workdir's files."""
    root = tmp_path_factory.mktemp("small_run")
    config = smoke("l2_noise:smoke", mnist_dir, checkpoint_every=3)
    train(config, root / "run", max_iterations=6)
    bundle.write(root / "run", root / "run.npz")
    return config, root


def test_bad_bundles_fail_with_one_clear_error_and_touch_nothing(small_run, tmp_path):
    config, root = small_run
    good = (root / "run.npz").read_bytes()
    truncated, corrupt = tmp_path / "truncated.npz", tmp_path / "corrupt.npz"
    truncated.write_bytes(good[: len(good) // 2])
    flipped = bytearray(good)
    flipped[len(good) // 3 : len(good) // 3 + 64] = bytes(64)
    corrupt.write_bytes(bytes(flipped))
    (tmp_path / "not_a_bundle.npz").write_bytes(b"hello")
    for bad in (truncated, corrupt, tmp_path / "not_a_bundle.npz", tmp_path / "missing.npz"):
        with pytest.raises(bundle.BundleError, match="not a readable resume bundle|no bundle at"):
            bundle.restore(bad, tmp_path / "fresh")
        assert not (tmp_path / "fresh").exists()

    # A bundle whose config builds another state (pool_size 16 -> 32): refused before writing.
    with_config(root / "run.npz", tmp_path / "other_config.npz", pool_size=32)
    with pytest.raises(bundle.BundleError, match=r"pool_states is float32\[16, 28, 28, 20\].*32"):
        bundle.restore(tmp_path / "other_config.npz", tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()

    # A workdir that already has checkpoints is never overwritten.
    before = snapshot(root / "run")
    with pytest.raises(bundle.BundleError, match="already has checkpoints"):
        bundle.restore(root / "run.npz", root / "run")
    assert snapshot(root / "run") == before

    # Continuing a restored run with another config is refused by the trainer, as any resume.
    bundle.restore(root / "run.npz", tmp_path / "restored", log=lambda *_: None)
    other = smoke("l2_noise:smoke", config.data.mnist_dir, learning_rate=5e-3)
    with pytest.raises(checkpoint.CheckpointError, match=r"another config \(learning_rate"):
        train(other, tmp_path / "restored")
    assert checkpoint.all_steps(tmp_path / "restored") == [6]

    # The command says it in one line, with a non-zero status.
    out = subprocess.run(
        [sys.executable, "-m", "experiments.bundle", f"--restore={corrupt}",
         f"--workdir={tmp_path / 'cli'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not a readable resume bundle" in errors[0], out.stderr
    assert not (tmp_path / "cli").exists()


def test_a_bundle_never_replaces_one_of_another_run(small_run, tmp_path):
    config, root = small_run
    (tmp_path / "garbage.npz").write_bytes(b"garbage")
    with pytest.raises(bundle.BundleError, match="refusing to replace .*not a readable"):
        bundle.write(root / "run", tmp_path / "garbage.npz")
    with_config(root / "run.npz", tmp_path / "out.npz", seed=1)  # as if of a run with seed 1
    before = (tmp_path / "out.npz").read_bytes()
    with pytest.raises(bundle.BundleError, match=r"another run \(seed: 1 vs 0\)"):
        bundle.write(root / "run", tmp_path / "out.npz")
    assert (tmp_path / "out.npz").read_bytes() == before


def test_a_bundle_replaces_one_of_the_same_run_after_a_resumable_change(small_run, tmp_path):
    """A change the system's resume accepts (here `init_from`, which only decides a fresh run's
    start) keeps the run the same: its bundle is replaced, not refused."""
    _, root = small_run
    with_config(root / "run.npz", tmp_path / "out.npz", init_from="workdirs/elsewhere")
    assert bundle.write(root / "run", tmp_path / "out.npz", log=lambda *_: None)["step"] == 6
    assert bundle.read(tmp_path / "out.npz").meta["config"]["init_from"] == ""


def test_another_machine_s_data_folder_and_init_from_do_not_stop_a_restore(
    small_run, mnist_dir, tmp_path
):
    _, root = small_run
    moved = tmp_path / "moved.npz"  # as written on Colab, from a fine-tuned run
    with_config(root / "run.npz", moved, data__mnist_dir="/content/mnist", init_from="/content/wd")
    summary = bundle.restore(moved, tmp_path / "here", mnist_dir=str(mnist_dir))
    assert json.loads((tmp_path / "here" / "config.json").read_text())["data"]["mnist_dir"] == str(
        mnist_dir
    )
    command = bundle.continue_command(summary["config"], tmp_path / "here")
    assert f"--config.data.mnist_dir={mnist_dir}" in command and "init_from" not in command


def test_the_continue_command_leaves_out_what_only_starts_a_fresh_run():
    """A restored run has the params `init_from`, `adversary.original` and
    `defence.adversary_init` name in its state; its command names only real differences."""
    config = load_config("l2_noise_defended")
    config.init_from = "l2_noise"
    config.defence.adversary_init = "workdirs/adversary_def"
    config.learning_rate = 1e-4
    command = bundle.continue_command(config, "workdirs/here")
    assert "--config.learning_rate=0.0001" in command
    assert "init_from" not in command and "adversary_init" not in command
    adversary = load_config("adversary_eight")
    adversary.adversary.original = "workdirs/l2_noise_defended"
    assert "adversary.original" not in bundle.continue_command(adversary, "workdirs/here")


def test_the_command_writes_describes_and_restores(small_run, tmp_path):
    _, root = small_run
    out = tmp_path / "resume" / "run.npz"
    cmd = [sys.executable, "-m", "experiments.bundle"]
    run = lambda *a: subprocess.run([*cmd, *a], cwd=REPO_ROOT, capture_output=True, text=True,  # noqa: E731
                                    timeout=120)  # fmt: skip
    wrote = run(f"--workdir={root / 'run'}", f"--out={out}")
    assert wrote.returncode == 0 and "step 6, pool carried" in wrote.stdout, wrote.stderr
    assert "l2_noise:smoke at step 6 of 12" in bundle.describe(bundle.read(out))
    restored = run(f"--restore={out}", f"--workdir={tmp_path / 'continued'}")
    assert restored.returncode == 0, restored.stderr
    assert (
        f"python -m experiments.train --config=l2_noise:smoke --workdir={tmp_path / 'continued'} "
        "--config.checkpoint_every=3" in restored.stdout
    )
    assert checkpoint.all_steps(tmp_path / "continued") == [6]


def test_milestone_params_survive_retention_and_session_boundaries(mnist_dir, tmp_path):
    config = smoke("l2_noise:smoke", mnist_dir, checkpoint_every=2, max_checkpoints_to_keep=1,
                   keep_every=4)  # fmt: skip
    train(config, tmp_path / "a", max_iterations=10)
    assert checkpoint.all_steps(tmp_path / "a") == [4, 8, 10]  # 2 and 6 went to retention
    wanted = {s: checkpoint.load_params(tmp_path / "a", s)[1] for s in (4, 8)}
    summary = bundle.write(tmp_path / "a", tmp_path / "run.npz")
    assert summary["milestones"] == [4, 8]
    shutil.rmtree(tmp_path / "a")

    bundle.restore(tmp_path / "run.npz", tmp_path / "b", log=lambda *_: None)
    for step, params in wanted.items():
        _, got, got_step = checkpoint.load_params(tmp_path / "b", step)
        assert got_step == step
        assert_same_bits(got, params)
    train(config, tmp_path / "b")
    assert checkpoint.all_steps(tmp_path / "b") == [4, 8, 12]  # milestones outlive retention

    # A milestone the workdir lost (other retention settings) is kept by the next bundle of the
    # same run written over the old one.
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "4")
    summary = bundle.write(tmp_path / "b", tmp_path / "run.npz")
    assert summary["milestones"] == [4, 8] and summary["step"] == 12
    carried = bundle.read(tmp_path / "run.npz").milestones[4]
    assert_same_bits(carried, {"params": wanted[4]})

    # A bundle written at a milestone step carries it on once the workdir has moved past it.
    train(config, tmp_path / "c", max_iterations=8)
    assert bundle.write(tmp_path / "c", tmp_path / "c.npz")["milestones"] == [4]
    train(config, tmp_path / "c")
    for step in (4, 8):
        shutil.rmtree(tmp_path / "c" / "checkpoints" / str(step))
    assert bundle.write(tmp_path / "c", tmp_path / "c.npz")["milestones"] == [4, 8]


# --------------------------------------------------------------------------------------------
# Other systems


@pytest.mark.slow
def test_a_metanca_pool_left_out_restarts_and_every_report_says_so(tmp_path):
    config = load_config("metanca_iris:smoke")  # 8 iterations, checkpoints every 4
    straight = train(config, tmp_path / "straight", max_iterations=4)
    resumed, summary, second = continue_through_bundle(config, tmp_path, stop=4, drop_pool=True)
    assert not summary["pool_carried"] and not summary["exact"]
    assert "--no_pool" in summary["pool_note"]
    assert int(resumed.step) == 8
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(resumed))
    history = [json.loads(line) for line in open(second / bundle.HISTORY_FILE)]
    assert [(h["step"], h["exact"], h["pool_carried"]) for h in history] == [(4, False, False)]
    # At the restored step: the rule, optimiser state and rng as trained, the pool as initialised.
    assert checkpoint.all_steps(second) == [4, 8]
    _, at_restore, _ = checkpoint.load_state(second, 4)
    fresh = bundle.leaves_by_path(metanca_train.init_train_state(config))
    trained = bundle.leaves_by_path(straight)
    for path, value in bundle.leaves_by_path(at_restore).items():
        want = fresh[path] if bundle.is_pool(path) else trained[path]
        assert np.asarray(value).tobytes() == np.asarray(want).tobytes(), path
    assert "NOT carried" in bundle.describe(bundle.read(tmp_path / "run.npz"))

    # Over the size budget, the pool is left out without being asked, and the bundle says why.
    summary = bundle.write(second, tmp_path / "small.npz", max_bytes=2_000, log=lambda *_: None)
    assert not summary["pool_carried"] and "over" in summary["pool_note"]


@pytest.mark.slow
def test_a_hybrid_run_continues_from_a_bundle_bit_for_bit(mnist_dir, tmp_path):
    config = smoke("hybrid:smoke", mnist_dir)  # 6 iterations, checkpoints every 3
    straight = train(config, tmp_path / "straight")
    resumed, summary, _ = continue_through_bundle(config, tmp_path, stop=3)
    assert summary["exact"] and summary["pool_carried"] is False  # no pool to carry
    assert_same_bits(straight, resumed)
