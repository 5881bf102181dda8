"""Workdir housekeeping: writability, one writer at a time, and metrics that survive resumes."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

LOCK_FILE = ".lock"
METRICS_FILE = "metrics.jsonl"
SESSIONS_FILE = "sessions.jsonl"  # one row per start or resume: step, devices, JAX version


class WorkdirError(RuntimeError):
    """A workdir that cannot be written, or is in use by another run."""


def prepare(workdir: Path) -> None:
    """Creates `workdir` and checks that it can be written."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_test_{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise WorkdirError(f"cannot write to workdir {workdir}: {e.strerror or e}.") from e


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def lock(workdir: Path, log=print):
    """Holds `workdir/.lock` (pid, host, start time) while a run writes to the workdir.

    A second run refuses with the first one's pid and host. A lock left by a process that no
    longer runs on this host (killed, machine rebooted) is stale and taken over.
    """
    path = workdir / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
            except (OSError, ValueError):
                holder = {}
            if holder.get("host") == me["host"] and not _pid_alive(int(holder.get("pid", -1))):
                log(f"removing stale lock {path} of pid {holder.get('pid')}, which is not running.")
                path.unlink(missing_ok=True)
                continue
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
            raise WorkdirError(
                f"workdir {workdir} is in use by pid {holder.get('pid')} on host "
                f"{holder.get('host')} (since {since}). Wait for that run to end, or, if it is "
                f"gone, delete {path}."
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if json.loads(path.read_text()).get("pid") == me["pid"]:
                path.unlink()


def trim_metrics(workdir: Path, last_step: int) -> None:
    """Drops metrics rows after `last_step` (logged by a run that died before its next
    checkpoint; the resumed run logs those steps again), so no step is counted twice."""
    path = workdir / METRICS_FILE
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            row = json.loads(line)
        except ValueError:  # a line torn by a kill mid-write
            continue
        if row["step"] <= last_step:
            kept.append(line if line.endswith("\n") else line + "\n")
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def record_session(workdir: Path, step: int, **facts) -> None:
    """Appends where training (re)starts at `step` to sessions.jsonl, with `facts` (the devices
    and JAX version, which decide the random numbers and the last bits of what follows)."""
    row = {"step": step, "time": time.time(), "host": socket.gethostname(), **facts}
    with open(workdir / SESSIONS_FILE, "a") as f:
        f.write(json.dumps(row) + "\n")


def record_config_changes(workdir: Path, step: int, changes: dict) -> None:
    """Appends the config fields a resumed run changed (e.g. log_every) to config_changes.jsonl."""
    row = {"step": step, "time": time.time(), "changes": {k: list(v) for k, v in changes.items()}}
    with open(workdir / "config_changes.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
