"""TensorBoard event files in the workdir: what training writes, and no duplicates on resume."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest

from nca import checkpoint, loop, tensorboard
from tests.selforg_mnist.test_train import tiny_config


def test_trim_drops_later_steps_and_a_torn_record(tmp_path):
    with tensorboard.writer(tmp_path, 0) as tb:
        for step in range(1, 6):
            tb.write(step, {"train/loss": 1.0 / step})
    (path,) = tensorboard.event_files(tensorboard.logdir(tmp_path))
    path.write_bytes(path.read_bytes() + b"\x10\x00\x00")  # a kill mid-write
    tensorboard.trim(tmp_path, 3)
    assert tensorboard.read(path) == [("train/loss", s, pytest.approx(1.0 / s)) for s in (1, 2, 3)]
    tensorboard.trim(tmp_path, 0)  # nothing left: the file goes
    assert tensorboard.event_files(tensorboard.logdir(tmp_path)) == []


def test_write_summary_replaces_an_earlier_summary_of_the_same_step(tmp_path):
    tensorboard.write_summary(tmp_path, 4, {"eval/restart/top_accuracy": 50.0})
    tensorboard.write_summary(tmp_path, 8, {"eval/restart/top_accuracy": 60.0})
    tensorboard.write_summary(tmp_path, 4, {"eval/restart/top_accuracy": 55.0})
    assert sorted(tensorboard.read(tensorboard.logdir(tmp_path))) == [
        ("eval/restart/top_accuracy", 4, 55.0),
        ("eval/restart/top_accuracy", 8, 60.0),
    ]


def test_resume_after_a_lost_checkpoint_logs_each_step_once(mnist_dir, tmp_path):
    config = tiny_config(mnist_dir, num_train_steps=10, checkpoint_every=4, log_every=1)
    loop.train_and_evaluate(config, tmp_path, max_iterations=6, progress=False)
    # As if the run had died after logging step 6 but before checkpointing it.
    shutil.rmtree(checkpoint.checkpoint_dir(tmp_path) / "6")
    loop.train_and_evaluate(config, tmp_path, progress=False)

    logdir = tensorboard.logdir(tmp_path)
    assert len(tensorboard.event_files(logdir)) == 2  # one per run segment
    points = tensorboard.read(logdir)
    tags = {"train/loss", "train/grad_norm", "train/lr", "train/iterations_per_sec"}
    assert tags <= {tag for tag, _, _ in points}
    counts = Counter((tag, step) for tag, step, _ in points)
    assert counts == Counter({(tag, step): 1 for tag in {t for t, _ in counts} for step in
                              range(1, 11)})  # fmt: skip
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows] == list(range(1, 11))
    loss = {step: value for tag, step, value in points if tag == "train/loss"}
    np.testing.assert_allclose([loss[r["step"]] for r in rows], [r["train/loss"] for r in rows],
                               rtol=1e-6)  # fmt: skip

    # TensorBoard's own reader (no TensorFlow needed), where installed, sees the same.
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(str(logdir))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 11))
