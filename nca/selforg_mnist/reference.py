"""Import the Distill articles' published weights (TensorFlow.js graph models) as params.

- `distill_selforg_mnist_l2_noise.model.json` (`MODEL_FILE`), from the article's repository
  `distillpub/post--selforg-mnist` (`public/model.json`), CC BY 4.0, Randazzo, Mordvintsev,
  Niklasson, Levin, Greydanus, "Self-classifying MNIST Digits", Distill 2020: the pool +
  mutation + L2 + noise model.
- `distill_adversarial_mnist_eight.model.json` (`ADVERSARY_FILE`), from
  `google-research/self-organising-systems` (`adversarial_reprogramming_ca/assets/
  mnist_ca_adversarial_model.zip`, Apache-2.0), Randazzo, Mordvintsev, Niklasson, Levin,
  "Adversarial Reprogramming of Neural Cellular Automata", Distill 2021: a CA of the same
  architecture whose cells, scattered among the original's, make every digit read "8".

Both hold three convolutions (3x3 20 -> 80, 1x1 80 -> 80, 1x1 80 -> 19), each a kernel and a
bias under one node-name prefix; the layers are told apart by their kernel shapes. Kernels are
stored HWIO, the layout `nca.model` uses.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np

from nca.selforg_mnist import model

MODEL_FILE = "distill_selforg_mnist_l2_noise.model.json"
ADVERSARY_FILE = "distill_adversarial_mnist_eight.model.json"
ENV_VAR = "NCA_REFERENCE_DIR"
_REPO_ROOT = Path(__file__).resolve().parents[2]

# our layer -> its kernel's shape in the file
_LAYERS = {
    "perceive": (3, 3, model.NUM_CHANNELS, model.PERCEPTION_FILTERS),
    "hidden": (1, 1, model.PERCEPTION_FILTERS, model.PERCEPTION_FILTERS),
    "output": (1, 1, model.PERCEPTION_FILTERS, model.NUM_MUTABLE),
}


def default_path(file: str = MODEL_FILE) -> Path:
    """`$NCA_REFERENCE_DIR/<file>` if set, else `../shared/reference/<file>` beside the repo."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]) / file
    return _REPO_ROOT.parent / "shared" / "reference" / file


def _const_tensor(node: dict) -> np.ndarray:
    tensor = node["attr"]["value"]["tensor"]
    if tensor.get("dtype") != "DT_FLOAT":
        raise ValueError(f"node {node['name']} is {tensor.get('dtype')}, not DT_FLOAT")
    shape = [int(d["size"]) for d in tensor["tensorShape"]["dim"]]
    values = np.frombuffer(base64.b64decode(tensor["tensorContent"]), dtype="<f4")
    return values.reshape(shape).astype(np.float32)


def load_distill_params(path: str | os.PathLike | None = None) -> model.Params:
    """Reads a published model (default: the self-classifying CA's, `MODEL_FILE`; pass
    `default_path(ADVERSARY_FILE)` for the adversary) into params of `nca.model.init_params`'
    layout (numpy arrays)."""
    path = Path(path) if path else default_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"published model not found at {path}; set {ENV_VAR} to the folder holding {path.name}."
        )
    try:
        nodes = json.loads(path.read_text())["modelTopology"]["node"]
        consts = [n for n in nodes if n.get("op") == "Const"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a TensorFlow.js graph model: {e}") from e

    layers = {}  # "sequential_k/conv2d_j" -> {"kernel": ..., "bias": ...}
    for node in consts:
        prefix, _, op = node["name"].partition("/Conv2D/")
        if not op:
            prefix, _, op = node["name"].partition("/BiasAdd/")
        if op:
            leaf = "kernel" if "/Conv2D/" in node["name"] else "bias"
            layers.setdefault(prefix, {})[leaf] = _const_tensor(node)
    params = {}
    for layer, kernel_shape in _LAYERS.items():
        matches = [v for v in layers.values() if v.get("kernel", np.empty(0)).shape == kernel_shape]
        if len(matches) != 1 or "bias" not in matches[0]:
            raise ValueError(
                f"{path}: expected one convolution with a {kernel_shape} kernel and a bias for "
                f"{layer!r}, found {len(matches)}; layers: {sorted(layers)}"
            )
        params[layer] = {
            "kernel": matches[0]["kernel"].reshape(
                kernel_shape[-2:] if layer != "perceive" else kernel_shape
            ),
            "bias": matches[0]["bias"].reshape(kernel_shape[-1]),
        }
    return params
