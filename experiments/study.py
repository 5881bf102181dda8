"""The CE / L2 / L2 + noise study: several seeds of several configs in one table, mean ± std.

    S=docs/selforg_mnist/study
    python -m experiments.study --result=$S/l2_noise_s0_100k/eval_restart.json \
        --result=$S/l2_noise_s1_100k/eval_restart.json ... --out=$S

Reads `eval_<variant>.json` files that `experiments.evaluate --workdir=...` wrote (they name the
run's config and seed) and writes `<out>/study.{md,json,png}`: per variant, each config's mean ±
standard deviation over its seeds next to the article's rows (restart protocol), every seed's
row, and the mean curves with their min-max band. Nothing is re-evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import flags

from experiments import cli
from nca import report
from nca.selforg_mnist import evaluate

_RESULTS = flags.DEFINE_multi_string("result", None, "eval_<variant>.json files, one per run.")
_OUT = flags.DEFINE_string("out", None, "Folder for study.{md,json,png}.")
flags.mark_flags_as_required(["result", "out"])


FIELDS = ("config", "seed", "variant", "steps", "num_digits", "summary", "curves")


def load(path: str) -> dict:
    """An `eval_<variant>.json` of a workdir's run, checked for what the study reads."""
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise cli.InputError(f"--result={path} is not a readable JSON file ({e}).") from e
    missing = [k for k in FIELDS if not isinstance(result, dict) or k not in result]
    if missing:
        raise cli.InputError(
            f"--result={path} lacks {', '.join(missing)}: the study needs an eval_<variant>.json "
            f"of a workdir (it names the run's config and seed); run experiments.evaluate "
            f"--workdir=DIR again."
        )
    return result


def main(argv):
    cli.reject_positional(argv)
    results = [load(path) for path in _RESULTS.value]
    steps = {r["steps"] for r in results}
    if len(steps) > 1:
        raise cli.InputError(f"the results were evaluated for different --steps ({sorted(steps)}).")
    keys = [(r["config"], r["seed"], r["variant"]) for r in results]
    if len(set(keys)) < len(keys):
        raise cli.InputError(f"two results are the same config, seed and variant: {keys}.")
    study = evaluate.study_report(results)
    report.write(Path(_OUT.value), study, dpi=110, tight=False)


if __name__ == "__main__":
    cli.run(main)
