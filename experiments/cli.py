"""What every entry point shares: bare config names, and one clear line for expected errors."""

from __future__ import annotations

import sys
from pathlib import Path

from nca.checkpoint import CheckpointError
from nca.config import ConfigError, resolve_config_path
from nca.data import DataError
from nca.loop import TrainingError
from nca.workdir import WorkdirError


class InputError(ValueError):
    """A bad command-line input that no library error covers."""


MNIST_TEST_DIGITS = 10_000  # the size of the MNIST test split: the most `--num_digits` can take


def require_positive(name: str) -> None:
    """Flag `name` (a float) must be > 0 (absl's `lower_bound` admits the bound itself)."""
    from absl import flags

    flags.register_validator(name, lambda v: v is None or v > 0, message="must be > 0")


def require_int_list(name: str, lower_bound: int) -> None:
    """Flag `name` (a list) must hold integers >= `lower_bound`."""
    from absl import flags

    def valid(values) -> bool:
        try:
            return all(int(v) >= lower_bound for v in values or [])
        except ValueError:
            return False

    flags.register_validator(
        name, valid, message=f"must be a comma-separated list of integers >= {lower_bound}"
    )


def require_fits(names: tuple[str, ...], fits, message: str) -> None:
    """Flags `names` together must satisfy `fits(values_by_name)`; checked at parse time."""
    from absl import flags

    flags.register_multi_flags_validator(list(names), fits, message=message)


EXPECTED_ERRORS = (CheckpointError, ConfigError, DataError, InputError, TrainingError, WorkdirError)


def reject_positional(argv: list[str]) -> None:
    if len(argv) > 1:
        raise InputError(f"unexpected arguments {argv[1:]}; flags look like --name=value.")


def resolve_config_argv(argv: list[str]) -> list[str]:
    """Rewrites `--config=NAME[:ARGS]` (or `--config NAME`) to the config file's path, which
    `ml_collections.config_flags` expects; `--config.x=...` overrides pass through unchanged."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            argv[i] = "--config=" + resolve_config_path(arg.split("=", 1)[1])
        elif arg == "--config" and i + 1 < len(argv):
            argv[i + 1] = resolve_config_path(argv[i + 1])
    return argv


def load_models(
    workdirs: list[str] | None, model_names: list[str] | None, step: int | None = None
) -> list[dict]:
    """Every `--workdir` and `--model` (a shipped pretrained model) to work on, loaded up front so
    a bad one fails before minutes of work: dicts of label, config, params, folder (the workdir,
    or None for a pretrained model) and info (where it came from). `step`: each workdir's
    checkpoint of that training iteration instead of its newest."""
    from nca import checkpoint
    from nca.selforg_mnist import pretrained

    models = []
    for workdir in workdirs or []:
        config, params, loaded = checkpoint.load_params(workdir, step)
        models.append({"label": f"{Path(workdir).name}: {config.name} @ {loaded}",
                       "config": config, "params": params, "folder": Path(workdir),
                       "info": {"workdir": str(workdir), "checkpoint_step": loaded,
                                "config": config.get("name", ""),
                                "seed": int(config.get("seed", 0))}})  # fmt: skip
    for name in model_names or []:
        try:
            config, params = pretrained.load(name)
        except ValueError as e:
            raise InputError(str(e)) from e
        models.append({"label": f"pretrained: {name}", "config": config, "params": params,
                       "folder": None, "info": {"pretrained": name}})  # fmt: skip
    if not models:
        raise InputError("nothing to work on: give --workdir=DIR or --model=NAME.")
    for m in models:
        if m["config"].model.kind != "selforg_mnist":
            raise InputError(f"{m['label']} is a {m['config'].model.kind!r} model, not a "
                             f"self-classifying MNIST CA.")  # fmt: skip
    return models


def load_one_model(workdir: str | None, model_name: str | None, default: str | None = None):
    """The one model of a `--workdir` or a `--model` (`default` when neither is given)."""
    if workdir and model_name:
        raise InputError("give exactly one of --workdir=DIR and --model=NAME.")
    if not workdir and not (model_name or default):
        raise InputError("give --workdir=DIR or --model=NAME.")
    names = [] if workdir else [model_name or default]
    return load_models([workdir] if workdir else [], names)[0]


def load_shipped_or_workdir(value: str, step: int | None = None, flag: str = "step") -> dict:
    """A model given as a shipped name or as a workdir path (flags such as `--adversary`);
    `step`: the workdir's checkpoint of that training iteration (`flag` names it in errors)."""
    if not Path(value).is_dir():
        if step is not None:
            raise InputError(f"--{flag} needs a workdir, not the shipped model {value!r}.")
        return load_one_model(None, value)
    return load_models([value], [], step)[0]


def config_name(config_filename: str) -> str:
    """`/path/to/l2_noise.py:smoke` -> `l2_noise:smoke`."""
    path, sep, arg = config_filename.partition(":")
    return Path(path).stem + sep + arg


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with every kind of bad flag turned into one line and exit status 2."""
    from absl import flags

    try:
        return flags.FLAGS(resolve_config_argv(argv))
    except ConfigError as e:
        _fail(str(e), 2)
    except AttributeError as e:  # ml_collections: an override names a field the config lacks
        _fail(
            f"the config has no field {str(e).strip(chr(34))}; check the --config.x=... "
            f"overrides (a locked config takes no new fields).",
            2,
        )
    except (flags.Error, ValueError, TypeError, KeyError) as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        _fail(f"bad flag: {lines[-1] if lines else type(e).__name__}", 2)


def _fail(message: str, status: int = 1):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def define_cpu_devices(help_text: str) -> None:
    """The `--cpu_devices=N` flag (default 1): on a CPU, JAX gets N devices, one per core;
    `run` applies it before anything asks JAX for its devices."""
    from absl import flags

    flags.DEFINE_integer("cpu_devices", 1, help_text, lower_bound=1)


def run(main) -> None:
    """`absl.app.run(main)` with bare config names, and bad flags or expected errors (missing
    data, unusable workdir, non-finite loss, ...) reported as one line with a non-zero status."""
    from absl import app, flags

    def main_with_errors(argv):
        from absl import logging

        logging.set_verbosity(logging.ERROR)  # Orbax logs every file it writes
        if "cpu_devices" in flags.FLAGS and flags.FLAGS.cpu_devices > 1:
            import jax

            jax.config.update("jax_num_cpu_devices", flags.FLAGS.cpu_devices)
        try:
            main(argv)
        except EXPECTED_ERRORS as e:
            _fail(str(e))

    app.run(main_with_errors, flags_parser=_parse_flags)
