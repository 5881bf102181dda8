"""MNIST loading from IDX files, and the errors for missing or corrupt data."""

import gzip

import numpy as np
import pytest

from nca import data
from tests.conftest import SHARED_MNIST, synthetic_digits, write_idx


def test_reads_synthetic_idx(mnist_dir):
    images, labels = data.load_mnist("train", str(mnist_dir))
    expected_images, expected_labels = synthetic_digits(64, 0)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
    assert images.dtype == np.uint8 and labels.dtype == np.int32
    grey = data.to_grey(images)
    assert grey.dtype == np.float32 and grey.max() <= 1.0


def test_env_var_is_searched(mnist_dir, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(mnist_dir))
    assert data.candidate_dirs()[0] == mnist_dir
    images, _ = data.load_mnist("test")
    assert images.shape == (32, 28, 28)


def test_explicit_folder_is_the_only_place_looked(tmp_path):
    with pytest.raises(data.DataError) as err:
        data.load_mnist("train", str(tmp_path / "nowhere"))
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "nowhere") in message
    assert data.ENV_VAR in message


def test_truncated_file_is_reported(tmp_path):
    images, labels = synthetic_digits(8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    raw = gzip.open(tmp_path / "train-images-idx3-ubyte.gz").read()
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(data.DataError, match="truncated or corrupt"):
        data.load_mnist("train", str(tmp_path))


def test_not_gzip_and_bad_magic_are_reported(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(data.DataError, match="cannot read"):
        data.read_idx(path)
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x0d\x03" + b"\x00" * 20)
    with pytest.raises(data.DataError, match="magic"):
        data.read_idx(path)


def test_mismatched_label_count_is_reported(tmp_path):
    images, labels = synthetic_digits(8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:5])
    with pytest.raises(data.DataError, match="5 labels for 8 images"):
        data.load_mnist("test", str(tmp_path))


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="needs ../shared/data/mnist")
def test_real_mnist_counts():
    images, labels = data.load_mnist("test", str(SHARED_MNIST))
    assert images.shape == (10000, 28, 28)
    np.testing.assert_array_equal(
        np.bincount(labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
