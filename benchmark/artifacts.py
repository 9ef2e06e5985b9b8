"""Schemas of the artefacts the pipeline writes and reads: one definition per artefact.

Producers build these dicts through the names below and consumers read them through the
same names, so a key is spelled in one place:

* the official metrics JSON of ``sewerbench evaluate`` (``results/metrics/<run>/<split>.json``):
  the official Sewer-ML layout (:class:`MetricsJSON`) plus, with ``--bootstrap N``, the
  :data:`BOOTSTRAP` block (:class:`BootstrapBlock`);
* the binary (stage-1) metrics JSON ``binary_<split>.json`` (:class:`BinaryMetrics`);
* the paired comparison of ``benchmark.bootstrap.paired_bootstrap`` (:class:`PairedComparison`),
  written by ``sewerbench compare`` (with the input paths, :class:`CompareResult`) and, per
  ablation cell, in ``results/ablation_paired.json``; for cells with several seeds the
  two-level comparison of ``benchmark.bootstrap.paired_seed_bootstrap``
  (:class:`SeedPairedComparison`) instead;
* the train summary ``train_summary.json`` of a run folder (:class:`TrainSummary`).

Only the standard library is imported here, so every layer may use this module.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence, TypedDict

try:  # Python >= 3.11
    from typing import NotRequired
except ImportError:  # pragma: no cover
    from typing_extensions import NotRequired

# ----------------------------------------------------------------------------- file names
#: Scores CSV of a run folder per evaluation set: ``scores_val.csv``, ``scores_val_sub.csv``,
#: ``scores_test.csv``.
SCORES_FILE = "scores_{name}.csv"
#: Official metrics JSON per evaluation set in a metrics folder (``val.json`` ...).
METRICS_FILE = "{name}.json"
#: Metrics JSON of a binary (Filename,Defect) scores file.
BINARY_METRICS_FILE = "binary_{name}.json"
#: Per-epoch history and train summary of a run folder (copied beside the metrics).
HISTORY_FILE = "history.csv"
TRAIN_SUMMARY_FILE = "train_summary.json"
#: The resolved configuration of a run folder.
CONFIG_FILE = "config.json"
#: The paired bootstrap of every ablation cell against its reference (``sewerbench tables``).
ABLATION_PAIRED_FILE = "ablation_paired.json"

#: Evaluation sets, in the order they are evaluated and read: the full val set, the run's own
#: (subset) val set, the test set.
EVAL_VAL, EVAL_VAL_SUB, EVAL_TEST = "val", "val_sub", "test"
EVAL_SETS: tuple[str, ...] = (EVAL_VAL, EVAL_VAL_SUB, EVAL_TEST)


def scores_file(name: str) -> str:
    return SCORES_FILE.format(name=name)


def metrics_file(name: str) -> str:
    return METRICS_FILE.format(name=name)


def binary_metrics_file(name: str) -> str:
    return BINARY_METRICS_FILE.format(name=name)


# ----------------------------------------------------------------------------- metrics JSON
#: Top-level keys of the official metrics JSON, in the official order ("Auxillary" is the
#: official spelling).
LABELS, LABEL_WEIGHTS, NEW, MAIN, AUXILLARY = "Labels", "LabelWeights", "New", "Main", "Auxillary"
METRICS_KEYS: tuple[str, ...] = (LABELS, LABEL_WEIGHTS, NEW, MAIN, AUXILLARY)
#: Keys of the "New" block: F2-CIW, the 18 per-class F2 (17 classes + Normal), F1-Normal.
F2, F2_CLASS, F1_NORMAL = "F2", "F2_class", "F1_Normal"
NEW_KEYS: tuple[str, ...] = (F2, F2_CLASS, F1_NORMAL)
#: Keys of the "Main" block (classic multi-label metrics), official order.
MAP = "mAP"
MAIN_KEYS: tuple[str, ...] = ("OP", "OR", "OF1", "CP", "CR", "CF1", "MF1", "mF1", "EMAcc", MAP)
#: Keys of the "Auxillary" block: per-class lists (18 entries; AP has the 17 classes).
AUX_KEYS: tuple[str, ...] = ("P_class", "R_class", "F1_class", "AP", "Np", "Nc", "Ng")


class MetricsNew(TypedDict):
    F2: float
    F2_class: list[float]
    F1_Normal: float


class MetricsMain(TypedDict):
    OP: float
    OR: float
    OF1: float
    CP: float
    CR: float
    CF1: float
    MF1: float
    mF1: float
    EMAcc: float
    mAP: float


class MetricsAuxillary(TypedDict):
    P_class: list[float]
    R_class: list[float]
    F1_class: list[float]
    AP: list[float]
    Np: list[float]
    Nc: list[float]
    Ng: list[float]


# ----------------------------------------------------------------------------- bootstrap block
#: Extra top-level key of the metrics JSON (not in the official layout) holding the bootstrap
#: CIs; present only when evaluated with ``--bootstrap N``.
BOOTSTRAP = "Bootstrap"
#: The metrics with a CI, as named in the bootstrap block and in the paired comparison
#: (F2_CIW = ``New.F2``, F1_Normal = ``New.F1_Normal``).
F2_CIW = "F2_CIW"
CI_METRICS: tuple[str, ...] = (F2_CIW, F1_NORMAL)
#: Where each CI metric's point value lives in the "New" block.
POINT_KEY: dict[str, str] = {F2_CIW: F2, F1_NORMAL: F1_NORMAL}
#: Keys of the bootstrap block, in the order written.
BOOTSTRAP_KEYS: tuple[str, ...] = (F2_CIW, F1_NORMAL, "n", "seed", "confidence", "method")
BOOTSTRAP_METHOD = "percentile bootstrap, images resampled"


class BootstrapBlock(TypedDict):
    F2_CIW: list[float]        # [lo, hi], 0-1 scale
    F1_Normal: list[float]     # [lo, hi]
    n: int                     # resamples
    seed: int
    confidence: float
    method: str


class MetricsJSON(TypedDict):
    Labels: list[str]
    LabelWeights: list[float]
    New: MetricsNew
    Main: MetricsMain
    Auxillary: MetricsAuxillary
    Bootstrap: NotRequired[BootstrapBlock]


def bootstrap_block(ci: Mapping[str, Sequence[float]], n: int, seed: int,
                    confidence: float = 0.95) -> BootstrapBlock:
    """The bootstrap block of ``ci`` (``{"F2_CIW": (lo, hi), "F1_Normal": (lo, hi)}``)."""
    return {F2_CIW: list(ci[F2_CIW]), F1_NORMAL: list(ci[F1_NORMAL]),  # type: ignore[return-value]
            "n": n, "seed": seed, "confidence": confidence, "method": BOOTSTRAP_METHOD}


def bootstrap_of(metrics: Mapping[str, Any] | None) -> dict:
    """The bootstrap block of a metrics JSON, or {} when it was evaluated without one."""
    if not metrics:
        return {}
    return dict(metrics.get(BOOTSTRAP) or {})


# ----------------------------------------------------------------------------- binary metrics
BINARY_KEYS: tuple[str, ...] = ("n", "accuracy", "precision", "recall", "F1", "AP")


class BinaryMetrics(TypedDict):
    n: int
    accuracy: float
    precision: float
    recall: float
    F1: float
    AP: float


# ----------------------------------------------------------------------------- paired comparison
#: Top-level keys of a paired comparison and keys of each of its metrics, in the order written.
PAIRED_METRICS = "metrics"
PAIRED_KEYS: tuple[str, ...] = ("n_resamples", "seed", "confidence", PAIRED_METRICS)
PAIRED_METRIC_KEYS: tuple[str, ...] = ("a", "b", "delta", "ci", "p_value")
#: Input paths ``sewerbench compare`` writes before the comparison.
COMPARE_INPUT_KEYS: tuple[str, ...] = ("a", "b", "gt")


class PairedMetric(TypedDict):
    a: float                   # metric of system a (0-1 scale)
    b: float                   # metric of system b
    delta: float               # b - a
    ci: list[float]            # percentile CI of the resampled delta, [lo, hi]
    p_value: float             # two-sided


class PairedComparison(TypedDict):
    n_resamples: int
    seed: int
    confidence: float
    metrics: dict[str, PairedMetric]   # keyed by CI_METRICS


#: Keys of the two-level (images x seeds) paired comparison, in the order written.
SEED_PAIRED_KEYS: tuple[str, ...] = ("n_resamples", "seed", "confidence", "method", "n_seeds_a",
                                     "n_seeds_b", PAIRED_METRICS)
SEED_PAIRED_METHOD = ("two-level paired bootstrap: images resampled (the same draw for both "
                      "arms), seeds resampled per arm; delta of the seed means")


class SeedPairedComparison(TypedDict):
    n_resamples: int
    seed: int
    confidence: float
    method: str
    n_seeds_a: int
    n_seeds_b: int
    metrics: dict[str, PairedMetric]   # a, b: means over the seeds; delta = b - a


class CompareResult(TypedDict):
    """``sewerbench compare --out``: the input paths, then the :class:`PairedComparison` keys."""
    a: str
    b: str
    gt: str
    n_resamples: int
    seed: int
    confidence: float
    metrics: dict[str, PairedMetric]


def paired_metric(a: float, b: float, delta: float, ci: Sequence[float], p_value: float
                  ) -> PairedMetric:
    return {"a": a, "b": b, "delta": delta, "ci": list(ci), "p_value": p_value}


def paired_comparison(n_resamples: int, seed: int, confidence: float,
                      metrics: Mapping[str, PairedMetric]) -> PairedComparison:
    return {"n_resamples": n_resamples, "seed": seed, "confidence": confidence,
            PAIRED_METRICS: dict(metrics)}  # type: ignore[misc]


def seed_paired_comparison(n_resamples: int, seed: int, confidence: float, n_seeds_a: int,
                           n_seeds_b: int, metrics: Mapping[str, PairedMetric]
                           ) -> SeedPairedComparison:
    return {"n_resamples": n_resamples, "seed": seed, "confidence": confidence,
            "method": SEED_PAIRED_METHOD, "n_seeds_a": n_seeds_a, "n_seeds_b": n_seeds_b,
            PAIRED_METRICS: dict(metrics)}  # type: ignore[misc]


def compare_result(a: str, b: str, gt: str, paired: PairedComparison) -> CompareResult:
    return {"a": a, "b": b, "gt": gt, **paired}  # type: ignore[typeddict-item]


def paired_entry(result: Mapping[str, Any] | None, metric: str) -> PairedMetric | None:
    """The entry of ``metric`` (one of :data:`CI_METRICS`) in a paired comparison, or None."""
    if not result:
        return None
    return (result.get(PAIRED_METRICS) or {}).get(metric)


# ----------------------------------------------------------------------------- train summary
#: Keys of ``train_summary.json``, in the order the engine writes them (torch runs). The
#: scikit-learn path writes the same keys except those in :data:`TORCH_ONLY_SUMMARY_KEYS`.
TRAIN_SUMMARY_KEYS: tuple[str, ...] = (
    "run", "method", "recipe", "profile", "split", "target", "train_on", "seed",
    "best_epoch", "selected_model", "selection_metric", "selection_score",
    "epochs_run", "epochs_planned", "stop_reason", "wall_seconds", "train_seconds",
    "train_images_per_s", "device", "world_size", "amp", "amp_dtype", "params",
    "trainable_params", "reference_num_params", "train_images", "val_images", "final", "scores",
)
TORCH_ONLY_SUMMARY_KEYS: frozenset[str] = frozenset(
    {"epochs_planned", "amp", "amp_dtype", "trainable_params", "reference_num_params"})


class TrainSummary(TypedDict):
    run: str
    method: str
    recipe: str
    profile: str
    split: str | None
    target: str                      # multilabel | binary
    train_on: str                    # all | defect_only
    seed: int
    best_epoch: int                  # 1-based epoch of the selected checkpoint
    selected_model: str              # plain | ema
    selection_metric: str            # mAP | F2_CIW | F1_Normal | val_loss
    selection_score: float | None
    epochs_run: int
    epochs_planned: NotRequired[int]
    stop_reason: str
    wall_seconds: float
    train_seconds: float
    train_images_per_s: float
    device: str
    world_size: int
    amp: NotRequired[bool]
    amp_dtype: NotRequired[str | None]
    params: int | None               # parameter count (None for scikit-learn models)
    trainable_params: NotRequired[int]
    reference_num_params: NotRequired[int | None]
    train_images: int
    val_images: int
    final: dict[str, Any]            # the last history row (epoch metrics)
    scores: dict[str, str]           # evaluation set -> scores file name


def check_train_summary(summary: Mapping[str, Any], where: str = TRAIN_SUMMARY_FILE) -> None:
    """Raise ValueError naming the first key that :class:`TrainSummary` lacks or does not know."""
    keys = set(summary)
    required = set(TRAIN_SUMMARY_KEYS) - TORCH_ONLY_SUMMARY_KEYS
    missing = [k for k in TRAIN_SUMMARY_KEYS if k in required and k not in keys]
    unknown = sorted(keys - set(TRAIN_SUMMARY_KEYS))
    if missing:
        raise ValueError(f"{where}: missing key {missing[0]!r}")
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}")
