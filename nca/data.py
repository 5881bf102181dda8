"""MNIST from a local folder of the original IDX `.gz` files, downloaded, or from tfds.

Where the files are looked for, in order:
1. the `mnist_dir` argument (the config field `data.mnist_dir`), if set, and then nowhere else;
2. the environment variable `NCA_MNIST_DIR`;
3. `./data/mnist` and `../shared/data/mnist` (relative to the current directory and to the
   repository root);
4. the download cache, `$NCA_DATA_DIR/mnist` or the user cache folder: files missing there are
   downloaded from public mirrors and checked by SHA-256 (see `nca.download`).

`mnist_dir="tfds"` (or `NCA_MNIST_DIR=tfds`) takes the data from tensorflow-datasets instead
(`pip install -e ".[tfds]"`). The IDX path needs only numpy. Images come back as
`(N, 28, 28) uint8`, labels `(N,) int32`.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from nca import download

ENV_VAR = "NCA_MNIST_DIR"
TFDS = "tfds"  # the mnist_dir value that selects tensorflow-datasets
REPO_ROOT = Path(__file__).resolve().parent.parent
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_DTYPE_UBYTE = 0x08


class DataError(RuntimeError):
    """MNIST is missing or unreadable; the message says what was looked for and how to fix it."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one (optionally gzipped) IDX file of unsigned bytes into an array of its shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}. Replace it with the original MNIST file.") from e
    if len(raw) < 4:
        raise DataError(f"{path} is not an IDX file (only {len(raw)} bytes).")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != _IDX_DTYPE_UBYTE or not 1 <= ndim <= 3:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number {raw[:4]!r}).")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(
            f"{path} is truncated or corrupt: header says shape {shape} "
            f"({int(np.prod(shape))} values) but it holds {data.size}."
        )
    return data.reshape(shape)


def candidate_dirs(mnist_dir: str | None = None) -> list[Path]:
    """The folders searched for the IDX files, in order."""
    if mnist_dir:  # asked for a folder explicitly: look nowhere else
        return [Path(mnist_dir).expanduser()]
    dirs = []
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]).expanduser())
    for base in (Path.cwd(), REPO_ROOT):
        dirs += [base / "data" / "mnist", base.parent / "shared" / "data" / "mnist"]
    return list(dict.fromkeys(dirs))


def load_mnist_idx(directory: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one split from a folder holding the four original IDX `.gz` files."""
    image_file, label_file = (Path(directory) / name for name in FILES[split])
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{image_file} holds images of shape {images.shape[1:]}, not (28, 28).")
    if labels.shape != images.shape[:1]:
        raise DataError(
            f"{label_file} holds {labels.shape[0]} labels for {images.shape[0]} images in "
            f"{image_file}."
        )
    if labels.max(initial=0) > 9:
        raise DataError(f"{label_file} holds labels outside 0-9.")
    return images, labels.astype(np.int32)


def _load_tfds(split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        import tensorflow_datasets as tfds  # optional; heavy
    except ImportError as e:
        raise DataError(
            f'MNIST from {TFDS!r} needs tensorflow-datasets: pip install -e ".[tfds]".'
        ) from e
    try:
        images, labels = tfds.as_numpy(
            tfds.load("mnist", split=split, batch_size=-1, as_supervised=True)
        )
    except Exception as e:  # noqa: BLE001 - tfds raises many kinds when offline
        raise DataError(
            f"tensorflow-datasets could not provide the MNIST {split} split "
            f"({type(e).__name__}: {e})."
        ) from e
    return images[..., 0].astype(np.uint8), labels.astype(np.int32)


def load_mnist(split: str, mnist_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`split` in {"train", "test"} -> images `(N, 28, 28) uint8`, labels `(N,) int32`."""
    if split not in FILES:
        raise ValueError(f"unknown MNIST split {split!r}; use one of {sorted(FILES)}.")
    if (mnist_dir or os.environ.get(ENV_VAR)) == TFDS:
        return _load_tfds(split)
    searched = candidate_dirs(mnist_dir)
    for directory in searched:
        if all((directory / name).exists() for name in FILES[split]):
            return load_mnist_idx(directory, split)
    names = " and ".join(FILES[split])
    if mnist_dir:
        raise DataError(
            f"MNIST {split} split not found: looked for {names} in "
            f"{', '.join(map(str, searched))}. Set {ENV_VAR} (or --config.data.mnist_dir) to a "
            f"folder holding the original IDX .gz files, or leave both unset to download them."
        )
    try:
        return load_mnist_idx(download.fetch(FILES[split]), split)
    except download.DownloadError as e:
        raise DataError(
            f"MNIST {split} split not found in {', '.join(map(str, searched))}, and {e}. To use "
            f"local files, put the original IDX .gz files ({names}) in a folder and set "
            f"{ENV_VAR} or --config.data.mnist_dir to it, or put them in ./data/mnist or "
            f"{download.cache_dir()}."
        ) from e


def to_grey(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 grey in [0, 1]."""
    return images.astype(np.float32) / 255.0


def load_training_digits(
    mnist_dir: str | None = None, max_images: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST training split (its first `max_images` if set): `(N, 28, 28)` float32 grey in
    [0, 1] and `(N,)` int32 labels."""
    images, labels = load_mnist("train", mnist_dir or None)
    if max_images:
        images, labels = images[:max_images], labels[:max_images]
    return to_grey(images), labels
