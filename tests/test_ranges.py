"""Every number checked (issue 18): every numeric config field and command-line flag has a range,
and a value outside it stops the command with one `error:` line, a non-zero exit status and
nothing written, before anything is compiled."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nca import config as config_lib
from nca import loop
from nca.config import ConfigError
from tests.conftest import REPO_ROOT

ALL_OPTIONS = ("", "smoke", "short", "20k", "no_pool", "no_mutation", "damage", "same_matrix",
               "no_fan_in", "gate_channel", "gate_patch")  # fmt: skip


def config_variants():
    """Every config with no option, each option it accepts, and each of those with `smoke`."""
    for name in config_lib.available_configs():
        for option, smoke in itertools.product(ALL_OPTIONS, ("", ",smoke")):
            if option == "smoke" and smoke:
                continue
            spec = f"{name}:{option}{smoke}".rstrip(":").replace(":,", ":")
            try:
                yield spec, config_lib.load_config(spec)
            except ConfigError:  # an option this family does not take
                continue


VARIANTS = dict(config_variants())


def ranges_of(config):
    system = loop.system_module(config.model.kind)
    return {**config_lib.CORE_RANGES, **system.CONFIG_RANGES}


def test_every_config_variant_is_in_range_and_every_numeric_field_has_a_range():
    assert len(VARIANTS) > 40
    for spec, config in VARIANTS.items():
        loop.check_config(config)  # the shipped configs and their variants pass
        missing = set(config_lib.numeric_fields(config)) - set(ranges_of(config))
        assert not missing, f"{spec}: numeric fields without a range: {sorted(missing)}"


def out_of_range(allowed: config_lib.Range, like):
    """Values just outside `allowed`, of the type of `like` (ConfigDicts check types)."""
    cast = int if isinstance(like, int) else float
    values = []
    if allowed.low is not None:
        values.append(cast(allowed.low if allowed.low_open else allowed.low - 1))
    if allowed.high is not None:
        values.append(allowed.high if allowed.high_open else cast(allowed.high) + 0.5)
    return [v for v in values if cast(v) == v]


def with_first_entry(value, entry):
    """`value` (a number or a nested tuple of numbers) with its first number replaced."""
    if isinstance(value, (tuple, list)):
        return (with_first_entry(value[0], entry), *value[1:]) if value else (entry,)
    return entry


def first_entry(value):
    return first_entry(value[0]) if isinstance(value, (tuple, list)) and value else value


REPRESENTATIVES = (
    "l2_noise",
    "adversary_eight",
    "l2_noise_defended",
    "metanca_mnist",
    "hybrid:gate_patch",
)
CASES = [
    (spec, name, bad)
    for spec in REPRESENTATIVES
    for name, allowed in ranges_of(VARIANTS[spec]).items()
    if config_lib.field_value(VARIANTS[spec], name, None) is not None  # e.g. adversary.* only
    for bad in out_of_range(allowed, first_entry(config_lib.field_value(VARIANTS[spec], name)))
]


@pytest.mark.parametrize(("spec", "name", "bad"), CASES)
def test_a_field_out_of_range_is_rejected(spec, name, bad):
    config = config_lib.load_config(spec)
    config_lib.set_field(config, name, with_first_entry(config_lib.field_value(config, name), bad))
    with pytest.raises(ConfigError, match=rf"^config field {name}=.* is out of range: .*must be"):
        loop.check_config(config)


@pytest.mark.parametrize(
    ("spec", "fields", "match"),
    [
        ("l2_noise", {"batch_size": 32, "pool_size": 16}, "at most pool_size"),
        ("l2_noise", {"batch_size": 3}, "at least 4"),
        ("l2_noise", {"lr_boundaries": (70_000, 30_000)}, "lr_boundaries.*increasing"),
        ("metanca_iris", {"pool_size": 2, "nets_per_arch": 4}, "pool_size 2 < nets_per_arch"),
        ("hybrid", {"model.damage_step": 11}, "damage_step=11 and model.num_ca_steps=10"),
        ("hybrid:gate_patch", {"model.patch_size": 3}, "gate_out=256 and model.patch_size=3"),
    ],
)
def test_sizes_that_must_fit_each_other(spec, fields, match):
    config = config_lib.load_config(spec)
    for name, value in fields.items():
        config_lib.set_field(config, name, value)
    with pytest.raises(ConfigError, match=match):
        loop.check_config(config)


def test_range_text():
    assert str(config_lib.fraction(low_open=True)) == "in (0, 1]"
    assert str(config_lib.at_least(1)) == ">= 1"
    assert str(config_lib.positive()) == "> 0"
    assert 1.5 not in config_lib.fraction() and 0 not in config_lib.positive()


COMMANDS = sorted(
    p.stem for p in (REPO_ROOT / "experiments").glob("*.py") if p.stem not in ("__init__", "cli")
)

# Imports every command in one process (deleting each one's flags before the next, as several
# define the same names) and lists its flags: name, type, bounds, validators.
PROBE = """
import importlib, json, sys
from absl import flags
out = {}
for name in sys.argv[1:]:
    module = importlib.import_module("experiments." + name)
    own = list(flags.FLAGS.flags_by_module_dict().get(module.__name__, []))
    out[name] = [{"name": f.name, "type": f.flag_type(), "default": f.default,
                  "lower": getattr(f.parser, "lower_bound", None),
                  "upper": getattr(f.parser, "upper_bound", None),
                  "validators": len(f.validators)} for f in own]
    for f in own:
        delattr(flags.FLAGS, f.name)
print(json.dumps(out, default=str))
"""


def test_every_numeric_flag_of_every_command_has_a_range():
    out = subprocess.run([sys.executable, "-c", PROBE, *COMMANDS], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    commands = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(commands) == set(COMMANDS)
    unchecked = []
    for command, command_flags in commands.items():
        for f in command_flags:
            numeric_list = "list" in f["type"] and all(str(v).lstrip("-").isdigit()
                                                      for v in f["default"] or [])  # fmt: skip
            if f["type"] in ("int", "float") or (numeric_list and f["default"]):
                if f["lower"] is None and f["upper"] is None and not f["validators"]:
                    unchecked.append(f"{command} --{f['name']}")
    assert not unchecked, f"numeric flags without a range: {unchecked}"


# One out-of-range value per command through its real entry point (absl bounds, validators,
# config checks); every command with a numeric flag or config field is here.
BAD_RUNS = {
    "train": ["--config=l2_noise:smoke", "--workdir=out/w", "--config.model.fire_rate=1.5"],
    "train_process_id": ["--config=l2_noise:smoke", "--workdir=out/w", "--process_id=-1"],
    "train_metanca": ["--config=metanca_iris:smoke", "--workdir=out/w", "--config.pool_prob=-0.1"],
    "train_hybrid": ["--config=hybrid:smoke", "--workdir=out/w", "--config.batch_size=0"],
    "evaluate": ["--model=distill_l2_noise", "--num_digits=-5", "--out=out/e"],
    "render": ["--model=distill_l2_noise", "--every=0", "--out=out/r"],
    "render_fit": ["--model=distill_l2_noise", "--first_digit=9990", "--out=out/r"],
    "robustness": ["--model=distill_l2_noise", "--canvas=10", "--out=out/r"],
    "restore": ["--workdir=out/w", "--batch_size=0", "--out=out/r"],
    "metanca": ["--workdir=out/w", "--grid_sizes=4,0", "--out=out/m"],
    "bundle": ["--workdir=out/w", "--max_mb=-1", "--out=out/b.npz"],
    "demo": ["--model=distill_l2_noise", "--port=70000", "--export_only=out/d"],
    "sweep": ["--configs=l2_noise:smoke", "--root=out/s", "--set=model.fire_rate=0"],
    "sweep_seeds": ["--configs=l2_noise:smoke", "--root=out/s", "--seeds=0,-1"],
    "attack": ["--model=distill_l2_noise", "--target=10", "--out=out/a"],
    "attack_fractions": ["--model=distill_l2_noise", "--fractions=0.1,1.5", "--out=out/a"],
    "trainingLength": ["--workdir=out/w", "--steps=10,0", "--out=out/t"],
}


def test_every_command_with_numbers_has_a_bad_run():
    numeric = {"train", "evaluate", "render", "robustness", "restore", "metanca", "bundle",
               "demo", "sweep", "attack", "training_length"}  # fmt: skip
    assert numeric <= {k.split("_")[0].replace("trainingLength", "training_length")
                       for k in BAD_RUNS}  # fmt: skip
    assert set(COMMANDS) - numeric == {"export", "import_distill", "study"}  # no numbers to check


@pytest.mark.parametrize("case", sorted(BAD_RUNS))
def test_an_out_of_range_value_stops_the_command(case, tmp_path):
    command = case.split("_")[0].replace("trainingLength", "training_length")
    out = subprocess.run(
        [sys.executable, "-m", f"experiments.{command}", *BAD_RUNS[case]],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
    assert list(Path(tmp_path).iterdir()) == [], "something was written"
