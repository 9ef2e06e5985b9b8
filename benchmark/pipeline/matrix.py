"""Deprecated alias: use :func:`benchmark.config.load_params` and :mod:`benchmark.matrix`.

Kept only until ``benchmark/commands/tune.py`` imports ``load_params`` from
``benchmark.config``; then this package goes.
"""
from benchmark.config import load_params  # noqa: F401
from benchmark.matrix import (combos, data_kind, data_source, profile, run_split,  # noqa: F401
                              runs)
