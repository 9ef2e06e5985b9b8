"""Tolerance checks: recompute small deterministic results and compare with committed references.

``results/reference/reference.json`` holds, per case, the expected metric values and the
tolerance (absolute) each may differ by. Cases:

* ``evaluate_a`` / ``evaluate_b``: the official metrics of the committed score files
  ``scores_a.csv`` / ``scores_b.csv`` against ``gt.csv`` (through the same reader and
  metric code as ``sewerbench evaluate``);
* ``bootstrap_a``: seeded bootstrap 95% CIs of ``scores_a.csv``;
* ``paired_ab``: the paired bootstrap of ``scores_a`` vs ``scores_b``;
* ``combine_replace``: metrics of the two-stage "replace" combination of ``stage1.csv``
  (Filename, Defect) with ``scores_b.csv``;
* ``train_tiny``: a tiny deterministic CPU training run of a few seconds (engine), when
  the reference holds it;
* ``learn_maq2l``, ``learn_resnet101``: tiny MA-Q2L and the tiny Sewer-ML ResNet-101 trained on
  a small synthetic Sewer-ML with their default-profile recipes (:mod:`benchmark.learncheck`,
  about 1.5 minutes together); tolerances from the measured seed spread.

:func:`run_checks` returns the list of misses (metric, expected, got, tolerance).
"""
from __future__ import annotations

import difflib
import json
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from benchmark import artifacts as A
from benchmark.classes import CLASS_CODES, CSV_COLUMNS, NORMAL
from benchmark.errors import SewerbenchError
from benchmark.io import atomic_to_csv, atomic_write_json
from benchmark.learncheck import LEARN_CASES, MIN_TOLERANCE

log = logging.getLogger(__name__)

DEFAULT_DIR = Path("results/reference")
REFERENCE_FILE = "reference.json"


@dataclass(frozen=True)
class Miss:
    case: str
    metric: str
    expected: Any
    got: Any
    tolerance: float

    def line(self) -> str:
        return (f"{self.case}: {self.metric}: expected {_fmt(self.expected)}, got {_fmt(self.got)}, "
                f"tolerance {self.tolerance:g}")


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


# ----------------------------------------------------------------------------- readers
def _aligned(scores_path: Path, gt_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 17) scores and targets matched by Filename (the reader of ``sewerbench evaluate``)."""
    from benchmark.scores import load_aligned
    a = load_aligned(scores_path, gt_path)
    return a.scores, a.targets


def flatten_metrics(m: dict) -> dict[str, float]:
    """The official metrics JSON as flat ``name -> value`` (per-class entries ``F2_class.RB``)."""
    new, aux = m[A.NEW], m[A.AUXILLARY]
    out = {A.F2_CIW: new[A.F2], A.F1_NORMAL: new[A.F1_NORMAL]}
    out.update({k: float(v) for k, v in m[A.MAIN].items()})
    codes18 = list(CLASS_CODES) + [NORMAL]
    for i, c in enumerate(codes18):
        out[f"{A.F2_CLASS}.{c}"] = new[A.F2_CLASS][i]
        for key in ("P_class", "R_class", "F1_class", "Np", "Nc", "Ng"):
            out[f"{key}.{c}"] = aux[key][i]
    for i, c in enumerate(CLASS_CODES):
        out[f"AP.{c}"] = aux["AP"][i]
    return {k: float(v) for k, v in out.items()}


# ----------------------------------------------------------------------------- cases
def case_evaluate(ref_dir: Path, which: str) -> dict[str, float]:
    from benchmark import metrics
    s, t = _aligned(ref_dir / f"scores_{which}.csv", ref_dir / "gt.csv")
    return flatten_metrics(metrics.evaluate(s, t))


def case_bootstrap(ref_dir: Path) -> dict[str, float]:
    from benchmark import bootstrap
    s, t = _aligned(ref_dir / "scores_a.csv", ref_dir / "gt.csv")
    ci = bootstrap.bootstrap_ci(s, t, n=200, seed=0)
    return {f"{k}.{side}": float(v[i]) for k, v in ci.items() for i, side in enumerate(("lo", "hi"))}


def case_paired(ref_dir: Path) -> dict[str, float]:
    from benchmark import bootstrap
    sa, t = _aligned(ref_dir / "scores_a.csv", ref_dir / "gt.csv")
    sb, _ = _aligned(ref_dir / "scores_b.csv", ref_dir / "gt.csv")
    res = bootstrap.paired_bootstrap(sa, sb, t, n=200, seed=0)
    out = {}
    for name, r in res[A.PAIRED_METRICS].items():
        out[f"{name}.delta"] = float(r["delta"])
        out[f"{name}.ci_lo"], out[f"{name}.ci_hi"] = (float(x) for x in r["ci"])
        out[f"{name}.p_value"] = float(r["p_value"])
    return out


def case_combine(ref_dir: Path) -> dict[str, float]:
    from benchmark import metrics
    from benchmark.combine import combine_frames
    st1 = pd.read_csv(ref_dir / "stage1.csv")
    st2 = pd.read_csv(ref_dir / "scores_b.csv")
    comb = combine_frames(st1, st2, mode="replace")
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "c.csv"
        comb.to_csv(p, index=False)
        s, t = _aligned(p, ref_dir / "gt.csv")
    m = flatten_metrics(metrics.evaluate(s, t))
    return {k: m[k] for k in ("F2_CIW", "F1_Normal", "mAP", "EMAcc")}


def case_train_tiny(ref_dir: Path) -> dict[str, float]:
    from benchmark.selfcheck import tiny_train_metrics
    return tiny_train_metrics()


def _learned(case: str) -> Callable[[Path, str | Path], dict[str, float]]:
    def run(ref_dir: Path, params_path: str | Path) -> dict[str, float]:
        from benchmark.learncheck import learned_metrics
        return learned_metrics(case, params_path)
    return run


#: case -> function(reference folder, params.yaml path) -> {metric: value}
CASES: dict[str, Callable[[Path, str | Path], dict[str, float]]] = {
    "evaluate_a": lambda d, p: case_evaluate(d, "a"),
    "evaluate_b": lambda d, p: case_evaluate(d, "b"),
    "bootstrap_a": lambda d, p: case_bootstrap(d),
    "paired_ab": lambda d, p: case_paired(d),
    "combine_replace": lambda d, p: case_combine(d),
    "train_tiny": lambda d, p: case_train_tiny(d),
    **{case: _learned(case) for case in LEARN_CASES},
}
#: Cases whose ``--update`` measures the tolerances (seed spread) instead of keeping them.
LEARNED_CASES = tuple(LEARN_CASES)

#: A case's fallback tolerance for metrics without their own (a learned case's ``--update``
#: writes one per metric from the seed spread; this is the floor it starts from).
DEFAULT_TOLERANCE = {"evaluate_a": 1e-9, "evaluate_b": 1e-9, "bootstrap_a": 1e-9,
                     "paired_ab": 1e-9, "combine_replace": 1e-9, "train_tiny": 0.005,
                     **{case: MIN_TOLERANCE for case in LEARN_CASES}}
#: Per-metric tolerances written by ``--update`` for new cases (float noise across CPUs).
DEFAULT_METRIC_TOLERANCES = {"train_tiny": {"train_loss": 0.01, "val_loss": 0.01, "best_epoch": 0}}


# ----------------------------------------------------------------------------- compare
def _close(expected: Any, got: Any, tol: float) -> bool:
    if expected is None:
        return got is None
    if got is None:
        return False
    e, g = float(expected), float(got)
    if math.isnan(e) or math.isnan(g):
        return math.isnan(e) and math.isnan(g)
    if math.isinf(e) or math.isinf(g):
        return e == g
    return abs(e - g) <= tol


def _number_or_null(x: Any) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))


def validate_reference(ref: Any, path: Path) -> dict:
    """Refuse a reference of the wrong shape with one line naming the file and the key:
    ``{"cases": {case: {"expected": {metric: number|null}, "tolerance": number >= 0,
    "tolerances": {metric: number >= 0}}}}`` with known case names."""
    if not isinstance(ref, dict):
        raise SewerbenchError(f"{path}: top level must be an object with 'cases'")
    cases = ref.get("cases")
    if not isinstance(cases, dict):
        raise SewerbenchError(f"{path}: 'cases' must be an object of case name -> specification")
    for case, spec in cases.items():
        if case not in CASES:
            hint = difflib.get_close_matches(str(case), list(CASES), n=1)
            raise SewerbenchError(f"{path}: cases: unknown case {case!r}"
                                  f"{f' (did you mean {hint[0]!r}?)' if hint else ''}")
        if not isinstance(spec, dict):
            raise SewerbenchError(f"{path}: cases.{case}: must be an object")
        expected = spec.get("expected")
        if not isinstance(expected, dict):
            raise SewerbenchError(f"{path}: cases.{case}.expected: must be an object of metric -> value")
        for metric, value in expected.items():
            if not _number_or_null(value):
                raise SewerbenchError(f"{path}: cases.{case}.expected.{metric}: expected a number or "
                                      f"null, got {value!r}")
        if "tolerance" in spec:
            tol = spec["tolerance"]
            if not _number_or_null(tol) or tol is None or not tol >= 0:
                raise SewerbenchError(f"{path}: cases.{case}.tolerance: expected a number >= 0, got {tol!r}")
        tols = spec.get("tolerances", {})
        if not isinstance(tols, dict):
            raise SewerbenchError(f"{path}: cases.{case}.tolerances: must be an object of metric -> number")
        for metric, tol in tols.items():
            if not _number_or_null(tol) or tol is None or not tol >= 0:
                raise SewerbenchError(f"{path}: cases.{case}.tolerances.{metric}: expected a number >= 0, "
                                      f"got {tol!r}")
    return ref


def load_reference(ref_dir: str | Path) -> dict:
    path = Path(ref_dir) / REFERENCE_FILE
    if Path(ref_dir).exists() and not Path(ref_dir).is_dir():
        raise SewerbenchError(f"{ref_dir}: --reference-dir is a file, expected a folder")
    try:
        ref = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SewerbenchError(f"{path}: reference file missing (run `sewerbench check --update`)") from None
    except IsADirectoryError:
        raise SewerbenchError(f"{path}: is a folder, expected the reference JSON file") from None
    except UnicodeDecodeError:
        raise SewerbenchError(f"{path}: not UTF-8 text (corrupt reference file)") from None
    except json.JSONDecodeError as exc:
        raise SewerbenchError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    except OSError as exc:
        raise SewerbenchError(f"{path}: cannot read ({exc.strerror})") from None
    return validate_reference(ref, path)


def check_case_names(cases: list[str] | None, available: list[str] | None = None,
                     where: str = "--case") -> None:
    """Refuse unknown case names (did-you-mean), and known ones the reference does not hold."""
    for case in cases or []:
        if case not in CASES:
            hint = difflib.get_close_matches(case, list(CASES), n=1)
            raise SewerbenchError(f"{where}: unknown case {case!r}"
                                  f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; cases: "
                                  f"{', '.join(CASES)}")
        if available is not None and case not in available:
            raise SewerbenchError(f"{where}: case {case!r} is not in the reference file (run "
                                  f"`sewerbench check --update --case {case}` to add it)")


def run_checks(ref_dir: str | Path = DEFAULT_DIR, cases: list[str] | None = None,
               params_path: str | Path = "params.yaml") -> tuple[list[Miss], int]:
    """Recompute every case in the reference; return (misses, number of metrics compared).

    Unknown ``cases`` (or ones the reference lacks) raise; so does comparing nothing at all
    (an empty reference), so a check can never pass vacuously."""
    ref_dir = Path(ref_dir)
    ref = load_reference(ref_dir)
    check_case_names(cases, list(ref["cases"]))
    misses: list[Miss] = []
    n = 0
    for case, spec in ref.get("cases", {}).items():
        if cases and case not in cases:
            continue
        tol_default = float(spec.get("tolerance", DEFAULT_TOLERANCE.get(case, 1e-9)))
        tols = spec.get("tolerances", {})
        try:
            got = CASES[case](ref_dir, params_path)
        except SewerbenchError:
            raise
        except Exception as exc:  # a crash is a miss of every metric of the case
            log.error("%s: failed: %s: %s", case, type(exc).__name__, exc)
            got = {}
        for metric, expected in spec.get("expected", {}).items():
            n += 1
            tol = float(tols.get(metric, tol_default))
            g = got.get(metric)
            if not _close(expected, g, tol):
                misses.append(Miss(case, metric, expected, g, tol))
    if n == 0:
        raise SewerbenchError(f"{ref_dir / REFERENCE_FILE}: no metric compared (the selected cases "
                              "hold no expected values); a check that compares nothing cannot pass")
    return misses, n


def compute_reference(ref_dir: str | Path = DEFAULT_DIR, cases: list[str] | None = None,
                      params_path: str | Path = "params.yaml") -> dict:
    """Recompute every case (for ``--update``): ``{"cases": {case: {"tolerance", "expected"}}}``;
    a learned case also gets measured ``tolerances`` (seed spread) and its per-seed values."""
    ref_dir = Path(ref_dir)
    check_case_names(cases)
    old = {}
    if (ref_dir / REFERENCE_FILE).is_file():
        old = load_reference(ref_dir).get("cases", {})
    out: dict[str, Any] = dict(old)   # cases not recomputed are kept as they are
    for case in cases or list(CASES):
        spec = dict(old.get(case, {}))
        spec.setdefault("tolerance", DEFAULT_TOLERANCE[case])
        if case in DEFAULT_METRIC_TOLERANCES:
            spec.setdefault("tolerances", DEFAULT_METRIC_TOLERANCES[case])
        if case in LEARNED_CASES:
            from benchmark.learncheck import reference_entry
            spec.update(reference_entry(case, params_path))
        else:
            spec["expected"] = CASES[case](ref_dir, params_path)
        out[case] = spec
    return {"description": "Reference metrics for `sewerbench check` (0-1 scale unless named); "
                           "see results/reference/README.md", "cases": out}


def write_reference(ref_dir: str | Path, reference: dict) -> None:
    atomic_write_json(Path(ref_dir) / REFERENCE_FILE, reference)


# ----------------------------------------------------------------------------- inputs
def make_inputs(ref_dir: str | Path, n: int = 400, seed: int = 0,
                labels_csv: str | Path | None = None) -> None:
    """Create the small committed inputs: gt.csv, scores_a.csv, scores_b.csv, stage1.csv.

    Label vectors are drawn from ``labels_csv`` (a Sewer-ML annotation CSV, e.g. the public
    1/16 val subset) when given, else independently per class; filenames are synthetic.
    Scores: ``a`` is informative, ``b`` less so; the stage-1 defect score is a noisy max.
    """
    rng = np.random.default_rng(seed)
    codes = list(CLASS_CODES)
    if labels_csv is not None:
        src = pd.read_csv(labels_csv)
        pick = rng.choice(len(src), size=n, replace=False)
        y = src[codes].to_numpy(np.int64)[pick]
        wl = src["WaterLevel"].to_numpy()[pick]
        va = src["VA"].to_numpy()[pick]
    else:
        y = (rng.random((n, len(codes))) < 0.08).astype(np.int64)
        wl = rng.choice([0, 5, 10, 20, 30], size=n)
        va = np.zeros(n, dtype=np.int64)
    y[:, codes.index("OS")] = 0   # one class without positives (edge case of the official metric)
    defect = y.any(axis=1).astype(np.int64)
    nd = ((defect == 0) & (va == 0)).astype(np.int64)
    names = [f"{i:08d}.png" for i in rng.permutation(np.arange(1, n + 1))]
    gt = pd.DataFrame({"Filename": names, "WaterLevel": wl, "VA": va,
                       **{c: y[:, k] for k, c in enumerate(codes)}, "ND": nd, "Defect": defect})
    gt = gt[list(CSV_COLUMNS)]

    def noisy(strength: float) -> np.ndarray:
        logit = strength * (2 * y - 1) + rng.normal(0, 1.5, size=y.shape) - 1.0
        return np.round(1 / (1 + np.exp(-logit)), 6)

    sa, sb = noisy(2.5), noisy(1.0)
    st1 = np.round(np.clip(defect * 0.45 + rng.uniform(0, 0.6, size=n), 0, 1), 6)
    ref_dir = Path(ref_dir)
    atomic_to_csv(gt, ref_dir / "gt.csv")
    for name, s in (("scores_a", sa), ("scores_b", sb)):
        atomic_to_csv(pd.DataFrame({"Filename": names, **{c: s[:, k] for k, c in enumerate(codes)}}),
                      ref_dir / f"{name}.csv")
    atomic_to_csv(pd.DataFrame({"Filename": names, "Defect": st1}), ref_dir / "stage1.csv")
