"""Run configuration: the typed schema (:mod:`.schema`) and its one resolver (:mod:`.resolve`)."""
from benchmark.config.resolve import (check_layer, check_params, coerce_numbers, deep_merge, dotted_to_nested,
                                      load_params, parse_set, resolve_run)
from benchmark.config.schema import (AugConfig, DataConfig, EarlyStopConfig, EmaConfig, LossConfig,
                                     OptimizerConfig, RunConfig, RuntimeConfig, ScheduleConfig)

__all__ = ["AugConfig", "DataConfig", "EarlyStopConfig", "EmaConfig", "LossConfig", "OptimizerConfig",
           "RunConfig", "RuntimeConfig", "ScheduleConfig", "check_layer", "check_params", "coerce_numbers",
           "deep_merge", "dotted_to_nested", "load_params", "parse_set", "resolve_run"]
