"""Resolving config names (`l2_noise:smoke`) against the `configs/` package."""

from __future__ import annotations

import importlib.util
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
