"""End to end for the hybrid family: smoke training through the shared loop, exact resume, and
`experiments.restore` on the trained workdirs (tiny synthetic MNIST)."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from nca import checkpoint, data, loop, tensorboard
from nca.config import ConfigError, load_config
from nca.hybrid import masking, metrics, models, train
from tests.conftest import REPO_ROOT


def smoke_config(name, mnist_dir, **overrides):
    c = load_config(f"{name}:smoke")
    c.data.mnist_dir = str(mnist_dir)
    for k, v in overrides.items():
        c[k] = v
    return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_dir):
    root = tmp_path_factory.mktemp("hybrid_runs")
    runs = {}
    for name in ("digit_classifier", "hybrid", "cnn_autoencoder"):
        runs[name] = root / name
        loop.train_and_evaluate(smoke_config(name, mnist_dir), runs[name], progress=False)
    return runs


def test_smoke_runs_write_checkpoints_and_metrics(trained):
    for name, workdir in trained.items():
        config, params, step = checkpoint.load_params(workdir)
        assert step == 6 and config.model.kind == "hybrid"
        rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
        assert [r["step"] for r in rows] == [2, 4, 6]
        key = "train/accuracy" if name == "digit_classifier" else "train/psnr"
        assert all(np.isfinite(r[key]) for r in rows)


def test_interrupted_run_resumes_exactly(tmp_path, mnist_dir):
    config = smoke_config("cnn_autoencoder", mnist_dir)
    straight = loop.train_and_evaluate(config, tmp_path / "a", progress=False)
    loop.train_and_evaluate(config, tmp_path / "b", max_iterations=3, progress=False)
    resumed = loop.train_and_evaluate(config, tmp_path / "b", progress=False)
    assert int(resumed.step) == 6
    for x, y in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_training_lowers_the_loss(tmp_path, mnist_dir):
    config = smoke_config("cnn_autoencoder", mnist_dir, num_train_steps=40, log_every=10,
                          checkpoint_every=40, batch_size=16)  # fmt: skip
    loop.train_and_evaluate(config, tmp_path, progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert rows[-1]["train/loss"] < 0.7 * rows[0]["train/loss"]


def test_validation_psnr_on_held_out_digits(tmp_path, mnist_dir):
    """`blog_budget`: the last training digits are held out and `val/psnr` is their mean PSNR
    under fixed masks, logged every `validate_every` iterations."""
    config = load_config("cnn_autoencoder:blog_budget,smoke")
    config.data.mnist_dir = str(mnist_dir)
    assert (config.data.validation_images, config.validate_every) == (40, 2)
    trainer = train.make_trainer(config, loop.make_mesh(1))
    images, _ = data.load_training_digits(str(mnist_dir), config.data.max_train_images)
    assert len(trainer.train_data["images"]) == len(images) - 40  # held out: never trained on
    np.testing.assert_array_equal(trainer.train_data["images"], images[:-40])
    loop.train_and_evaluate(config, tmp_path, progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows if "val/psnr" in r] == [2, 4, 6]
    _, params, _ = checkpoint.load_params(tmp_path)
    held_out = images[-40:]
    masks = masking.eval_masks(40, train.VALIDATION_MASK_SEED)
    restored = models.restore(params, held_out, masks, config.model)
    want = metrics.mean_psnr(np.asarray(restored), held_out)
    np.testing.assert_allclose(rows[-1]["val/psnr"], want, rtol=1e-4)
    # validation only on log rows, and never on every training digit
    config.validate_every = 3
    with pytest.raises(ConfigError, match="validate_every must be a multiple of log_every"):
        loop.train_and_evaluate(config, tmp_path / "bad", progress=False)
    config.validate_every, config.data.validation_images = 2, len(images)
    with pytest.raises(ConfigError, match="leaves no training digits"):
        train.make_trainer(config, loop.make_mesh(1))


RESTORE = [sys.executable, "-m", "experiments.restore"]


def test_restore_experiment_writes_table_json_and_figure(trained, mnist_dir, tmp_path):
    out = tmp_path / "out"
    cmd = [*RESTORE, f"--classifier={trained['digit_classifier']}",
           f"--workdir={trained['hybrid']}", f"--workdir={trained['cnn_autoencoder']}",
           f"--mnist_dir={mnist_dir}", "--num_digits=24", "--batch_size=12", f"--out={out}",
           "--noprogress"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "restore.json").read_text())
    assert (out / "restore.png").stat().st_size > 1000
    assert (out / "noise_valleys.png").is_file()
    assert result["protocol"]["test_digits"] == 24
    assert result["protocol"]["hidden_pixels_per_digit"] == 549
    hybrid, ae = result["models"]
    assert hybrid["model"] == "hybrid" and ae["model"] == "autoencoder"
    assert "damaged" in hybrid and "damaged" not in ae
    assert hybrid["noise_valleys"]["num_lattices"] == 100
    assert 0.9 < hybrid["flops"]["analytic_over_xla"] < 1.1
    assert result["baselines"]["masked input"]["psnr"] < result["baselines"]["mean fill"]["psnr"]
    assert "PSNR hybrid within 1.5 dB of autoencoder or better" in result["targets"]
    table = (out / "restore.md").read_text()
    assert "| hybrid |" in table and "mean fill (baseline)" in table and "26.7" in table
    events = tensorboard.read(tensorboard.logdir(trained["hybrid"]))
    scalars = {(tag, step): value for tag, step, value in events}
    step = hybrid["checkpoint_step"]
    assert scalars[("eval/restore/psnr", step)] == pytest.approx(hybrid["psnr"])
    assert ("eval/restore/damaged_psnr", step) in scalars
    # a later evaluation of one workdir joins the other's row and figure rows with --earlier
    again = [c for c in cmd if c != f"--workdir={trained['hybrid']}" and c != f"--out={out}"]
    again += [f"--out={out}2", f"--earlier={out / 'restore.json'}"]
    proc = subprocess.run(again, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["model"] for r in json.loads((tmp_path / "out2" / "restore.json").read_text())[
        "models"]] == ["hybrid", "autoencoder"]  # fmt: skip
    with np.load(out / "restore_panels.npz") as first, np.load(f"{out}2/restore_panels.npz") as b:
        assert {"panel/hybrid", "panel/hybrid damaged", "panel/autoencoder"} <= set(b.files)
        np.testing.assert_array_equal(first["panel/hybrid"], b["panel/hybrid"])


def test_restore_refuses_a_classifier_as_restorer(trained, mnist_dir):
    cmd = [*RESTORE, f"--classifier={trained['digit_classifier']}",
           f"--workdir={trained['digit_classifier']}", f"--mnist_dir={mnist_dir}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error:") and "no restorer" in proc.stderr
