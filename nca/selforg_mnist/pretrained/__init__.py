"""Trained models shipped with the package, loadable by name without training or data.

    from nca.selforg_mnist import pretrained
    config, params = pretrained.load("distill_l2_noise")

Each model is `<name>.npz` (params, float32) and `<name>.json` (the config it was trained with,
plus provenance) in this folder; `export` writes them from a training workdir.

Shipped:
- `distill_l2_noise`: the Distill article's published weights (pool + mutation + L2 + noise),
  from `distillpub/post--selforg-mnist` (`public/model.json`), CC BY 4.0: Randazzo, Mordvintsev,
  Niklasson, Levin, Greydanus, "Self-classifying MNIST Digits", Distill 2020,
  doi:10.23915/distill.00027.002.
- `distill_adversary_eight`: the published MNIST adversary of "Adversarial Reprogramming of
  Neural Cellular Automata" (Randazzo, Mordvintsev, Niklasson, Levin, Distill 2021,
  doi:10.23915/distill.00027.004), from `google-research/self-organising-systems`, Apache-2.0:
  a rule of the same architecture whose cells, scattered among the original's, make digits
  read "8". Not a classifier on its own.
- `l2_noise`, `l2`, `ce`: trained with this codebase; `l2_noise` is seed 2 of the article's full
  100k-iteration schedule, `l2` and `ce` the 20k schedule (`l2:20k`, `ce:20k`); their `.json`
  gives the schedule and the full-test-set evaluation.
- `adversary_eight`: our adversary against the shipped `l2_noise` (`configs/adversary_eight.py`,
  the notebook's recipe, 50k iterations); like `distill_adversary_eight`, not a classifier.
- `adversary_eight_vs_distill`: ours against the published `distill_l2_noise`, the same recipe
  and length (`--config.adversary.original=distill_l2_noise`).
- `l2_noise_defended`: `l2_noise` trained 100k iterations as one player of the defence game
  against a co-trained adversary (`configs/l2_noise_defended.py`): an adversary trained afresh
  against it turns far fewer cells to "8" than against `l2_noise`, at a cost in clean accuracy
  and agreement (docs/selforg_mnist/README.md, "Defence").
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections
import numpy as np

from nca.selforg_mnist import model

FOLDER = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("*.npz"))


def load(name: str) -> tuple[ml_collections.ConfigDict, model.Params]:
    """`(config, params)` of a shipped model."""
    if name not in available():
        raise ValueError(f"no pretrained model {name!r}; available: {', '.join(available())}.")
    meta = json.loads((FOLDER / f"{name}.json").read_text())
    with np.load(FOLDER / f"{name}.npz") as arrays:
        params = {}
        for key, value in arrays.items():
            layer, leaf = key.split("/")
            params.setdefault(layer, {})[leaf] = value
    return ml_collections.ConfigDict(meta["config"]), params


def export(
    params: model.Params,
    config: ml_collections.ConfigDict,
    name: str,
    provenance: str,
    folder: Path = FOLDER,
) -> Path:
    """Writes `<folder>/<name>.npz` and `.json` (config + provenance: how it was trained)."""
    flat = {f"{layer}/{leaf}": np.asarray(v, np.float32)
            for layer, leaves in params.items() for leaf, v in leaves.items()}  # fmt: skip
    np.savez_compressed(folder / f"{name}.npz", **flat)
    meta = {"config": json.loads(config.to_json()), "provenance": provenance}
    (folder / f"{name}.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return folder / f"{name}.npz"
