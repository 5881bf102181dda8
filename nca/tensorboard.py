"""TensorBoard event files in a workdir, written without TensorFlow (tensorboardX).

`<workdir>/tensorboard/` holds the scalars of `metrics.jsonl` (`train/loss`, `train/grad_norm`,
`train/lr`, `train/iterations_per_sec`, ...) and the summaries evaluations add (`eval/...`), so
`tensorboard --logdir workdirs/` shows every run. Each training segment (a first run, each resume)
writes its own event file; TensorBoard reads all of a folder's files as one run.

A run that dies between checkpoints has logged steps its resumed run logs again. As
`nca.workdir.trim_metrics` does for `metrics.jsonl`, `trim(workdir, step)` first drops the events
after the resumed checkpoint from every event file, so each step appears once, whatever reads the
files. Event files are TFRecord files of `Event` protos (the format TensorBoard reads); `read`
parses them with the protos tensorboardX ships.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

SUBDIR = "tensorboard"
_EVENT_FILE_MARK = "tfevents"


def logdir(workdir: str | os.PathLike) -> Path:
    """The workdir's TensorBoard folder."""
    return Path(workdir) / SUBDIR


class ScalarWriter:
    """Appends scalars to one new event file in `directory` (made on the first write)."""

    def __init__(self, directory: Path, filename_suffix: str):
        self.directory = directory
        self.filename_suffix = filename_suffix
        self._writer = None

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        """One point per scalar at `step`, flushed to disk at once."""
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self.directory.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(self.directory), filename_suffix=self.filename_suffix)
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, float(value), global_step=int(step))
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _NoWriter:
    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        pass


@contextlib.contextmanager
def writer(workdir: str | os.PathLike, start_step: int = 0, *, enabled: bool = True):
    """A `ScalarWriter` for one training segment starting after `start_step` (a no-op writer
    when not `enabled`, e.g. on processes other than 0)."""
    if not enabled:
        yield _NoWriter()
        return
    w = ScalarWriter(logdir(workdir), _unique_suffix(f"from{start_step}"))
    try:
        yield w
    finally:
        w.close()


def write_summary(workdir: str | os.PathLike, step: int, scalars: Mapping[str, float]) -> None:
    """Writes `scalars` at `step` (e.g. an evaluation of checkpoint `step`), replacing points of
    the same tags at the same step from an earlier call, so re-running it adds no duplicates."""
    tags = set(scalars)
    _rewrite(
        logdir(workdir),
        lambda event: not (event.step == step and {v.tag for v in event.summary.value} & tags),
    )
    w = ScalarWriter(logdir(workdir), _unique_suffix("summary"))
    try:
        w.write(step, scalars)
    finally:
        w.close()


def _unique_suffix(what: str) -> str:
    # tensorboardX names a file by the second and host only and would overwrite a namesake.
    return f".{what}.{os.getpid()}.{time.time_ns()}"


def trim(workdir: str | os.PathLike, last_step: int) -> None:
    """Drops the events after `last_step` from every event file of the workdir (those of a run
    that died before its next checkpoint; the resumed run writes those steps again)."""
    _rewrite(logdir(workdir), lambda event: event.step <= last_step)


def event_files(directory: str | os.PathLike) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _EVENT_FILE_MARK in p.name and p.is_file())


def read(path: str | os.PathLike) -> list[tuple[str, int, float]]:
    """`(tag, step, value)` of every scalar in an event file, or in all event files of a folder
    (file by file, in name order)."""
    path = Path(path)
    files = event_files(path) if path.is_dir() else [path]
    return [
        (v.tag, event.step, v.simple_value)
        for f in files
        for _, event in _records(f.read_bytes())
        for v in event.summary.value
    ]


def _records(raw: bytes) -> Iterator[tuple[bytes, object]]:
    """(the record's bytes as stored, the parsed Event) for each whole record; a record torn by a
    kill mid-write ends the file."""
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    offset = 0
    while offset + 12 <= len(raw):
        header = raw[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", raw[offset + 8 : offset + 12])
        end = offset + 12 + length + 4
        if header_crc != masked_crc32c(header) or end > len(raw):
            return
        data = raw[offset + 12 : offset + 12 + length]
        if struct.unpack("<I", raw[end - 4 : end])[0] != masked_crc32c(data):
            return
        event = event_pb2.Event()
        event.ParseFromString(data)
        yield raw[offset:end], event
        offset = end


def _rewrite(directory: Path, keep: Callable[[object], bool]) -> None:
    """Keeps only the events `keep` accepts in each event file of `directory`; a file left with
    no scalars is removed. Each file is replaced atomically (a temporary file, then a rename)."""
    for path in event_files(directory):
        raw = path.read_bytes()
        records = list(_records(raw))
        kept = [(record, event) for record, event in records if keep(event)]
        if len(kept) == len(records) and sum(len(r) for r, _ in records) == len(raw):
            continue  # nothing to drop, nothing torn
        if not any(event.summary.value for _, event in kept):
            path.unlink()
            continue
        tmp = directory / f".rewrite-{os.getpid()}.tmp"
        tmp.write_bytes(b"".join(record for record, _ in kept))
        os.replace(tmp, path)
