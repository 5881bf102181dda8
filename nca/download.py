"""Downloads the four original MNIST IDX `.gz` files into a cache folder, checked by SHA-256.

The cache folder is `$NCA_DATA_DIR/mnist`, or else `<the platform's user cache>/nca/mnist`
(`~/.cache/nca/mnist` on Linux). Each file is fetched with `pooch` from the first of `MIRRORS`
that serves it with the SHA-256 in `SHA256`: pooch streams it into a temporary file in the cache
folder, with a progress bar, checks the hash and only then renames it into place, so the cache
never holds a partial or corrupt file. A file already in the cache is used when its hash matches
(and fetched again when it does not).

`NCA_MNIST_MIRRORS` (comma-separated base URLs) replaces `MIRRORS`, e.g. for a local mirror.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

DATA_DIR_ENV = "NCA_DATA_DIR"
MIRRORS_ENV = "NCA_MNIST_MIRRORS"

# Tried in order. The PyTorch and TensorFlow mirrors first; LeCun's site, the original, last
# (it has refused automated downloads at times).
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# SHA-256 of the `.gz` files as the mirrors serve them (9,912,422 / 28,881 / 1,648,877 / 4,542
# bytes); the values tensorflow-datasets lists in `url_checksums/mnist.txt`.
SHA256 = {
    "train-images-idx3-ubyte.gz": (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    ),
    "train-labels-idx1-ubyte.gz": (
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
    ),
}


class DownloadError(RuntimeError):
    """No mirror served a file with the expected hash; the message names each failure."""


def cache_dir() -> Path:
    """Where downloaded MNIST files are kept: `$NCA_DATA_DIR/mnist` or the user cache."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser() / "mnist"
    import pooch  # platformdirs' user cache dir

    return Path(pooch.os_cache("nca")) / "mnist"


def mirrors() -> tuple[str, ...]:
    """`$NCA_MNIST_MIRRORS` (comma-separated) if set, else `MIRRORS`."""
    if os.environ.get(MIRRORS_ENV):
        return tuple(m.strip() for m in os.environ[MIRRORS_ENV].split(",") if m.strip())
    return MIRRORS


def fetch(
    names: Sequence[str],
    directory: str | os.PathLike | None = None,
    *,
    mirror_list: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Makes sure `directory` (default `cache_dir()`) holds the files `names` with the hashes in
    `SHA256`, downloading those missing or wrong. Returns the folder; raises `DownloadError`
    naming, for each file that could not be fetched, every mirror tried and why it failed."""
    import pooch

    directory = Path(directory) if directory is not None else cache_dir()
    mirror_list = tuple(mirror_list) if mirror_list is not None else mirrors()
    for name in names:
        failures = []
        for mirror in mirror_list:
            url = mirror.rstrip("/") + "/" + name
            try:
                path = pooch.retrieve(
                    url,
                    known_hash=f"sha256:{SHA256[name]}",
                    fname=name,
                    path=directory,
                    downloader=_downloader(SHA256[name], progress),
                )
            except Exception as e:  # noqa: BLE001 - requests, OSError, pooch's hash ValueError
                failures.append(f"{url} ({_reason(e, name)})")
                continue
            with contextlib.suppress(OSError):  # a shared cache may hold another user's file
                os.chmod(path, 0o644)  # readable like any download, not 0600 like a temporary file
            break
        else:
            tried = "; ".join(failures) if failures else "no mirrors configured"
            raise DownloadError(f"could not download {name} into {directory}: {tried}")
    return directory


class TruncatedDownload(OSError):
    """The connection broke before the whole file arrived."""


def _downloader(expected_sha256: str, progress: bool):
    """pooch's HTTP downloader, reporting a broken-off transfer with the hash of what arrived."""
    import pooch
    import requests

    class Downloader(pooch.HTTPDownloader):
        def __call__(self, url, output_file, pooch_, check_only=False):
            try:
                return super().__call__(url, output_file, pooch_, check_only=check_only)
            except requests.exceptions.RequestException as e:
                partial = Path(output_file) if isinstance(output_file, (str, Path)) else None
                if partial is None or not partial.is_file() or partial.stat().st_size == 0:
                    raise
                received = partial.read_bytes()
                raise TruncatedDownload(
                    f"truncated: the transfer broke off after {len(received)} bytes "
                    f"(SHA-256 {hashlib.sha256(received).hexdigest()}, expected "
                    f"{expected_sha256}; {type(e).__name__}); refused"
                ) from e

    return Downloader(progressbar=progress)


def _reason(e: Exception, name: str) -> str:
    """One short phrase for why a download failed."""
    message = str(e)
    if isinstance(e, TruncatedDownload):
        return f"{name} {message}"
    mismatch = re.search(r"expected sha256:(\w+) but got (\w+)", message, re.IGNORECASE)
    if mismatch:
        return (
            f"corrupt or truncated: {name} has SHA-256 {mismatch.group(2)}, expected "
            f"{mismatch.group(1)}; refused"
        )
    response = getattr(e, "response", None)
    if getattr(response, "status_code", None) is not None:
        return f"HTTP {response.status_code} {response.reason or ''}".strip()
    errno = re.search(r"\[Errno -?\d+\][^'\")\]]*", message)
    if errno:
        return f"{type(e).__name__}: {errno.group(0).strip()}"
    return f"{type(e).__name__}: {message[:200]}"
