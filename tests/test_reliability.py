"""Faults injected for real: signals, SIGKILL at random moments (also during saves), corrupt and
truncated checkpoints, a second run on the same workdir, config changes on resume, disk full.

Every test ends by checking that no work was lost: the params equal an uninterrupted run's, or
the last good checkpoint is intact."""

import errno
import json
import os
import random
import signal
import socket
import subprocess
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from nca import checkpoint, loop, workdir
from tests.conftest import REPO_ROOT
from tests.selforg_mnist.test_train import tiny_config
from tests.test_cli import interrupt_run, run, train_cmd, wait_for_checkpoint

pytestmark = pytest.mark.slow
EVERY_2 = ("--config.checkpoint_every=2",)
EXTRA = ("--config.num_train_steps=24", *EVERY_2)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mnist_dir):
    """Params of an uninterrupted 24-iteration smoke run through the CLI."""
    path = tmp_path_factory.mktemp("straight")
    out = run(train_cmd(path, mnist_dir, *EXTRA))
    assert out.returncode == 0, out.stderr[-3000:]
    return checkpoint.load_params(path)[1]


def assert_same_params(path, want):
    _, got, step = checkpoint.load_params(path)
    assert step == 24
    jax.tree.map(np.testing.assert_array_equal, got, want)


def assert_metrics_once_per_step(path):
    steps = [json.loads(line)["step"] for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(2, 25, 2)), steps  # log_every=2: every step exactly once


def test_sigterm_saves_and_the_resumed_run_ends_with_uninterrupted_params(
    tmp_path, mnist_dir, uninterrupted
):
    returncode, output = interrupt_run(
        train_cmd(tmp_path, mnist_dir, *EXTRA), tmp_path, signal.SIGTERM
    )
    assert returncode == 0 and "SIGTERM received: saved checkpoint" in output
    assert not (tmp_path / workdir.LOCK_FILE).exists()
    out = run(train_cmd(tmp_path, mnist_dir, *EXTRA))
    assert out.returncode == 0, out.stderr[-3000:]
    assert_same_params(tmp_path, uninterrupted)
    assert_metrics_once_per_step(tmp_path)


def test_ten_sigkills_at_random_moments_lose_nothing(tmp_path, mnist_dir):
    # The killed runs aim far beyond where they get (however fast the machine), so exactly ten
    # kills happen; then one run finishes a little past the last checkpoint (num_train_steps may
    # change on resume) and an uninterrupted run to the same step is the reference.
    killed = tmp_path / "killed"
    rng = random.Random(0)
    for _ in range(10):
        latest = checkpoint.manager(killed).latest_step() if killed.is_dir() else 0
        proc = subprocess.Popen(
            train_cmd(killed, mnist_dir, "--config.num_train_steps=100000", *EVERY_2),
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_checkpoint(killed, (latest or 0) + 2, proc)  # training is under way
        time.sleep(rng.uniform(0.0, 1.0))  # then a random moment: mid-step or mid-save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        checkpoint.load_params(killed)  # the newest complete checkpoint always loads
    end = f"--config.num_train_steps={checkpoint.manager(killed).latest_step() + 10}"
    out = run(train_cmd(killed, mnist_dir, end, *EVERY_2))
    assert out.returncode == 0, out.stderr[-3000:]
    straight = run(train_cmd(tmp_path / "straight", mnist_dir, end, *EVERY_2))
    assert straight.returncode == 0, straight.stderr[-3000:]
    _, want, want_step = checkpoint.load_params(tmp_path / "straight")
    _, got, step = checkpoint.load_params(killed)
    print(f"10 SIGKILLs, 10 resumed runs, final step {step}")
    assert step == want_step
    jax.tree.map(np.testing.assert_array_equal, got, want)
    steps = [
        json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(2, step + 1, 2))  # every logged step exactly once
    assert not list((killed / "checkpoints").glob("*tmp*"))


def flip_bytes(step_dir):
    for path in step_dir.rglob("*"):
        if path.is_file() and path.parent.name == "d" and path.stat().st_size > 1000:
            data = bytearray(path.read_bytes())
            for i in range(50, len(data), 397):
                data[i] ^= 0xFF
            path.write_bytes(bytes(data))


def remove_files(step_dir):
    for path in (step_dir / "state").rglob("*"):
        if path.is_file():
            path.unlink()


@pytest.mark.parametrize("damage", [flip_bytes, remove_files])
def test_unreadable_latest_checkpoint_falls_back_without_deleting(
    tmp_path, mnist_dir, uninterrupted, damage
):
    out = run(
        train_cmd(tmp_path, mnist_dir, "--config.num_train_steps=8", "--config.checkpoint_every=2")
    )
    assert out.returncode == 0
    damage(tmp_path / "checkpoints" / "8")
    out = run(train_cmd(tmp_path, mnist_dir, *EXTRA))
    assert out.returncode == 0, out.stderr[-3000:]
    message = out.stdout + out.stderr
    assert "checkpoint 8 in" in message and "is unreadable" in message
    assert "Resuming from checkpoint 6" in message
    assert (tmp_path / checkpoint.UNREADABLE_SUBDIR / "8").is_dir()  # kept, not deleted
    assert_same_params(tmp_path, uninterrupted)


def test_loader_says_which_checkpoint_is_unreadable(tmp_path, mnist_dir):
    config = tiny_config(mnist_dir, num_train_steps=4, checkpoint_every=2)
    loop.train_and_evaluate(config, tmp_path, progress=False)
    remove_files(tmp_path / "checkpoints" / "4")
    messages = []
    _, _, step = checkpoint.load_params(tmp_path, log=messages.append)
    assert step == 2 and "cannot read checkpoint 4" in messages[0]
    with pytest.raises(checkpoint.CheckpointError, match="cannot read checkpoint 4"):
        checkpoint.load_params(tmp_path, step=4)


def test_a_second_run_on_the_same_workdir_is_refused(tmp_path, mnist_dir):
    with workdir.lock(tmp_path):
        out = run(train_cmd(tmp_path, mnist_dir))
    assert out.returncode != 0 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert f"in use by pid {os.getpid()} on host {socket.gethostname()}" in last
    assert not (tmp_path / "checkpoints").exists()


def test_a_stale_lock_is_taken_over(tmp_path, mnist_dir):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / workdir.LOCK_FILE).write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0})
    )
    out = run(train_cmd(tmp_path, mnist_dir, "--config.num_train_steps=2"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "stale lock" in out.stdout + out.stderr
    assert not (tmp_path / workdir.LOCK_FILE).exists()


def test_harmless_config_changes_are_allowed_and_recorded(tmp_path, mnist_dir):
    config = tiny_config(mnist_dir, num_train_steps=4, checkpoint_every=2)
    loop.train_and_evaluate(config, tmp_path, progress=False)
    config.log_every = 1
    config.num_train_steps = 6
    loop.train_and_evaluate(config, tmp_path, progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "config_changes.jsonl")]
    assert rows[0]["step"] == 4
    assert rows[0]["changes"] == {"log_every": [2, 1], "num_train_steps": [4, 6]}


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, mnist_dir, monkeypatch):
    real_save = ocp.CheckpointManager.save
    calls = []

    def save_until_disk_is_full(self, step, *args, **kwargs):
        calls.append(step)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save_until_disk_is_full)
    config = tiny_config(mnist_dir, num_train_steps=8, checkpoint_every=4)
    with pytest.raises(
        loop.TrainingError,
        match=r"could not save checkpoint 8 .*No space left "
        r"on device.*checkpoint 4 is intact",
    ):
        loop.train_and_evaluate(config, tmp_path, progress=False)
    _, params, step = checkpoint.load_params(tmp_path)
    assert step == 4 and all(np.isfinite(p).all() for p in jax.tree.leaves(params))
    assert not (tmp_path / workdir.LOCK_FILE).exists()


def test_no_readable_checkpoint_refuses_to_start_over_and_moves_nothing(tmp_path, mnist_dir):
    config = tiny_config(mnist_dir, num_train_steps=2, checkpoint_every=2)
    loop.train_and_evaluate(config, tmp_path, progress=False)
    remove_files(tmp_path / "checkpoints" / "2")
    config.num_train_steps = 4
    with pytest.raises(
        checkpoint.CheckpointError, match="no readable checkpoint.*Nothing was moved"
    ):
        loop.train_and_evaluate(config, tmp_path, progress=False)
    assert (tmp_path / "checkpoints" / "2").is_dir()
    assert not (tmp_path / checkpoint.UNREADABLE_SUBDIR).exists()


def test_trim_metrics_drops_later_and_torn_rows(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 2}\n{"step": 4}\n{"step": 6}\n{"ste')
    workdir.trim_metrics(tmp_path, 4)
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 2}\n{"step": 4}\n'


def test_two_processes_train_and_resume_exactly_like_one(tmp_path, mnist_dir):
    """Multi-host training (`--distributed`), as on a TPU pod, with two CPU processes: the same
    losses and params as one process with two devices (each device draws its own slice's
    randomness, `fast.per_device`), one metrics file, and a two-process resume."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]

    def two_processes(*extra):
        procs = [
            subprocess.Popen(
                train_cmd(
                    tmp_path / "two",
                    mnist_dir,
                    "--distributed",
                    *extra,
                    f"--coordinator_address=localhost:{port}",
                    "--num_processes=2",
                    f"--process_id={i}",
                ),  # fmt: skip
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i in range(2)
        ]
        outputs = [p.communicate(timeout=300)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
        return outputs

    first = two_processes("--config.num_train_steps=8")
    assert "process 1 of 2" in first[1]
    two_processes()  # resumes at 8, ends at 12
    out = run(train_cmd(tmp_path / "one", mnist_dir, "--cpu_devices=2"))
    assert out.returncode == 0, out.stderr[-3000:]
    losses = {
        n: [json.loads(line)["train/loss"] for line in open(tmp_path / n / "metrics.jsonl")]
        for n in ("one", "two")
    }
    assert len(losses["two"]) == 6  # process 0 alone writes, every logged step once
    np.testing.assert_allclose(losses["two"], losses["one"], rtol=1e-5)
    _, want, _ = checkpoint.load_params(tmp_path / "one")
    _, got, step = checkpoint.load_params(tmp_path / "two")  # saved on 2 devices, loads on 1
    assert step == 12
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), got, want)
