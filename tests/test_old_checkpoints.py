"""Workdirs written before the core / system split (tests/fixtures/checkpoints, made by
tests/fixtures/make_checkpoints.py at commit 9c07ebc) still load, and resume to the very numbers
the old code computed."""

import json
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from nca import checkpoint, loop
from tests.conftest import REPO_ROOT

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "checkpoints"


@pytest.mark.parametrize("kind", ["selforg_mnist", "metanca", "hybrid"])
def test_an_old_workdir_loads_and_resumes_to_the_old_codes_next_iteration(
    kind, tmp_path, mnist_dir
):
    workdir = tmp_path / kind
    shutil.copytree(FIXTURES / kind, workdir)
    config, params, step = checkpoint.load_params(workdir, log=pytest.fail)
    assert step == 2 and config.model.kind == kind and jax.tree.leaves(params)

    saved = json.loads((workdir / "config.json").read_text())
    config = ml_collections.ConfigDict(saved)
    if "mnist_dir" in config.data:  # resumable: the synthetic digits, regenerated identically
        config.data.mnist_dir = str(mnist_dir)
    loop.train_and_evaluate(config, workdir, progress=False)

    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    want = json.loads((workdir / "expected_metrics.jsonl").read_text())
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key, value in want.items():
        if key != "train/iterations_per_sec":
            np.testing.assert_allclose(rows[-1][key], value, rtol=1e-5, err_msg=key)
