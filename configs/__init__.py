"""Experiment configs: one file per experiment, each with `get_config(arg=None)`.

Run one with `python -m experiments.train --config=NAME[:ARGS]`, e.g. `--config=l2_noise:smoke`.
"""
