"""MetaNCA end to end: the smoke config (an MLP and a CNN) meta-trains, checkpoints, resumes,
and every experiment runs in-process on the reloaded rule and writes its JSON, Markdown and
figure (accuracy and stability share their growing code with grid and zero_out), and the
command runs one."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from nca import report
from nca.config import ConfigError
from nca.metanca import evaluate, experiments
from tests.conftest import REPO_ROOT


def run(*args, timeout=600):
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_stability_metric_by_hand():
    loss = np.array([3.0, 2.0, 1.05, 1.0, 1.2, 1.08, 1.09, 1.1, 2.0])
    got = evaluate.stability(loss)  # within 1.1: steps 2, 3, 5, 6, 7
    assert got == {"min_loss": 1.0, "steps_to_train": 2, "longest_within_10pct": 3}


def test_loss_flat_compares_the_last_tenth_with_the_tenth_before():
    steps = np.arange(1, 201)  # last 10 %: steps 181-200; the 10 % before: 161-180
    falling = np.where(steps > 180, 0.95, 1.0)  # 5 % lower in the last tenth
    got = experiments.loss_flat(steps, falling)
    assert not got["flat"] and got["drop"] == pytest.approx(0.05)
    assert got["before"] == pytest.approx(1.0) and got["late"] == pytest.approx(0.95)
    assert experiments.loss_flat(steps, np.where(steps > 180, 0.99, 1.0))["flat"]
    assert experiments.loss_flat(steps, np.where(steps > 180, 1.2, 1.0))["flat"]  # rising
    assert got["points"] == 20
    short = experiments.loss_flat(steps[:50], falling[:50])  # 5 points a window: too few
    assert short["flat"] is None and short["drop"] is None and short["points"] == 5


@pytest.mark.slow
def test_smoke_training_resumes_and_experiments_run(tmp_path, mnist_dir):
    workdir = tmp_path / "mnist"
    train = [
        "-m",
        "experiments.train",
        "--config=metanca_mnist_cnn:smoke",  # an MLP and a CNN trained, a CNN held out
        f"--workdir={workdir}",
        f"--config.data.mnist_dir={mnist_dir}",
    ]
    run(*train, "--config.num_train_steps=3")
    run(*train)  # resumes from checkpoint 3 to 6
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3, 4, 6]
    assert all("train/loss_784-8-10" in r and "train/loss_784-c2-c3-10" in r for r in rows)

    out = tmp_path / "out"
    m = experiments.load(workdir)
    d = experiments.task_arrays(m["config"])
    settings = experiments.Settings(
        nets=2, grid_nets=2, grid_sizes=(10,), damage_at=3, after_steps=3, converged_steps=30
    )
    for name in ("grid", "zero_out", "baseline", "training"):
        report.write(out, experiments.RUNS[name](m, d, settings), log=lambda *_: None)
    training = json.loads((out / "training.json").read_text())
    assert training["steps"] == [2, 3, 4, 6] and training["flat"] is None  # too short to say
    assert "too few logged points to say (0 a window" in (out / "training.md").read_text()
    assert set(training["loss"]) == {"all", "784-8-10", "784-c2-c3-10"}
    ref_file = tmp_path / "abstract.json"
    ref_file.write_text(json.dumps({"sizes": [10], "accuracy": [[0.25]], "source": "abstract"}))
    compared = experiments.run_grid(
        m, d, settings, reference=experiments.grid_reference(str(ref_file), (10,))
    ).data
    assert compared["reference"]["mean_difference"] == pytest.approx(compared["mean"] - 0.25)
    with pytest.raises(ConfigError, match="run the grid on the same sizes"):
        experiments.grid_reference(str(ref_file), (10, 20))
    # The command: flags in, the same library functions and report files out.
    run("-m", "experiments.metanca", f"--workdir={workdir}", f"--out={out}", "--nets=2",
        "--experiment=accuracy")  # fmt: skip
    accuracy = json.loads((out / "accuracy.json").read_text())
    assert [a["trained"] for a in accuracy["archs"]] == [True, True, False]
    grid = json.loads((out / "grid.json").read_text())
    assert grid["sizes"] == [10] and 0 <= grid["min"] <= grid["max"] <= 1
    zero = json.loads((out / "zero_out.json").read_text())
    curve = zero["runs"]["trained without damage"]["archs"][0]["curve"]
    assert len(curve) == 3 + 3 + 1
    for name in ("grid", "zero_out", "baseline", "training"):
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.md").exists()
    baseline = json.loads((out / "baseline.json").read_text())
    assert [a["arch"] for a in baseline["archs"]] == [[784, 8, 10], [784, "c2", "c3", 10],
                                                      [784, "c3", 10]]  # fmt: skip
    for a in baseline["archs"]:  # Adam at the rule's time: a step count within the curve
        assert 0 <= a["adam_steps_in_rule_time"] <= 30 and a["adam_seconds_per_step"] > 0
        # Adam "to convergence", here as long as the curve: the curve's last point, same inits.
        assert a["backprop_converged"] == pytest.approx(a["backprop"][30], abs=1e-6)
    assert "| Adam @ 30 |\n|" + "---|" * 7 in (out / "baseline.md").read_text()
