"""Deprecated: the pipeline glue moved into the library (``benchmark.matrix``,
``benchmark.combine``, ``benchmark.evaluation``) and the commands (``sewerbench prepare`` /
``evaluate``). Only :mod:`benchmark.pipeline.matrix` is left, for callers not yet moved;
nothing in the library imports this package."""
