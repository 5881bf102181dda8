"""Videos of a trained model: test digits classifying, mutating, and classifying again.

    python -m experiments.render --workdir=workdirs/l2_noise
    python -m experiments.render --model=distill_l2_noise      # shipped weights, no training

Writes into the workdir (or --out) `digits.gif` / `digits.mp4`: a batch of test digits for --steps
steps, then each mutated into another test digit (states survive where the new digit is alive)
for --steps more; cells coloured by label with the article's palette, dead cells white. And
`channels.gif` / `channels.mp4`: the 19 internal channels of the first digit, squashed by arctan
on a diverging colormap.
"""

from __future__ import annotations

from pathlib import Path

import jax
from absl import flags
from tqdm import tqdm

from experiments import cli
from nca import data
from nca.selforg_mnist import render

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained workdir.")
_MODEL = flags.DEFINE_string("model", None, "Or a shipped pretrained model, e.g. distill_l2_noise.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: the workdir, or render_<model>).")
_NUM_DIGITS = flags.DEFINE_integer("num_digits", 16, "Digits in the video.", lower_bound=1,
                                   upper_bound=cli.MNIST_TEST_DIGITS)  # fmt: skip
_COLUMNS = flags.DEFINE_integer("columns", 4, "Digits per row.", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 200, "Steps before (and after) the mutation.", lower_bound=1)
_SCALE = flags.DEFINE_integer("scale", 4, "Pixels per cell.", lower_bound=1)
_EVERY = flags.DEFINE_integer("every", 1, "Keep every n-th step as a frame.", lower_bound=1)
_FPS = flags.DEFINE_integer("fps", 30, "Frames per second.", lower_bound=1)
_FIRST = flags.DEFINE_integer("first_digit", 0, "Index of the first test digit shown.",
                               lower_bound=0)  # fmt: skip
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the CA's randomness.", lower_bound=0)
cli.require_fits(
    ("first_digit", "num_digits"),
    lambda f: f["first_digit"] + f["num_digits"] <= cli.MNIST_TEST_DIGITS,
    f"first_digit + num_digits must be at most {cli.MNIST_TEST_DIGITS} (the MNIST test split)",
)
_DATA = flags.DEFINE_string("mnist_dir", None, "MNIST folder (default: as training finds it).")


def main(argv):
    cli.reject_positional(argv)
    m = cli.load_one_model(_WORKDIR.value, _MODEL.value)
    config, params = m["config"], m["params"]
    images, _ = data.load_mnist("test", _DATA.value)
    n, first = _NUM_DIGITS.value, _FIRST.value
    if not 1 <= n <= len(images) // 2 or not 0 <= first <= len(images) - 2 * n:
        raise cli.InputError(f"--num_digits={n} --first_digit={first} do not fit the test set.")
    grey = data.to_grey(images[first : first + 2 * n])
    labels, alive, channels = jax.device_get(
        render.trajectory(
            params,
            grey[:n],
            grey[n:],
            jax.random.PRNGKey(_SEED.value),
            _STEPS.value,
            config.model.fire_rate,
            config.model.noise_std,
        )
    )
    out = Path(_OUT.value or m["folder"] or f"render_{_MODEL.value}")
    out.mkdir(parents=True, exist_ok=True)
    steps = range(0, len(labels), _EVERY.value)
    columns = min(_COLUMNS.value, n)
    digit_frames = [
        render.label_frame(labels[t], alive[t], columns, _SCALE.value)
        for t in tqdm(steps, desc="digit frames")
    ]
    render.write_video(out / "digits", digit_frames, _FPS.value)
    channel_frames = [
        render.channel_frame(channels[t], _SCALE.value) for t in tqdm(steps, desc="channel frames")
    ]
    render.write_video(out / "channels", channel_frames, _FPS.value)
    print(
        f"wrote {out}/digits.gif, digits.mp4, channels.gif, channels.mp4 "
        f"({len(digit_frames)} frames each)"
    )


if __name__ == "__main__":
    cli.run(main)
