"""The interactive browser demo of the self-classifying MNIST CA (`python -m experiments.demo`).

The page (`index.html`, `ca.js`, `style.css` in this folder) runs the CA of `nca.model.step` in
plain JavaScript. It reads two JSON files that this module builds from a model:

- `params.json`: every parameter as a flat list of float32 values (shortest decimal that reads
  back as the same float32), with the layer's name and shape, plus `fire_rate` and `noise_std`;
- `digits.json` (only when MNIST can be loaded): random test digits, 28x28 uint8, with labels;
- `adversary.json` (optional, the format of `params.json`): a second rule, e.g. the published
  adversary of Adversarial Reprogramming of NCA (Distill 2021). The page's adversary pen marks
  cells that follow it instead of the model (`nca.selforg_mnist.adversarial.mixed_step`: both
  rules see the same state, fire mask and noise; the model's fire rate and noise apply), and a
  button removes them again (their states stay and follow the model).

`site_files` gives the whole site as `{url path: (bytes, content type)}`; `make_server` serves
exactly those paths (anything else is 404, so there is no directory listing and no way out of
the site), and `write_site` writes them into a folder for static hosting.
"""

from __future__ import annotations

import http.server
import json
import math
from pathlib import Path

import numpy as np

from nca.selforg_mnist import model

FOLDER = Path(__file__).resolve().parent
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "ca.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
PARAMS_FILE = "params.json"
DIGITS_FILE = "digits.json"
ADVERSARY_FILE = "adversary.json"
PARAMS_FORMAT = "nca-demo-params/1"
# The page's layer names and shapes, in the order the page reads them (HWIO kernels).
LAYER_SHAPES = {
    "perceive/kernel": (3, 3, model.NUM_CHANNELS, model.PERCEPTION_FILTERS),
    "perceive/bias": (model.PERCEPTION_FILTERS,),
    "hidden/kernel": (model.PERCEPTION_FILTERS, model.PERCEPTION_FILTERS),
    "hidden/bias": (model.PERCEPTION_FILTERS,),
    "output/kernel": (model.PERCEPTION_FILTERS, model.NUM_MUTABLE),
    "output/bias": (model.NUM_MUTABLE,),
}
NUM_PARAMS = sum(math.prod(s) for s in LAYER_SHAPES.values())  # 22,499


class DemoError(ValueError):
    """Params or digits the page cannot use."""


def _float32_list(array: np.ndarray) -> list[float]:
    # str(np.float32) is the shortest decimal that reads back as the same float32; as a Python
    # float it prints the same, so the page's Float32Array gets the exact weights.
    return [float(str(v)) for v in np.asarray(array, np.float32).ravel()]


def params_json(params: model.Params, fire_rate: float, noise_std: float, name: str) -> bytes:
    """The page's `params.json`; raises DemoError on a missing layer, a wrong shape, or a
    non-finite value."""
    layers = []
    for key, shape in LAYER_SHAPES.items():
        layer, leaf = key.split("/")
        try:
            value = np.asarray(params[layer][leaf], np.float32)
        except (KeyError, TypeError) as e:
            raise DemoError(f"the params have no {key!r} (a self-classifying MNIST CA has "
                            f"{', '.join(LAYER_SHAPES)}).") from e  # fmt: skip
        if value.shape != shape:
            raise DemoError(f"params {key!r} has shape {value.shape}; the demo's CA needs {shape}.")
        if not np.isfinite(value).all():
            raise DemoError(f"params {key!r} holds non-finite values.")
        layers.append({"name": key, "shape": list(shape), "data": _float32_list(value)})
    extra = sorted(f"{layer}/{leaf}" for layer, leaves in params.items() for leaf in leaves)
    extra = [k for k in extra if k not in LAYER_SHAPES]
    if extra:
        raise DemoError(f"the params hold layers the demo's CA does not use: {', '.join(extra)}.")
    if not 0 < fire_rate <= 1 or not 0 <= noise_std < math.inf:
        raise DemoError(f"fire_rate={fire_rate} must be in (0, 1], noise_std={noise_std} >= 0.")
    doc = {
        "format": PARAMS_FORMAT,
        "model": name,
        "fire_rate": float(fire_rate),
        "noise_std": float(noise_std),
        "num_params": NUM_PARAMS,
        "layers": layers,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def digits_json(images: np.ndarray, labels: np.ndarray, num: int = 100, seed: int = 0) -> bytes:
    """The page's `digits.json`: `num` random digits of `images (N, 28, 28) uint8`."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise DemoError(f"MNIST images of shape {images.shape} (labels {np.shape(labels)}); "
                        f"expected (N, 28, 28) with one label each.")  # fmt: skip
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(images), size=min(num, len(images)), replace=False))
    doc = {
        "height": 28,
        "width": 28,
        "indices": picked.tolist(),
        "labels": np.asarray(labels)[picked].astype(int).tolist(),
        "images": [images[i].astype(np.uint8).ravel().tolist() for i in picked],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def site_files(
    params_bytes: bytes, digits_bytes: bytes | None, adversary_bytes: bytes | None = None
) -> dict[str, tuple[bytes, str]]:
    """`{file name: (content, content type)}` of the whole site."""
    files = {name: ((FOLDER / name).read_bytes(), ctype) for name, ctype in STATIC_FILES.items()}
    files[PARAMS_FILE] = (params_bytes, "application/json")
    for name, content in ((DIGITS_FILE, digits_bytes), (ADVERSARY_FILE, adversary_bytes)):
        if content is not None:
            files[name] = (content, "application/json")
    return files


def write_site(files: dict[str, tuple[bytes, str]], folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, (content, _) in files.items():
        (folder / name).write_bytes(content)
    return folder


def make_server(
    files: dict[str, tuple[bytes, str]], host: str = "127.0.0.1", port: int = 8000
) -> http.server.ThreadingHTTPServer:
    """An HTTP server of exactly `files` (`/` is `index.html`); every other path is 404."""
    routes = {f"/{name}": entry for name, entry in files.items()}
    routes["/"] = files["index.html"]

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "nca-demo"

        def _send(self, body: bool) -> None:
            path = self.path.split("?", 1)[0].split("#", 1)[0]
            if path not in routes:  # exact match only: no listing, no "..", no other files
                self.send_error(404, "not part of the demo")
                return
            content, ctype = routes[path]
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(content)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if body:
                self.wfile.write(content)

        def do_GET(self):  # noqa: N802 - http.server's names
            self._send(body=True)

        def do_HEAD(self):  # noqa: N802
            self._send(body=False)

        def log_request(self, code="-", size="-"):  # quiet: only errors are logged
            if not (isinstance(code, int) and code < 400):
                super().log_request(code, size)

    return http.server.ThreadingHTTPServer((host, port), Handler)
