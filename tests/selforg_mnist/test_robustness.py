"""Out-of-distribution transforms and the robustness experiment end to end."""

import json

import jax
import numpy as np
import pytest

from nca.selforg_mnist import model, robustness
from tests.selforg_mnist.test_experiments import module
from tests.test_cli import run


def square(size=28, side=8, value=1.0):
    image = np.zeros((1, size, size), np.float32)
    start = (size - side) // 2
    image[0, start : start + side, start : start + side] = value
    return image


def test_place_and_stretch_keep_the_digit_centred():
    placed = robustness.place(square(), 56)
    assert placed.shape == (1, 56, 56) and placed.sum() == 64
    assert np.argwhere(placed[0]).mean(axis=0).tolist() == [27.5, 27.5]
    doubled = robustness.stretch(square(), 2.0, 2.0, 56)
    assert (doubled[0] > 0.5).sum() == pytest.approx(256, rel=0.15)
    wide = robustness.stretch(square(), 2.0, 1.0, 56)
    rows, cols = np.nonzero(wide[0] > 0.5)
    assert np.ptp(cols) > 1.8 * np.ptp(rows)
    assert robustness.place(np.ones((1, 60, 60), np.float32), 56).shape == (1, 56, 56)


def test_stroke_dilates_and_erodes():
    image = square()
    assert (robustness.stroke(image, 1) > 0).sum() == 100  # 8x8 -> 10x10
    assert (robustness.stroke(image, -1) > 0).sum() == 36  # 8x8 -> 6x6
    np.testing.assert_array_equal(robustness.stroke(image, 0), image)


def test_chimera_halves():
    a, b = np.ones((1, 4, 4), np.float32), np.zeros((1, 4, 4), np.float32)
    lr = robustness.chimera(a, b, "left_right")[0]
    assert lr[:, :2].all() and not lr[:, 2:].any()
    tb = robustness.chimera(a, b, "top_bottom")[0]
    assert tb[:2].all() and not tb[2:].any()
    with pytest.raises(ValueError, match="unknown split"):
        robustness.chimera(a, b, "diagonal")


def test_outcome_counts_flips_and_majority():
    params = model.init_params(jax.random.PRNGKey(0))
    params["output"]["bias"] = params["output"]["bias"].at[-10 + 3].set(1.0)  # everyone says 3
    images = np.concatenate([square(), square(side=6)])
    out = jax.device_get(
        robustness.outcome(
            params, images, np.array([3, 5]), jax.random.PRNGKey(1), 6, 1.0, 0.0, "conv"
        )
    )
    np.testing.assert_array_equal(out["majority"], [3, 3])
    np.testing.assert_array_equal(out["alive_cells"], [64, 36])
    np.testing.assert_array_equal(out["correct_cells"], [64, 0])
    assert out["agrees"].all() and (out["late_flips"] == 0).all()  # decided at step 1


@pytest.mark.slow
def test_robustness_command(mnist_dir, tmp_path):
    out = run(
        module(
            "robustness",
            "--model=distill_l2_noise",
            f"--mnist_dir={mnist_dir}",
            "--num_digits=4",
            "--steps=2",
            "--impl=im2col",
            f"--out={tmp_path}",
        )
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "robustness.json").read_text())
    conditions = result["conditions"]
    assert {"scale 0.5", "scale 2.0", "stretch x 1.5", "stroke -2", "chimera top_bottom"} <= set(
        conditions
    )
    wins = conditions["chimera left_right"]["wins"]
    assert sum(wins.values()) == pytest.approx(1.0)
    assert set(result["hand_drawn"]) == {f"{d}.png" for d in "012347"}  # docs/hand_drawn
    assert result["hand_drawn"]["7.png"]["label"] == 7
    for name in ("robustness.png", "robustness.md", "chimeras.gif", "chimeras.mp4"):
        assert (tmp_path / name).stat().st_size > 0
