"""Resume bundles: a run's newest checkpoint in one small portable file, to continue it elsewhere.

Workdirs do not survive a Colab session, a wiped machine or a move to a laptop; a bundle does
(commit it to git, copy it anywhere). `write` packs the newest readable checkpoint of a workdir
into a numpy `.npz` (no pickle): every train-state leaf by its key path (params, optimiser
state, rng, step, the pool), the config as JSON, `metrics.jsonl`, `config_changes.jsonl` and
`sessions.jsonl`, and the params of each milestone checkpoint (steps at multiples of
`keep_every`). `restore` unpacks it into a fresh workdir as ordinary Orbax checkpoints, so the
usual train command continues the run: with the pool carried, exactly as an uninterrupted run
would (bit for bit); milestones come back as params-only checkpoints that
`checkpoint.load_params(workdir, step)` reads.

Nothing here knows a system. A state's pool is its top-level fields named `pool*` (the
self-classifying CA: `pool_states`, `pool_labels`; MetaNCA: `pools`). Arrays are stored
losslessly: large ones as their non-zero cells (a mask per group of channels with the same
zero pattern, values split into byte planes, exact multiples of 1/255 as uint8) when that is
smaller, every encoding checked bit for bit against the original before it is written. A pool
over the size budget (or `drop_pool`) is left out: the run then continues with the initial
state's pool, which is not bit-exact, and the bundle, the restore and `bundle_history.jsonl` of
the workdir say so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import socket
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from nca import checkpoint, loop
from nca import workdir as workdir_lib
from nca.config import ConfigError

FORMAT = "nca-resume-bundle"
VERSION = 1
HISTORY_FILE = "bundle_history.jsonl"
CARRIED_FILES = (
    workdir_lib.METRICS_FILE,
    "config_changes.jsonl",
    workdir_lib.SESSIONS_FILE,
    HISTORY_FILE,
)
DEFAULT_MAX_BYTES = 4_000_000  # a pool that would make the bundle larger is left out
SPARSE_MIN_SIZE = 4096  # arrays with fewer elements are stored as they are


class BundleError(checkpoint.CheckpointError):
    """A bundle that cannot be written, read or restored; the message says why."""


# --------------------------------------------------------------------------------------------
# Lossless array encodings


def encode_array(x: np.ndarray) -> tuple[dict, dict[str, np.ndarray]]:
    """`x` -> (a JSON-able spec, named parts) that `decode_array` turns back into `x` bit for bit.

    Large arrays of 2+ dims whose last axis holds channels are tried as non-zero cells
    (`_encode_sparse`); that is kept only if it decodes to exactly `x` and deflates smaller.
    """
    x = np.asarray(x)
    if x.dtype == object or x.dtype.kind not in "biuf":
        raise BundleError(f"cannot store an array of dtype {x.dtype} in a bundle.")
    raw = ({"encoding": "raw"}, {"data": x})
    if x.ndim < 2 or x.size < SPARSE_MIN_SIZE or x.dtype.itemsize not in (1, 2, 4, 8):
        return raw
    spec, parts = _encode_sparse(x)
    decoded = decode_array({**spec, "shape": list(x.shape), "dtype": x.dtype.str}, parts)
    if decoded.tobytes() != x.tobytes() or _deflated(parts) >= _deflated({"data": x}):
        return raw
    return spec, parts


def decode_array(spec: dict, parts: dict[str, np.ndarray]) -> np.ndarray:
    """The array that `encode_array` stored (`spec` also holds `shape` and `dtype`)."""
    shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
    if spec["encoding"] == "raw":
        x = parts["data"]
    elif spec["encoding"] == "sparse":
        x = _decode_sparse(spec, parts, shape, dtype)
    else:
        raise ValueError(f"unknown encoding {spec['encoding']!r}")
    if x.shape != shape or x.dtype != dtype:
        raise ValueError(f"decoded {x.dtype}{list(x.shape)}, expected {dtype}{list(shape)}")
    return x


def _encode_sparse(x: np.ndarray) -> tuple[dict, dict[str, np.ndarray]]:
    """Cells `x[..., :]` as masks and values: the channels (last axis) are grouped by their
    non-zero pattern; each group keeps one mask and its non-zero values, as byte planes (or
    uint8 when every value is exactly k / 255, as MNIST grey levels are). Zeros with the sign
    bit set (-0.0) are kept in a mask of their own."""
    uint = np.dtype(f"u{x.dtype.itemsize}")
    bits = x.view(uint).reshape(-1, x.shape[-1])
    is_float = x.dtype.kind == "f"
    sign = uint.type(1 << (8 * uint.itemsize - 1))
    magnitude = bits & uint.type(~sign) if is_float else bits
    nonzero = magnitude != 0
    groups: dict[bytes, list[int]] = {}
    for c in range(bits.shape[1]):
        groups.setdefault(np.packbits(nonzero[:, c]).tobytes(), []).append(c)
    spec, parts = {"encoding": "sparse", "groups": []}, {}
    for g, columns in enumerate(groups.values()):
        mask = nonzero[:, columns[0]]
        values = np.ascontiguousarray(bits[mask][:, columns].T)  # (channels, cells)
        parts[f"mask{g}"] = np.packbits(mask)
        grey = _as_grey_levels(values.view(x.dtype)) if is_float else None
        if grey is not None:
            parts[f"grey{g}"] = grey
        else:  # byte planes: the high (sign, exponent) bytes deflate well on their own
            parts[f"planes{g}"] = np.ascontiguousarray(
                values.view(np.uint8).reshape(*values.shape, uint.itemsize).transpose(2, 0, 1)
            )
        spec["groups"].append({"columns": columns, "grey": grey is not None})
    if is_float and np.any(bits == sign):
        parts["negative_zero"] = np.packbits(bits == sign)
    return spec, parts


def _as_grey_levels(values: np.ndarray) -> np.ndarray | None:
    """`values` as uint8 k with `k / 255 == values` exactly (float32 division), else None."""
    if values.dtype != np.float32 or not np.all(np.isfinite(values)):
        return None
    levels = np.rint(values * 255)
    if values.size and (levels.min() < 0 or levels.max() > 255):
        return None
    levels = levels.astype(np.uint8)
    if (levels.astype(np.float32) / np.float32(255)).tobytes() != values.tobytes():
        return None
    return levels


def _decode_sparse(spec, parts, shape, dtype) -> np.ndarray:
    uint = np.dtype(f"u{dtype.itemsize}")
    channels = shape[-1]
    rows = int(np.prod(shape[:-1]))
    bits = np.zeros((rows, channels), uint)
    if "negative_zero" in parts:
        negative = np.unpackbits(parts["negative_zero"], count=rows * channels).astype(bool)
        bits[negative.reshape(rows, channels)] = uint.type(1 << (8 * uint.itemsize - 1))
    for g, group in enumerate(spec["groups"]):
        mask = np.unpackbits(parts[f"mask{g}"], count=rows).astype(bool)
        columns = group["columns"]
        if group["grey"]:
            values = (parts[f"grey{g}"].astype(np.float32) / np.float32(255)).view(uint)
        else:
            planes = parts[f"planes{g}"]
            values = np.ascontiguousarray(planes.transpose(1, 2, 0)).view(uint)[..., 0]
        if values.shape != (len(columns), mask.sum()):
            raise ValueError(f"group {g} holds {values.shape} values for {mask.sum()} cells")
        sub = bits[mask]
        sub[:, columns] = values.T
        bits[mask] = sub
    return bits.view(dtype).reshape(shape)


def _deflated(parts: dict[str, np.ndarray]) -> int:
    return sum(len(zlib.compress(np.ascontiguousarray(p).tobytes(), 6)) for p in parts.values())


# --------------------------------------------------------------------------------------------
# Trees by key path


def _key_name(key) -> str:
    for attribute in ("key", "name", "idx"):  # DictKey / FlattenedIndexKey, GetAttrKey, SeqKey
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    raise BundleError(f"unsupported pytree key {key!r}")


def leaves_by_path(tree: Any) -> dict[str, Any]:
    """`{"params/hidden/bias": leaf, "opt_state/1/0/mu/...": leaf, ...}`: the same names for a
    live train state (dataclass, named tuples) and for the dicts and lists Orbax restores."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key_name(k) for k in path): leaf for path, leaf in flat}


def is_pool(path: str) -> bool:
    return path.split("/", 1)[0].startswith("pool")


def fill(template: Any, leaves: dict[str, np.ndarray], what: str) -> Any:
    """`template` (a live pytree) with every leaf replaced by `leaves[path]`, placed like the
    template's leaf; `BundleError` listing missing, extra or misshapen leaves."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = ["/".join(_key_name(k) for k in path) for path, _ in flat]
    problems = [f"no {n}" for n in names if n not in leaves]
    problems += [f"unexpected {n}" for n in leaves if n not in names]
    out = []
    for name, (_, leaf) in zip(names, flat, strict=True):
        value = leaves.get(name)
        if value is None:
            continue
        want = (tuple(np.shape(leaf)), np.dtype(leaf.dtype))
        if (value.shape, value.dtype) != want:
            problems.append(f"{name} is {value.dtype}{list(value.shape)}, the config makes "
                            f"{want[1]}{list(want[0])}")  # fmt: skip
            continue
        sharding = getattr(leaf, "sharding", None)
        out.append(jax.device_put(value, sharding) if sharding is not None else value)
    if problems:
        more = f"; and {len(problems) - 6} more" if problems[6:] else ""
        shown = "; ".join(problems[:6]) + more
        raise BundleError(f"the {what} does not fit the train state its config builds ({shown}).")
    return treedef.unflatten(out)


# --------------------------------------------------------------------------------------------
# The file


@dataclasses.dataclass
class Bundle:
    """A read bundle. meta: the JSON header (step, config, pool, milestones, source, ...);
    state: leaf path -> array (no pool leaves if it was left out); milestones: step ->
    {path: array} of params; files: name -> text of the carried workdir files."""

    path: Path
    meta: dict
    state: dict[str, np.ndarray]
    milestones: dict[int, dict[str, np.ndarray]]
    files: dict[str, str]

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    @property
    def config(self) -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(self.meta["config"])

    @property
    def pool_carried(self) -> bool:
        return bool(self.meta["pool"]["carried"])


def _pack(leaves: dict[str, np.ndarray], prefix: str, members: dict) -> list[dict]:
    specs = []
    for i, (path, value) in enumerate(leaves.items()):
        spec, parts = encode_array(np.asarray(value))
        name = f"{prefix}{i}"
        for part, array in parts.items():
            members[f"{name}.{part}"] = array
        specs.append({"path": path, "member": name, "shape": list(np.shape(value)),
                      "dtype": np.asarray(value).dtype.str, **spec})  # fmt: skip
    return specs


def _unpack(specs: list[dict], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for spec in specs:
        prefix = spec["member"] + "."
        parts = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        out[spec["path"]] = decode_array(spec, parts)
    return out


def _text(array: np.ndarray) -> str:
    return array.tobytes().decode("utf-8")


def _bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), np.uint8)


def _write_zip(path: Path, members: dict[str, np.ndarray]) -> int:
    """Writes `members` as an `.npz` (deflated, synced to disk); returns its size in bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, array in members.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    return path.stat().st_size


def read(path: str | Path) -> Bundle:
    """Reads and fully decodes a bundle; `BundleError` (one line) if it is missing, truncated,
    corrupt (zip checksums), of another format or version, or inconsistent."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"no bundle at {path}.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}  # reads all: checks every CRC
        meta = json.loads(_text(arrays.pop("meta")))
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, not {FORMAT!r}")
        if meta.get("version", 0) > VERSION:
            raise ValueError(f"version {meta['version']}: written by newer code (reads {VERSION})")
        state = _unpack(meta["leaves"], arrays)
        milestones = {int(m["step"]): _unpack(m["leaves"], arrays) for m in meta["milestones"]}
        files = {name: _text(arrays[member]) for name, member in meta["files"].items()}
        if set(files) - set(CARRIED_FILES):
            raise ValueError(f"unexpected files {sorted(set(files) - set(CARRIED_FILES))}")
        if int(np.asarray(state["step"])) != int(meta["step"]):
            raise ValueError(f"its state is at step {int(state['step'])}, its header says "
                             f"{meta['step']}")  # fmt: skip
    except BundleError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile, zlib, numpy and json raise many kinds
        raise BundleError(
            f"{path} is not a readable resume bundle ({type(e).__name__}: "
            f"{checkpoint._first_line(e) or 'damaged'}). It is truncated or corrupt, or not a "
            f"bundle: write it again from the run's workdir."
        ) from None
    return Bundle(path, meta, state, milestones, files)


# --------------------------------------------------------------------------------------------
# Writing


def write(
    workdir: str | Path,
    out: str | Path,
    *,
    drop_pool: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    keep_every: int | None = None,
    log=print,
) -> dict:
    """Writes the bundle of `workdir`'s newest readable checkpoint to `out` (atomically).

    Milestones: the params of every checkpoint at a multiple of `keep_every` (default: the
    config's), and those an older bundle of the same run at `out` carried or was at (so
    milestones that retention or a session boundary removed from the workdir stay). The pool
    is left out with `drop_pool`, or when the bundle would exceed `max_bytes` with it. Returns a
    summary dict.
    """
    workdir, out = Path(workdir), Path(out)
    config, state, step = checkpoint.load_state(workdir, log=log)
    previous = _previous_bundle(out, config, step)
    leaves = {k: np.asarray(v) for k, v in leaves_by_path(state).items()}
    pool = {k: v for k, v in leaves.items() if is_pool(k)}
    core = {k: v for k, v in leaves.items() if not is_pool(k)}

    keep_every = keep_every if keep_every is not None else config.get("keep_every") or 0
    milestones = dict(previous.milestones) if previous is not None else {}
    if previous is not None and keep_every and previous.step % keep_every == 0:
        milestones[previous.step] = {k: v for k, v in previous.state.items()
                                     if k.startswith("params/")}  # fmt: skip
    for s in checkpoint.all_steps(workdir) if keep_every else []:
        if s % keep_every == 0 and s < step and s not in milestones:
            _, params, _ = checkpoint.load_params(workdir, s, log=log)
            flat = leaves_by_path(params)
            milestones[s] = {f"params/{k}": np.asarray(v) for k, v in flat.items()}
    milestones = {s: p for s, p in sorted(milestones.items()) if s < step}

    files = {}
    for name in CARRIED_FILES:
        if (workdir / name).is_file():
            text = (workdir / name).read_text()
            files[name] = _rows_up_to(text, step) if name == workdir_lib.METRICS_FILE else text

    def members(with_pool: bool, pool_note: str) -> dict[str, np.ndarray]:
        m: dict[str, np.ndarray] = {}
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "step": step,
            "config": config.to_dict(),
            "pool": {"carried": with_pool, "paths": sorted(pool), "note": pool_note},
            "exact": with_pool or not pool,
            "leaves": _pack({**core, **(pool if with_pool else {})}, "leaf", m),
            "milestones": [{"step": s, "leaves": _pack(p, f"m{s}_", m)}
                           for s, p in milestones.items()],  # fmt: skip
            "files": {},
            "source": {"workdir": str(workdir.resolve()), "host": socket.gethostname(),
                       "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        }  # fmt: skip
        for i, (name, text) in enumerate(files.items()):
            m[f"file{i}"] = _bytes(text)
            meta["files"][name] = f"file{i}"
        m["meta"] = _bytes(json.dumps(meta))
        return m

    pool_raw = sum(v.nbytes for v in pool.values())
    with_pool = bool(pool) and not drop_pool and pool_raw <= 20 * max_bytes
    note = ""
    if pool and drop_pool:
        note = "left out on request (--no_pool)"
    elif pool and not with_pool:
        note = f"left out: {pool_raw / 1e6:.1f} MB raw, far over the {max_bytes / 1e6:g} MB budget"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:  # written beside `out`, read back and checked, then renamed over it
        size = _write_zip(tmp, members(with_pool, note))
        if with_pool and size > max_bytes:
            note = (
                f"left out: with it the bundle was {size / 1e6:.2f} MB, over {max_bytes / 1e6:g} MB"
            )
            with_pool = False
            size = _write_zip(tmp, members(with_pool, note))
        written = read(tmp)  # what a restore will see, checked against what was read
        kept = {**core, **(pool if with_pool else {})}
        if any(written.state[k].tobytes() != v.tobytes() for k, v in kept.items()):
            raise BundleError(f"the bundle for {out} did not read back as written; not written.")
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if size > max_bytes:
        log(f"warning: {out} is {size / 1e6:.2f} MB without a pool, over the "
            f"{max_bytes / 1e6:g} MB budget (params and optimiser state alone).")  # fmt: skip
    return {"out": str(out), "bytes": size, "step": step, "pool_carried": with_pool,
            "pool_note": note, "exact": written.meta["exact"],
            "milestones": sorted(milestones)}  # fmt: skip


def _previous_bundle(out: Path, config, step: int) -> Bundle | None:
    """The bundle already at `out` if it is of the same run at an older or equal step (its
    milestones are kept); `BundleError` rather than replacing anything else."""
    if not out.exists():
        return None
    try:
        previous = read(out)
    except BundleError as e:
        raise BundleError(
            f"refusing to replace {out}: {e} Delete it or choose another --out."
        ) from None

    try:  # the system's own rule, as the training loop's resume applies it
        resumable = loop.resumable_rule(config)
    except (ConfigError, AttributeError):
        resumable = checkpoint.resumable
    changes = checkpoint.config_differences(previous.meta["config"], config)
    refused = {k: v for k, v in changes.items() if not resumable(k, *v, step)}
    if refused:
        listing = "; ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in list(refused.items())[:4])
        raise BundleError(f"refusing to replace {out}: it is a bundle of another run "
                          f"({listing}). Choose another --out.")  # fmt: skip
    if previous.step > step:
        raise BundleError(f"refusing to replace {out}: it holds step {previous.step} of this "
                          f"run, newer than the workdir's checkpoint {step}.")  # fmt: skip
    return previous


def _rows_up_to(metrics_text: str, step: int) -> str:
    kept = []
    for line in metrics_text.splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
    return "".join(kept)


# --------------------------------------------------------------------------------------------
# Restoring


def initial_state(config: ml_collections.ConfigDict) -> Any:
    """The fresh train state (on devices) that training `config` starts from: the structure a
    bundle is restored into, and the pool a bundle without one continues with."""
    try:
        system = loop.system_module(config.model.get("kind"))
    except ConfigError as e:
        raise BundleError(f"the bundle names no system this code trains: {e}") from e
    return system.make_trainer(config, loop.make_mesh()).init_state


def restore(path: str | Path, workdir: str | Path, mnist_dir: str | None = None, log=print) -> dict:
    """Unpacks the bundle at `path` into `workdir`, which must have no checkpoint: the state as
    checkpoint `step`, milestones as params-only checkpoints, the config and carried files.
    Everything is read and checked before the workdir is touched. Returns a summary dict (with
    the read `Bundle` under "bundle" and the config written under "config").

    `mnist_dir` replaces the config's data folder (another machine's folder, where it does not
    exist here, is replaced by "": the usual search)."""
    bundle = read(path)
    workdir = Path(workdir)
    config = bundle.config
    data = config.get("data")
    if data is not None and "mnist_dir" in data:
        if mnist_dir is not None:
            data.mnist_dir = mnist_dir
        elif data.mnist_dir and not Path(data.mnist_dir).is_dir():
            log(f"the bundle's data.mnist_dir {data.mnist_dir} is not here; searching the usual "
                f"places instead (give --mnist_dir=DIR to choose).")  # fmt: skip
            data.mnist_dir = ""
    # The structure to restore into. The sources of a fresh run's params (a fine-tune's
    # `init_from`, maybe a workdir of another session) decide nothing the bundle does not replace.
    template = initial_state(loop.without_fresh_run_sources(config))
    leaves = dict(bundle.state)
    if not bundle.pool_carried:
        leaves.update({k: np.asarray(v) for k, v in leaves_by_path(template).items() if is_pool(k)})
    state = fill(template, leaves, f"bundle {bundle.path.name}")
    params_template = {"params": template.params}
    milestones = [(s, fill(params_template, p, f"milestone {s} of {bundle.path.name}"))
                  for s, p in bundle.milestones.items()]  # fmt: skip

    _refuse_used_workdir(workdir)
    workdir_lib.prepare(workdir)
    with workdir_lib.lock(workdir, log=log):
        _refuse_used_workdir(workdir)
        staging = workdir / f".bundle_restore-{os.getpid()}"
        try:
            checkpoint.write_checkpoints(staging, [*milestones, (bundle.step, state)], config)
            os.replace(checkpoint.checkpoint_dir(staging), checkpoint.checkpoint_dir(workdir))
        finally:
            _remove_tree(staging)
        history = bundle.files.get(HISTORY_FILE, "")
        row = {"step": bundle.step, "bundle": bundle.path.name, "restored": time.time(),
               "written": bundle.meta["source"]["written"], "pool_carried": bundle.pool_carried,
               "exact": bundle.meta["exact"], "pool_note": bundle.meta["pool"]["note"]}  # fmt: skip
        files = {**bundle.files, HISTORY_FILE: history + json.dumps(row) + "\n"}
        for name, text in files.items():
            _write_text(workdir / name, text)
        checkpoint.write_config_json(workdir, config)
    return {"workdir": str(workdir), "step": bundle.step, "pool_carried": bundle.pool_carried,
            "exact": bundle.meta["exact"], "pool_note": bundle.meta["pool"]["note"],
            "milestones": sorted(bundle.milestones), "bundle": bundle,
            "config": config}  # fmt: skip


def _refuse_used_workdir(workdir: Path) -> None:
    if checkpoint.all_steps(workdir) or any(checkpoint.checkpoint_dir(workdir).glob("*")):
        raise BundleError(
            f"{workdir} already has checkpoints; a bundle is restored into a fresh workdir only "
            f"(nothing was changed). To continue that workdir, run the train command on it."
        )


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        child.rmdir() if child.is_dir() and not child.is_symlink() else child.unlink()
    path.rmdir()


# --------------------------------------------------------------------------------------------
# Reports


def continue_command(config: ml_collections.ConfigDict, workdir: str | Path) -> str:
    """The train command that continues a restored run: its config name plus `--config.x=...`
    for every field its config differs in from what that name gives today."""
    from nca.config import ConfigError, load_config  # noqa: PLC0415

    name = config.get("name") or "CONFIG"
    command = f"python -m experiments.train --config={name} --workdir={workdir}"
    try:
        current = load_config(name)
    except ConfigError:
        return command + "  (with the config the run was trained with)"
    skip = {"name", *loop.FRESH_RUN_SOURCES}  # a resumed run has the params they name already
    for field, (saved, now) in checkpoint.config_differences(config.to_dict(), current).items():
        if field in skip or saved is None or now is None:
            continue
        if isinstance(saved, list):
            value = "(" + ",".join(repr(v) for v in saved) + ("," if len(saved) == 1 else "") + ")"
        else:
            value = saved if isinstance(saved, str) else repr(saved)
        command += f" --config.{field}={shlex.quote(value)}"
    return command


def describe(bundle: Bundle) -> str:
    """A few lines on what a bundle holds."""
    meta = bundle.meta
    pool = "carried (bit-exact continuation)" if bundle.pool_carried else (
        f"NOT carried ({meta['pool']['note']}): the run continues with a fresh pool, not "
        f"bit-exact" if meta["pool"]["paths"] else "none (this system has no pool)")  # fmt: skip
    kinds = sorted({s["encoding"] for s in meta["leaves"]})
    return "\n".join([
        f"{bundle.path} ({bundle.path.stat().st_size / 1e6:.2f} MB): {meta['config'].get('name')}"
        f" at step {bundle.step} of {meta['config'].get('num_train_steps')}",
        f"  written {meta['source']['written']} on {meta['source']['host']} from "
        f"{meta['source']['workdir']}",
        f"  state: {len(meta['leaves'])} leaves ({', '.join(kinds)}); pool: {pool}",
        f"  milestones (params): {sorted(bundle.milestones) or 'none'}",
        f"  files: {', '.join(bundle.files) or 'none'}",
    ])  # fmt: skip
