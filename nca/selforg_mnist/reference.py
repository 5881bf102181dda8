"""Import the Distill article's published weights (its TensorFlow.js graph model) as params.

The model file is `distill_selforg_mnist_l2_noise.model.json` from the article's repository
`distillpub/post--selforg-mnist` (`public/model.json`), CC BY 4.0, Randazzo, Mordvintsev,
Niklasson, Levin, Greydanus, "Self-classifying MNIST Digits", Distill 2020. It is the pool +
mutation + L2 + noise model. Kernels are stored HWIO, the layout `nca.model` uses.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np

from nca.selforg_mnist import model

MODEL_FILE = "distill_selforg_mnist_l2_noise.model.json"
ENV_VAR = "NCA_REFERENCE_DIR"
_REPO_ROOT = Path(__file__).resolve().parents[2]

# (our layer, TF.js node name prefix, kernel shape)
_LAYERS = (
    ("perceive", "sequential/conv2d/", (3, 3, model.NUM_CHANNELS, model.PERCEPTION_FILTERS)),
    ("hidden", "sequential_1/conv2d_1/", (model.PERCEPTION_FILTERS, model.PERCEPTION_FILTERS)),
    ("output", "sequential_1/conv2d_2/", (model.PERCEPTION_FILTERS, model.NUM_MUTABLE)),
)


def default_path() -> Path:
    """`$NCA_REFERENCE_DIR/<file>` if set, else `../shared/reference/<file>` beside the repo."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]) / MODEL_FILE
    return _REPO_ROOT.parent / "shared" / "reference" / MODEL_FILE


def _const_tensor(node: dict) -> np.ndarray:
    tensor = node["attr"]["value"]["tensor"]
    if tensor.get("dtype") != "DT_FLOAT":
        raise ValueError(f"node {node['name']} is {tensor.get('dtype')}, not DT_FLOAT")
    shape = [int(d["size"]) for d in tensor["tensorShape"]["dim"]]
    values = np.frombuffer(base64.b64decode(tensor["tensorContent"]), dtype="<f4")
    return values.reshape(shape).astype(np.float32)


def load_distill_params(path: str | os.PathLike | None = None) -> model.Params:
    """Reads the published model into params of `nca.model.init_params`' layout (numpy arrays)."""
    path = Path(path) if path else default_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"published model not found at {path}; set {ENV_VAR} to the folder holding "
            f"{MODEL_FILE}."
        )
    try:
        nodes = json.loads(path.read_text())["modelTopology"]["node"]
        consts = {n["name"]: n for n in nodes if n.get("op") == "Const"}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a TensorFlow.js graph model: {e}") from e

    params = {}
    for layer, prefix, kernel_shape in _LAYERS:
        found = {}
        for name, node in consts.items():
            if name.startswith(prefix):
                value = _const_tensor(node)
                found["kernel" if value.ndim == 4 else "bias"] = value
        if set(found) != {"kernel", "bias"}:
            raise ValueError(f"{path}: no kernel and bias under {prefix!r} (found {sorted(found)})")
        params[layer] = {
            "kernel": found["kernel"].reshape(kernel_shape),
            "bias": found["bias"].reshape(kernel_shape[-1]),
        }
    return params
