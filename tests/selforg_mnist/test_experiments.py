"""End to end: import the published weights, evaluate and render workdirs, on tiny settings."""

import json
import subprocess
import sys

import imageio.v2 as imageio
import jax
import numpy as np
import pytest

from nca import checkpoint
from nca.selforg_mnist import evaluate, model, reference
from tests.conftest import SHARED_MODEL
from tests.test_cli import run

pytestmark = pytest.mark.slow


def module(name, *args):
    return [sys.executable, "-m", f"experiments.{name}", *args]


@pytest.fixture(scope="module")
def smoke_workdir(tmp_path_factory, mnist_dir):
    workdir = tmp_path_factory.mktemp("smoke")
    out = run(
        module(
            "train",
            "--config=l2_noise:smoke",
            f"--workdir={workdir}",
            f"--config.data.mnist_dir={mnist_dir}",
            "--config.num_train_steps=4",
        )
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


def test_evaluate_writes_curves_table_and_plot(smoke_workdir, mnist_dir, tmp_path):
    other = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(smoke_workdir), str(other)], check=True)
    out = run(
        module(
            "evaluate",
            f"--workdir={smoke_workdir}",
            f"--workdir={other}",
            f"--mnist_dir={mnist_dir}",
            "--num_digits=20",
            "--steps=6",
            "--batch_size=8",
            f"--out={tmp_path / 'cmp'}",
            "--variant=persist",
            "--variant=restart",  # both in one pass
        )
    )
    assert out.returncode == 0, out.stderr[-3000:]
    restart = json.loads((other / "eval_restart.json").read_text())
    assert restart["variant"] == "restart"
    assert (tmp_path / "cmp" / "comparison_restart.md").is_file()
    result = json.loads((smoke_workdir / "eval_persist.json").read_text())
    assert result["curves"]["accuracy"][:6] == restart["curves"]["accuracy"][:6]  # shared half
    assert result["num_digits"] == 20 and result["checkpoint_step"] == 4
    for name in evaluate.CURVES:
        assert len(result["curves"][name]) == 12
    assert 0 <= result["summary"]["agreement_final"] <= 100
    table = (tmp_path / "cmp" / "comparison_persist.md").read_text()
    assert table.count("l2_noise:smoke @ 4") == 2 and "top agreement" in table
    assert f"{other.name}: l2_noise:smoke @ 4" in table
    assert (tmp_path / "cmp" / "comparison_persist.png").stat().st_size > 10_000
    assert (other / "eval_persist.png").is_file()


def test_study_tables_seeds_with_mean_and_std(smoke_workdir, mnist_dir, tmp_path):
    out = run(module("evaluate", f"--workdir={smoke_workdir}", f"--mnist_dir={mnist_dir}",
                     "--num_digits=20", "--steps=6", "--batch_size=10"))  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((smoke_workdir / "eval_restart.json").read_text())
    assert (result["config"], result["seed"]) == ("l2_noise:smoke", 0)  # the run's identity
    paths = []
    for seed, shift in ((0, 0.0), (1, 2.0), (2, 4.0)):  # three "seeds" of l2_noise
        r = json.loads(json.dumps(result))
        r["config"], r["seed"] = "l2_noise", seed
        r["summary"]["accuracy_final"] += shift
        paths.append(tmp_path / f"s{seed}.json")
        paths[-1].write_text(json.dumps(r))
    paths.append(smoke_workdir / "eval_restart.json")  # another config: its own row
    persist = {**result, "variant": "persist"}  # its table: what follows step 6
    paths.append(tmp_path / "persist.json")
    paths[-1].write_text(json.dumps(persist))
    out = run(module("study", *[f"--result={p}" for p in paths], f"--out={tmp_path / 'study'}"))
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads((tmp_path / "study" / "study.json").read_text())["restart"]
    stats = data["l2_noise"]
    assert stats["seeds"] == [0, 1, 2]
    want = result["summary"]["accuracy_final"] + 2.0
    np.testing.assert_allclose(stats["mean"]["accuracy_final"], want, rtol=1e-9)
    np.testing.assert_allclose(stats["std"]["accuracy_final"], 2.0, rtol=1e-9)  # ddof 1
    assert stats["std"]["top_agreement"] == 0.0
    assert data["l2_noise:smoke"]["seeds"] == [0]
    table = (tmp_path / "study" / "study.md").read_text()
    assert "| article, l2_noise |  | 95.4 | 95.3 | 88.2 | 88.1 |" in table
    assert "± 2.0" in table and "l2_noise seed 2" in table and "l2_noise:smoke seed 0" in table
    mutated = json.loads((tmp_path / "study" / "study.json").read_text())["persist"]
    want = 100 * result["curves"]["accuracy"][6]  # step 7, the first after the mutation
    assert mutated["l2_noise:smoke"]["mean"]["accuracy_mutated"] == pytest.approx(want)
    persist_table = table.split("### persist")[1].split("###")[0]
    assert "accuracy at 7, just after the mutation" in persist_table
    assert "top accuracy" not in persist_table  # the restart table's first half, not repeated
    assert (tmp_path / "study" / "study.png").stat().st_size > 10_000
    # a result that does not name its run, and the same run twice, are refused
    bare = {k: v for k, v in result.items() if k not in ("config", "seed")}
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    for bad, message in (([tmp_path / "bare.json"], "lacks config, seed"),
                         ([paths[0], paths[0]], "same config, seed and variant")):  # fmt: skip
        out = run(module("study", *[f"--result={p}" for p in bad], f"--out={tmp_path / 'x'}"))
        assert out.returncode != 0 and message in out.stderr.strip().splitlines()[-1], out.stderr


def test_evaluate_an_older_checkpoint_keeps_the_newest_ones_files(smoke_workdir, mnist_dir,
                                                                   tmp_path):  # fmt: skip
    workdir = tmp_path / "run"
    subprocess.run(["cp", "-r", str(smoke_workdir), str(workdir)], check=True)
    (workdir / "eval_restart.json").write_text("newest")
    flags = [f"--mnist_dir={mnist_dir}", "--num_digits=8", "--steps=3", "--batch_size=8"]
    out = run(module("evaluate", f"--workdir={workdir}", "--checkpoint_step=4", *flags))
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((workdir / "eval_restart_step4.json").read_text())["checkpoint_step"] == 4
    assert (workdir / "eval_restart_step4.md").is_file()
    assert (workdir / "eval_restart.json").read_text() == "newest"
    for bad, message in ((f"--workdir={workdir}", "no checkpoint for step 3"),
                         ("--model=distill_l2_noise", "applies to --workdir only")):  # fmt: skip
        out = run(module("evaluate", bad, "--checkpoint_step=3", *flags))
        assert out.returncode != 0 and "Traceback" not in out.stderr
        assert message in out.stderr.strip().splitlines()[-1], out.stderr


def test_evaluate_rejects_a_folder_that_is_not_a_workdir(tmp_path, mnist_dir):
    out = run(module("evaluate", f"--workdir={tmp_path}", f"--mnist_dir={mnist_dir}"))
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "is not a training workdir" in out.stderr.strip().splitlines()[-1]


def test_render_writes_gif_and_mp4(smoke_workdir, mnist_dir, tmp_path):
    out = run(
        module(
            "render",
            f"--workdir={smoke_workdir}",
            f"--mnist_dir={mnist_dir}",
            "--num_digits=4",
            "--columns=2",
            "--steps=5",
            "--scale=2",
            f"--out={tmp_path}",
        )
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("digits", "channels"):
        assert (tmp_path / f"{name}.mp4").stat().st_size > 1000
    frames = imageio.mimread(tmp_path / "digits.gif")
    assert 1 <= len(frames) <= 10 and frames[0].shape[0] % 16 == 0
    first = np.asarray(frames[0])[..., :3].reshape(-1, 3)
    assert (first == 255).all(axis=1).any()  # dead cells are white


@pytest.mark.skipif(not SHARED_MODEL.is_file(), reason="needs ../shared/reference")
def test_import_distill_makes_a_loadable_workdir(tmp_path):
    out = run(module("import_distill", f"--out={tmp_path / 'distill'}"))
    assert out.returncode == 0, out.stderr[-3000:]
    config, params, _ = checkpoint.load_params(tmp_path / "distill")
    assert config.model.noise_std == 0.02
    want = reference.load_distill_params(SHARED_MODEL)
    assert model.num_params(params) == 22_499
    np.testing.assert_array_equal(params["perceive"]["kernel"], want["perceive"]["kernel"])
    again = run(module("import_distill", f"--out={tmp_path / 'distill'}"))
    assert again.returncode != 0 and "already holds checkpoints" in again.stderr


def test_sweep_trains_evaluates_and_skips_finished_runs(tmp_path, mnist_dir):
    args = module(
        "sweep",
        "--configs=l2:smoke,l2_noise:no_pool,smoke",
        "--seeds=0,1",
        f"--root={tmp_path}",
        f"--mnist_dir={mnist_dir}",
        "--num_digits=16",
        "--steps=4",
        "--set=num_train_steps=2",
        "--set=checkpoint_every=2",
    )
    out = run(args)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "sweep.json").read_text())
    assert sorted(result) == ["l2:smoke", "l2_noise:no_pool,smoke"]
    assert all(len(r["runs"]) == 2 for r in result.values())
    assert checkpoint.manager(tmp_path / "l2_noise_no_pool-smoke" / "seed1").latest_step() == 2
    again = run(args)
    assert again.returncode == 0 and again.stdout.count("finished, skipping training") == 4
    bad = run(module("sweep", "--configs=l2:smoke", f"--root={tmp_path}", "--set=nope=1"))
    assert bad.returncode != 0 and "cannot apply --set=nope=1" in bad.stderr


def test_evaluate_reports_an_unreadable_checkpoint(smoke_workdir, mnist_dir, tmp_path):
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(smoke_workdir), str(broken)], check=True)
    for path in (broken / "checkpoints" / "4" / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    out = run(
        module(
            "evaluate",
            f"--workdir={broken}",
            f"--mnist_dir={mnist_dir}",
            "--num_digits=8",
            "--steps=2",
        )
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "cannot read checkpoint 4" in out.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--num_digits=0",), "--num_digits=0: 0 is not an integer in the range [1, 10000]"),
        (("--num_digits=5000",), "do not fit the test set"),
        (("--scale=2", "extra_argument"), "unexpected arguments"),
    ],
)
def test_render_bad_input(smoke_workdir, mnist_dir, tmp_path, args, message):
    out = run(
        module(
            "render",
            f"--workdir={smoke_workdir}",
            f"--mnist_dir={mnist_dir}",
            f"--out={tmp_path / 'out'}",
            *args,
        )
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert message in out.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_evaluate_and_render_a_shipped_model(mnist_dir, tmp_path):
    out = run(
        module(
            "evaluate",
            "--model=distill_l2_noise",
            f"--mnist_dir={mnist_dir}",
            "--num_digits=8",
            "--steps=3",
            f"--out={tmp_path}",
        )
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "distill_l2_noise" / "eval_restart.json").read_text())
    assert result["pretrained"] == "distill_l2_noise" and len(result["curves"]["accuracy"]) == 6
    out = run(
        module(
            "render",
            "--model=distill_l2_noise",
            f"--mnist_dir={mnist_dir}",
            "--num_digits=2",
            "--steps=2",
            f"--out={tmp_path / 'video'}",
        )
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "video" / "digits.gif").is_file()


@pytest.fixture(scope="module")
def evaluated_workdir(smoke_workdir, mnist_dir, tmp_path_factory):
    """A copy of the smoke workdir with an `eval_restart.json` (8 digits, 3 steps)."""
    workdir = tmp_path_factory.mktemp("evaluated") / "run"
    subprocess.run(["cp", "-r", str(smoke_workdir), str(workdir)], check=True)
    out = run(module("evaluate", f"--workdir={workdir}", f"--mnist_dir={mnist_dir}",
                     "--num_digits=8", "--steps=3"))  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


def test_evaluate_compares_earlier_results_without_rerunning(evaluated_workdir, tmp_path):
    result = json.loads((evaluated_workdir / "eval_restart.json").read_text())
    result["model"] = "another run"
    result["summary"].update(top_agreement=50.0, top_agreement_step=1, agreement_final=50.0)
    (tmp_path / "other.json").write_text(json.dumps(result))
    paths = [f"--result={evaluated_workdir / 'eval_restart.json'}",
             f"--result={tmp_path / 'other.json'}"]  # fmt: skip
    out = run(module("evaluate", *paths, "--steps=3", f"--out={tmp_path / 'cmp'}"))
    assert out.returncode == 0, out.stderr[-3000:]
    table = (tmp_path / "cmp" / "comparison_restart.md").read_text()
    assert "run: l2_noise:smoke @ 4" in table and "| another run |" in table
    assert "| 50.0 at 1 | 50.0 |" in table  # its agreement columns, from the file
    out = run(module("evaluate", *paths, "--steps=5"))  # other flags than the results had
    assert out.returncode != 0 and "evaluated with --variant=restart --steps=3" in out.stderr


def test_export_ships_a_workdir_by_name(evaluated_workdir, tmp_path, monkeypatch):
    from nca.selforg_mnist import pretrained

    workdir = evaluated_workdir
    export = module("export", f"--workdir={workdir}", "--name=mine", f"--folder={tmp_path / 'm'}",
                    "--note=A test run.")  # fmt: skip
    out = run(export)
    assert out.returncode == 0, out.stderr[-3000:]
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path / "m")
    config, params = pretrained.load("mine")
    _, want, step = checkpoint.load_params(workdir)
    jax.tree.map(np.testing.assert_array_equal, params, want)
    assert config.name == "l2_noise:smoke"
    meta = json.loads((tmp_path / "m" / "mine.json").read_text())
    assert f"config l2_noise:smoke, {step} of 4 iterations" in meta["provenance"]
    assert "Evaluated on 8 test digits (restart protocol, 3 steps)" in meta["provenance"]
    assert meta["provenance"].endswith("A test run.")
    assert "Started from" not in meta["provenance"]
    assert "Devices: from 0 on 1 x cpu (jax " in meta["provenance"]
    from experiments import export as export_script

    config.init_from = "l2_noise"  # a fine-tuned run says where it started
    assert "Started from the params of l2_noise." in export_script.provenance(workdir, config, step)
    before = (tmp_path / "m" / "mine.npz").read_bytes()
    out = run(export)  # a second export of the same name must not replace the first
    assert out.returncode != 0 and "pass --overwrite" in out.stderr.strip().splitlines()[-1]
    assert (tmp_path / "m" / "mine.npz").read_bytes() == before


def test_training_length_evaluates_each_checkpoint_once(smoke_workdir, mnist_dir, tmp_path):
    workdir = tmp_path / "run"
    subprocess.run(["cp", "-r", str(smoke_workdir), str(workdir)], check=True)
    out = run(module("train", "--config=l2_noise:smoke", f"--workdir={workdir}",
                     f"--config.data.mnist_dir={mnist_dir}", "--config.num_train_steps=6",
                     "--config.checkpoint_every=2"))  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    steps = checkpoint.all_steps(workdir)
    assert len(steps) >= 2
    args = [f"--workdir={workdir}", f"--mnist_dir={mnist_dir}", "--num_digits=8",
            "--ca_steps=5", f"--out={tmp_path / 'out'}"]  # fmt: skip
    out = run(module("training_length", *args, f"--steps={steps[0]}"))
    assert out.returncode == 0, out.stderr[-3000:]
    out = run(module("training_length", *args, f"--steps={steps[0]},{steps[-1]}"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"at {steps[-1]}:" in out.stdout and f"at {steps[0]}:" not in out.stdout  # kept
    result = json.loads((tmp_path / "out" / "training_length.json").read_text())
    assert sorted(map(int, result["rows"])) == [steps[0], steps[-1]]
    assert 0 <= result["rows"][str(steps[-1])]["accuracy_final"] <= 100
    assert (tmp_path / "out" / "training_length.png").stat().st_size > 10_000

    out = run(module("training_length", *args, "--steps=999"))
    assert out.returncode == 1 and "error: no checkpoint for step 999" in out.stderr


def test_attack_writes_the_table_and_curves_and_rejects_bad_fractions(
    smoke_workdir, mnist_dir, tmp_path
):
    args = [f"--workdir={smoke_workdir}", f"--mnist_dir={mnist_dir}", "--num_digits=16",
            "--steps=4", "--after=3", "--batch_size=8", f"--out={tmp_path}",
            "--video_digits=4"]  # fmt: skip
    out = run(module("attack", *args, "--fractions=0,0.5"))
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "attack.json").read_text())
    assert sorted(result["curves"]) == ["0.0", "0.5"]
    assert len(result["curves"]["0.5"]["target_votes"]) == 7
    table = (tmp_path / "attack.md").read_text()
    assert "| 50 % |" in table and "target votes at 4" in table and "accuracy at 7" in table
    assert (tmp_path / "attack.png").stat().st_size > 10_000
    frames = imageio.mimread(tmp_path / "attack_video.gif")
    assert len(frames) == 4 and frames[0].shape[0] % 16 == 0  # 7 steps, every 2nd

    out = run(module("attack", *args, "--fractions=0.1,2"))
    assert out.returncode == 1 and "error: --fractions must lie in [0, 1]" in out.stderr


def test_attack_by_an_older_checkpoint_of_an_adversary_workdir(smoke_workdir, mnist_dir, tmp_path):
    args = ["--model=distill_l2_noise", f"--mnist_dir={mnist_dir}", "--num_digits=8",
            "--steps=3", "--after=0", "--batch_size=8", "--fractions=0.5",
            "--video_digits=0", f"--out={tmp_path}"]  # fmt: skip
    out = run(module("attack", *args, f"--adversary={smoke_workdir}", "--adversary_step=4"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{smoke_workdir.name}: l2_noise:smoke @ 4" in (tmp_path / "attack.md").read_text()
    bad_runs = ((smoke_workdir, 3, "no checkpoint for step 3"),
                ("distill_adversary_eight", 4, "needs a workdir"))  # fmt: skip
    for adversary, step, message in bad_runs:
        out = run(module("attack", *args, f"--adversary={adversary}", f"--adversary_step={step}"))
        assert out.returncode != 0 and "Traceback" not in out.stderr
        assert message in out.stderr.strip().splitlines()[-1], out.stderr


def test_attack_by_a_random_rule(mnist_dir, tmp_path):
    args = ["--model=distill_l2_noise", f"--mnist_dir={mnist_dir}", "--num_digits=8",
            "--steps=3", "--after=0", "--batch_size=8", "--fractions=0.5",
            "--video_digits=0", f"--out={tmp_path}"]  # fmt: skip
    out = run(module("attack", *args, "--adversary=random:0.1"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "a random rule (output scale 0.1, seed 0)" in (tmp_path / "attack.md").read_text()
    for bad in ("random:0", "random:x", "random:"):
        out = run(module("attack", *args, f"--adversary={bad}"))
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert "error: --adversary=random:SCALE takes a positive SCALE" in out.stderr
