"""End to end: `python -m experiments.train` trains, checkpoints, is killed, resumes, and bad input
gets one clear line and a non-zero exit status without touching existing checkpoints."""

import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from nca import checkpoint
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def train_cmd(workdir, mnist_dir, *extra, config="l2_noise:smoke"):
    return [
        sys.executable,
        "-m",
        "experiments.train",
        f"--config={config}",
        f"--workdir={workdir}",
        f"--config.data.mnist_dir={mnist_dir}",
        *extra,
    ]


def run(cmd, **kwargs):
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, **kwargs)


def snapshot(workdir):
    """Every file under workdir with its size and mtime."""
    return {
        str(p.relative_to(workdir)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(workdir.rglob("*"))
        if p.is_file()
    }


def wait_for_checkpoint(workdir, min_step, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
        if steps and max(steps) >= min_step:
            return max(steps)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_dir):
    """A smoke run through the real entry point (12 iterations, checkpoints 4, 8, 12)."""
    workdir = tmp_path_factory.mktemp("smoke")
    out = run(train_cmd(workdir, mnist_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


def test_smoke_run_checkpoints_and_a_second_run_resumes(trained, mnist_dir):
    assert checkpoint.manager(trained).all_steps() == [4, 8, 12]
    assert (trained / "metrics.jsonl").read_text().count("\n") == 6  # log_every=2
    config, params, step = checkpoint.load_params(trained)
    assert step == 12 and config.name == "l2_noise:smoke"
    out = run(train_cmd(trained, mnist_dir, "--config.num_train_steps=16"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Resuming from checkpoint 12" in out.stdout + out.stderr
    assert checkpoint.manager(trained).latest_step() == 16


def test_sigkill_then_resume_gives_the_uninterrupted_params(tmp_path, mnist_dir):
    extra = ("--config.num_train_steps=30", "--config.checkpoint_every=2")
    straight = run(train_cmd(tmp_path / "straight", mnist_dir, *extra))
    assert straight.returncode == 0, straight.stderr[-3000:]

    proc = subprocess.Popen(
        train_cmd(tmp_path / "killed", mnist_dir, *extra),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed_at = wait_for_checkpoint(tmp_path / "killed", 6, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed_at < 30
    resumed = run(train_cmd(tmp_path / "killed", mnist_dir, *extra))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from checkpoint" in resumed.stdout + resumed.stderr
    _, want, _ = checkpoint.load_params(tmp_path / "straight")
    _, got, step = checkpoint.load_params(tmp_path / "killed")
    assert step == 30
    jax.tree.map(np.testing.assert_array_equal, got, want)


def interrupt_run(cmd, workdir, sig) -> tuple[int, str]:
    """Starts `cmd`, sends `sig` once checkpoint 4 exists; its exit status and output."""
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    wait_for_checkpoint(workdir, 4, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout + stderr


def test_sigint_saves_and_exits_cleanly(tmp_path, mnist_dir):
    workdir = tmp_path / "w"
    returncode, output = interrupt_run(
        train_cmd(workdir, mnist_dir, "--config.num_train_steps=100000"), workdir, signal.SIGINT
    )
    assert returncode == 0, output[-3000:]
    assert "SIGINT received: saved checkpoint" in output
    step = checkpoint.manager(workdir).latest_step()
    assert 4 <= step < 100000
    assert f"saved checkpoint {step} " in output


@pytest.mark.parametrize(
    "args, message",
    [
        (("--config=l3",), "unknown config 'l3'"),
        (("--config=l2_noise:smok",), "unknown config option"),
        (("--config.no_such_field=1",), "no field 'no_such_field'"),
        (("--config.batch_size=sixteen",), "bad flag"),
        (("--config.data.mnist_dir=/nonexistent/mnist",), "MNIST train split not found"),
        (("--config.model.impl=fast",), "unknown model.impl"),
    ],
)
def test_bad_input_is_one_clear_line_and_keeps_checkpoints(trained, mnist_dir, args, message):
    before = snapshot(trained)
    cmd = train_cmd(trained, mnist_dir)
    cmd = [c for c in cmd if not (c.startswith("--config=") and args[0].startswith("--config="))]
    out = run(cmd + list(args))
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and message in last, out.stderr
    assert snapshot(trained) == before


def test_unwritable_workdir(tmp_path, mnist_dir):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = run(train_cmd(blocker / "workdir", mnist_dir))
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: cannot write to workdir")


def test_wrong_shaped_data_is_one_clear_line(tmp_path):
    from tests.conftest import synthetic_digits, write_idx

    images, labels = synthetic_digits(8)
    padded = np.zeros((8, 32, 32), np.uint8)
    padded[:, 2:30, 2:30] = images
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", padded)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    out = run(train_cmd(tmp_path / "w", tmp_path))
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "holds images of shape (32, 32), not (28, 28)" in out.stderr.strip().splitlines()[-1]
