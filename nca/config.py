"""Resolving config names (`l2_noise:smoke`) against the `configs/` package, and the ranges
config fields must lie in (`check_ranges`; the core's own fields: `CORE_RANGES`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import numbers
from pathlib import Path

import ml_collections

import configs

CONFIG_DIR = Path(configs.__file__).resolve().parent


class ConfigError(ValueError):
    """An unknown config name or option; the message lists what is available."""


def _is_config(path: Path) -> bool:
    """Config files; `common*.py` and `_*.py` hold shared pieces, not configs."""
    return path.is_file() and not path.stem.startswith(("_", "common"))


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if _is_config(p))


def resolve_config_path(spec: str) -> str:
    """`NAME[:ARGS]` or `path/to/file.py[:ARGS]` -> `/abs/path/file.py[:ARGS]`.

    This is the form `ml_collections.config_flags.DEFINE_config_file` expects.
    """
    name, sep, arg = spec.partition(":")
    path = Path(name) if name.endswith(".py") else CONFIG_DIR / f"{name}.py"
    if not _is_config(path):
        raise ConfigError(
            f"unknown config {name!r}: no file {path}. Available configs: "
            f"{', '.join(available_configs())} (options after a colon, e.g. l2_noise:smoke)."
        )
    return f"{path.resolve()}{sep}{arg}"


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Builds and locks the config named by `spec` (what `--config=spec` gives, no overrides)."""
    path, _, arg = resolve_config_path(spec).partition(":")
    module_spec = importlib.util.spec_from_file_location(f"_nca_config_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    try:
        config = module.get_config(arg or None)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    config.name = spec
    config.lock()
    return config


@dataclasses.dataclass(frozen=True)
class Range:
    """The interval a numeric config field must lie in; a tuple-valued field (`lr_boundaries`,
    `train_archs`) is checked entry by entry. `None`: unbounded on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # `low` itself is out of range
    high_open: bool = False

    def __contains__(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def accepts(self, entry) -> bool:
        """Whether one entry of a field is a number in the range (systems whose tuple fields
        also hold other entries, e.g. MetaNCA's conv layers, override this)."""
        return _is_number(entry) and entry in self

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")  # fmt: skip


def at_least(low: float) -> Range:
    return Range(low)


def positive() -> Range:
    return Range(0, low_open=True)


def fraction(low_open: bool = False, high_open: bool = False) -> Range:
    """A probability or share: in [0, 1], with either end excluded on request."""
    return Range(0, 1, low_open, high_open)


# The fields every config has (`configs.common.base_config`) and the core loop reads.
CORE_RANGES = {
    "seed": at_least(0),
    "num_train_steps": at_least(1),
    "log_every": at_least(1),
    "checkpoint_every": at_least(1),
    "max_checkpoints_to_keep": at_least(1),
    "keep_every": at_least(0),  # 0: no milestones
    "validate_every": at_least(0),  # 0 or absent: no validation (a multiple of log_every)
}


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _entries(value) -> list:
    """A field's numbers: the value itself, or the entries of a (nested) tuple."""
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in _entries(v)]
    return [value]


def numeric_fields(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """The dotted names of `config`'s numeric fields: numbers and (nested) tuples of numbers."""
    names = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            names += numeric_fields(value, f"{prefix}{key}.")
        elif _is_number(value) or (
            isinstance(value, (tuple, list)) and all(map(_is_number, _entries(value)))
        ):
            names.append(prefix + key)
    return names


def field_value(config: ml_collections.ConfigDict, name: str, default=None):
    """The value of dotted field `name` (`model.fire_rate`); `default` if the config lacks it
    (configs saved before the field existed)."""
    node = config
    for part in name.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return default
        node = node[part]
    return node


def set_field(config: ml_collections.ConfigDict, name: str, value) -> None:
    """Sets dotted field `name` (`model.fire_rate`) to `value`; `KeyError` if a section on the way
    is missing."""
    *sections, leaf = name.split(".")
    node = config
    for section in sections:
        node = node[section]
    node[leaf] = value


def check_ranges(config: ml_collections.ConfigDict, ranges: dict[str, Range]) -> None:
    """Raises `ConfigError` naming the first field of `ranges` whose value (or one of whose
    entries) lies outside its range, with the value and the range."""
    missing = object()
    for name, allowed in ranges.items():
        value = field_value(config, name, missing)
        if value is missing:
            continue
        for entry in _entries(value):
            if not allowed.accepts(entry):
                every = "every entry " if isinstance(value, (tuple, list)) else ""
                raise ConfigError(
                    f"config field {name}={value!r} is out of range: {every}must be {allowed}."
                )


def check_increasing(config: ml_collections.ConfigDict, name: str) -> None:
    """Raises `ConfigError` unless the tuple field `name` is strictly increasing."""
    value = tuple(field_value(config, name, ()))
    if any(a >= b for a, b in zip(value, value[1:], strict=False)):
        raise ConfigError(f"config field {name}={value!r} is out of order: must be increasing.")
