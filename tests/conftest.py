"""Shared fixtures: tiny synthetic MNIST IDX files, and where the real data lives (if present)."""

from __future__ import annotations

import atexit
import gzip
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"
SHARED_MNIST = SHARED / "data" / "mnist"
SHARED_MODEL = SHARED / "reference" / "distill_selforg_mnist_l2_noise.model.json"
SHARED_ADVERSARY = SHARED / "reference" / "distill_adversarial_mnist_eight.model.json"

# No test downloads MNIST or touches the user's cache (subprocesses inherit these): a test that
# reached the download path would fail fast against a closed local port, in an empty cache.
os.environ.setdefault("NCA_DATA_DIR", tempfile.mkdtemp(prefix="nca-test-cache-"))
os.environ.setdefault("NCA_MNIST_MIRRORS", "http://127.0.0.1:9/mnist/")
# One persistent XLA compilation cache for this test session, this process and every training
# subprocess (a fresh folder, so nothing from another session or version is reused): the tests
# compile the same small programs again and again (a smoke training subprocess: 45 s -> 18 s).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="nca-test-xla-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
# The tests' programs are small, so their time goes to compiling, most of it to LLVM's -O2:
# -O1 compiles a MetaNCA rollout in 3.6 s instead of 13.7 and runs the 1000-digit check of the
# published weights as fast; the MetaNCA end-to-end test takes 139 s instead of 310 (one core).
_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _XLA_FLAGS:
    os.environ["XLA_FLAGS"] = f"{_XLA_FLAGS} --xla_backend_optimization_level=1".strip()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Writes a uint8 array as a gzipped IDX file, the format of the original MNIST files."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def synthetic_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` 28x28 images: a 6x12 block at a random place whose grey level encodes the label (a
    cell can see its label locally, so even a few CA steps can learn the task)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = np.zeros((n, 28, 28), np.uint8)
    for i, k in enumerate(labels):
        top, left = rng.integers(2, 20), rng.integers(2, 14)
        images[i, top : top + 6, left : left + 12] = 70 + 20 * k
    return images, labels


def make_mnist_dir(directory: Path, n_train: int = 64, n_test: int = 32) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_digits(n, seed)
        write_idx(directory / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{split}-labels-idx1-ubyte.gz", labels)
    return directory


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """A folder of tiny synthetic MNIST IDX files (tests never need the real data)."""
    return make_mnist_dir(tmp_path_factory.mktemp("mnist"))


requires_shared = pytest.mark.skipif(
    not (SHARED_MNIST.is_dir() and SHARED_MODEL.is_file()),
    reason="needs ../shared (real MNIST and the published Distill weights)",
)


def run_python(script: str) -> str:
    """`script` (dedented) in a fresh interpreter at the repository root, e.g. one that sets its
    own `jax_num_cpu_devices` before JAX starts; asserts it exits 0 and returns its stdout."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout
