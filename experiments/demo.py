"""The interactive browser demo: draw a digit and watch its cells agree on which digit it is.

    python -m experiments.demo                                  # shipped distill_l2_noise weights
    python -m experiments.demo --workdir=workdirs/l2_noise      # a trained workdir
    python -m experiments.demo --export_only=site               # write the static site, exit
    python -m experiments.demo --adversary=none                 # no adversary pen

Exports the model's params (with `fire_rate` and `noise_std` from its config), the adversary's
params (default: the published `distill_adversary_eight`, trained against `distill_l2_noise`;
the page's adversary pen and buttons use it) and ~100 random MNIST test digits (when MNIST can
be loaded; else the page's random-digit button is off) as JSON, then serves the page
(`nca/selforg_mnist/demo/`) on http://127.0.0.1:8000/ with the standard library's http.server:
only the page's own files, anything else is 404. The CA itself runs in the browser.
"""

from __future__ import annotations

from absl import flags

from experiments import cli
from nca import data
from nca.selforg_mnist import demo

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained workdir.")
_MODEL = flags.DEFINE_string("model", None, "Or a shipped model (default: distill_l2_noise).")
_PORT = flags.DEFINE_integer("port", 8000, "Port to serve on.", lower_bound=0, upper_bound=65535)
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to bind (default: this machine only).")
_EXPORT_ONLY = flags.DEFINE_string("export_only", None, "Write the site into DIR and exit.")
_DATA = flags.DEFINE_string("mnist_dir", None, "MNIST folder (default: as training finds it).")
_ADVERSARY = flags.DEFINE_string(
    "adversary",
    "distill_adversary_eight",
    "The adversary pen's rule: a shipped name, a workdir, or `none`.",
)

DEFAULT_MODEL = "distill_l2_noise"
NUM_DIGITS = 100


def page_params(m: dict) -> bytes:
    """A loaded model (`cli.load_one_model`) as the page's params JSON."""
    config = m["config"]
    try:
        return demo.params_json(
            m["params"], config.model.fire_rate, config.model.noise_std, m["label"]
        )
    except demo.DemoError as e:
        raise cli.InputError(f"{m['label']}: {e}") from e


def main(argv):
    cli.reject_positional(argv)
    m = cli.load_one_model(_WORKDIR.value, _MODEL.value, default=DEFAULT_MODEL)
    params_bytes = page_params(m)
    adversary_bytes = None
    if _ADVERSARY.value.lower() != "none":
        adversary_bytes = page_params(cli.load_shipped_or_workdir(_ADVERSARY.value))
    try:
        images, labels = data.load_mnist("test", _DATA.value)
        digits_bytes = demo.digits_json(images, labels, NUM_DIGITS)
    except (data.DataError, demo.DemoError) as e:
        print(f"note: no random digits on the page ({e})")
        digits_bytes = None
    files = demo.site_files(params_bytes, digits_bytes, adversary_bytes)
    if _EXPORT_ONLY.value:
        out = demo.write_site(files, _EXPORT_ONLY.value)
        print(f"wrote {', '.join(sorted(files))} to {out}")
        return
    try:
        server = demo.make_server(files, _HOST.value, _PORT.value)
    except OSError as e:
        raise cli.InputError(f"cannot serve on {_HOST.value}:{_PORT.value}: {e}") from e
    host, port = server.server_address[:2]
    print(f"serving {m['label']} on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    cli.run(main)
