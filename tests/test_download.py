"""The MNIST download against a local HTTP server on 127.0.0.1 serving small synthetic IDX files:
a clean download, a corrupt file, a truncated transfer, a 404 before a working mirror, no network.
Nothing here touches the network or the user's real cache."""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading

import numpy as np
import pytest

from nca import data, download
from tests.conftest import write_idx

TRAIN = data.FILES["train"]


class _Handler(http.server.BaseHTTPRequestHandler):
    """`/good/<name>` serves the file, `/corrupt/<name>` a changed copy, `/truncated/<name>` half
    of it under the full Content-Length, anything else 404."""

    def do_GET(self):  # noqa: N802 - the http.server API
        self.server.requests.append(self.path)
        mode, _, name = self.path.strip("/").partition("/")
        body = self.server.files.get(name)
        if body is None or mode not in ("good", "corrupt", "truncated"):
            self.send_error(404)
            return
        if mode == "corrupt":
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if mode == "truncated" else body)
        if mode == "truncated":
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A local mirror of tiny synthetic MNIST files; yields its base URL (`.../<mode>/`)."""
    source = tmp_path_factory.mktemp("mirror")
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("t10k", 8)):  # noise: 12 KiB of gzip that does not shrink
        write_idx(source / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(source / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.source = source
    httpd.files = {p.name: p.read_bytes() for p in source.iterdir()}
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(httpd, mode: str) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/{mode}/"


@pytest.fixture
def offline_home(tmp_path, monkeypatch, server):
    """No local MNIST anywhere, a fresh cache under tmp_path, and the synthetic files' hashes."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.delenv(download.MIRRORS_ENV, raising=False)
    monkeypatch.setenv(download.DATA_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    hashes = {name: hashlib.sha256(body).hexdigest() for name, body in server.files.items()}
    monkeypatch.setattr(download, "SHA256", hashes)
    server.requests.clear()
    return tmp_path / "cache" / "mnist"


def _mirrors(monkeypatch, *urls):
    monkeypatch.setenv(download.MIRRORS_ENV, ",".join(urls))


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def test_clean_download_fills_the_cache_once(offline_home, server, monkeypatch):
    _mirrors(monkeypatch, _url(server, "good"))
    images, labels = data.load_mnist("train")
    expected_images, expected_labels = data.load_mnist_idx(server.source, "train")
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
    assert sorted(p.name for p in offline_home.iterdir()) == sorted(TRAIN)  # no temporary files
    assert len(server.requests) == 2
    data.load_mnist("train")  # from the cache: hashes match, nothing fetched
    assert len(server.requests) == 2


def test_a_corrupt_cached_file_is_fetched_again(offline_home, server, monkeypatch):
    _mirrors(monkeypatch, _url(server, "good"))
    offline_home.mkdir(parents=True)
    (offline_home / TRAIN[0]).write_bytes(b"not mnist")
    data.load_mnist("train")
    assert (offline_home / TRAIN[0]).read_bytes() == server.files[TRAIN[0]]


@pytest.mark.parametrize("mode", ["corrupt", "truncated"])
def test_a_bad_download_is_refused_and_leaves_nothing(offline_home, server, monkeypatch, mode):
    _mirrors(monkeypatch, _url(server, mode))
    with pytest.raises(data.DataError) as err:
        data.load_mnist("train")
    message = str(err.value)
    assert TRAIN[0] in message and _url(server, mode) + TRAIN[0] in message
    body = server.files[TRAIN[0]]
    if mode == "corrupt":
        received = body[:-1] + bytes([body[-1] ^ 0xFF])
    else:  # what was written before the transfer broke off, whole chunks of the first half
        written = int(re.search(r"broke off after (\d+) bytes", message).group(1))
        assert 0 < written <= len(body) // 2
        received = body[:written]
    assert hashlib.sha256(body).hexdigest() in message  # both hashes named
    assert hashlib.sha256(received).hexdigest() in message
    assert mode in message and "refused" in message
    assert not offline_home.exists() or list(offline_home.iterdir()) == []


def test_a_404_falls_back_to_the_next_mirror(offline_home, server, monkeypatch):
    _mirrors(monkeypatch, _url(server, "missing"), _url(server, "good"))
    images, _ = data.load_mnist("test")
    assert images.shape == (8, 28, 28)
    assert [r.split("/")[1] for r in server.requests] == ["missing", "good"] * 2


def test_no_network_names_each_mirror_and_the_local_options(offline_home, monkeypatch):
    dead = [_closed_port_url(), _closed_port_url().replace("/mnist/", "/other/")]
    _mirrors(monkeypatch, *dead)
    with pytest.raises(data.DataError) as err:
        data.load_mnist("train")
    message = str(err.value)
    assert "\n" not in message
    for url in dead:
        assert url + TRAIN[0] in message
    for hint in (data.ENV_VAR, "--config.data.mnist_dir", "./data/mnist", str(offline_home)):
        assert hint in message
    assert not offline_home.exists() or list(offline_home.iterdir()) == []


def test_the_404_reason_is_named(offline_home, server, monkeypatch):
    _mirrors(monkeypatch, _url(server, "missing"))
    with pytest.raises(data.DataError, match="HTTP 404"):
        data.load_mnist("test")


def test_tfds_is_an_explicit_choice():
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        with pytest.raises(data.DataError, match="tensorflow-datasets"):
            data.load_mnist("train", data.TFDS)
    else:
        pytest.skip("tensorflow-datasets is installed; not downloading MNIST through it here")


def test_the_real_hashes_are_those_of_the_shared_files():
    from tests.conftest import SHARED_MNIST

    if not SHARED_MNIST.is_dir():
        pytest.skip("needs ../shared/data/mnist")
    for name, expected in download.SHA256.items():
        assert hashlib.sha256((SHARED_MNIST / name).read_bytes()).hexdigest() == expected
