"""The run matrix of params.yaml (``runs:``, ``combos:``) and what the stages read from it.

Plain functions over the params mapping (read it with :func:`benchmark.config.load_params`):
run and combo entries, a run's training split, the active profile and its data folder, the
MA x LC ablation cells and their paired-bootstrap references (``tables.ablation_reference``),
and the run folders the ``tables`` and ``plots`` stages read (their generated DVC
dependencies, see :mod:`benchmark.dvcgen`).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from benchmark.data.layout import FULL_SPLIT, PreparedLayout
from benchmark.errors import SewerbenchError

#: The method whose runs are the MA x LC ablation cells.
ABLATION_METHOD = "maq2l"
#: ``plots:`` keys naming one run whose scores are plotted, and the key of the CAM runs.
PLOT_SCORE_RUN_KEYS = ("pr_run", "cooccurrence_run")
PLOT_CAM_RUNS_KEY = "cam_runs"


def runs(params: Mapping[str, Any]) -> dict[str, dict]:
    return {k: dict(v or {}) for k, v in (params.get("runs") or {}).items()}


def combos(params: Mapping[str, Any]) -> dict[str, dict]:
    return {k: dict(v or {}) for k, v in (params.get("combos") or {}).items()}


def run_split(params: Mapping[str, Any], run: str) -> str:
    """Training split of a run or combo (a combo inherits its stage-2 run's split)."""
    r = runs(params)
    if run in r:
        return str(r[run].get("split", FULL_SPLIT))
    c = combos(params)
    if run in c:
        return run_split(params, c[run]["stage2"])
    raise SewerbenchError(f"params.yaml: runs: no run or combo named {run!r}")


def profile(params: Mapping[str, Any]) -> str:
    return str(params.get("profile", "smoke"))


def data_source(params: Mapping[str, Any]) -> str:
    """Folder ``sewerbench prepare`` reads for the active profile."""
    data = params.get("data") or {}
    prof = profile(params)
    per = data.get(prof) if isinstance(data.get(prof), Mapping) else {}
    src = per.get("source")
    if src in (None, "sewerml_root"):
        src = data.get("sewerml_root")
    if not src:
        raise SewerbenchError(f"params.yaml: data: profile {prof!r} has no source folder "
                              "(set data.sewerml_root to the Sewer-ML folder)")
    return str(src)


def data_kind(prepared: str | os.PathLike | PreparedLayout = "data/prepared",
              params: Mapping[str, Any] | None = None) -> str:
    """"synthetic" or a description of real data (:attr:`PreparedLayout.kind`); without
    ``splits.json``, "synthetic" for the smoke profile, else "unknown"."""
    layout = prepared if isinstance(prepared, PreparedLayout) else PreparedLayout.from_dir(prepared)
    if not layout.recorded and params is not None and profile(params) == "smoke":
        return "synthetic"
    return layout.kind


# ----------------------------------------------------------------------------- ablation
def ablation_cells(runs: Mapping[str, Mapping[str, Any]], method: str = ABLATION_METHOD
                   ) -> list[dict[str, Any]]:
    """The MA x LC cells among ``runs`` (params.yaml ``runs:``), ordered by split then cell."""
    cells = []
    for name, spec in runs.items():
        if spec.get("method") != method:
            continue
        model = spec.get("model") or {}
        cells.append({"run": name, "split": spec.get("split", FULL_SPLIT),
                      "mask_attention": bool(model.get("mask_attention", True)),
                      "label_correlation": bool(model.get("label_correlation", True))})
    cells.sort(key=lambda c: (c["split"] != FULL_SPLIT, c["split"], not c["mask_attention"],
                              not c["label_correlation"]))
    return cells


def ablation_reference(params: Mapping[str, Any]) -> dict[str, str]:
    """``tables.ablation_reference``: split -> the cell every cell of that split is compared with."""
    return dict((params.get("tables") or {}).get("ablation_reference") or {})


def ablation_pairs(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(reference run, cell run) of every paired bootstrap ``sewerbench tables`` computes,
    in cell order (cells without a reference, and the references themselves, have none)."""
    reference = ablation_reference(params)
    pairs = []
    for c in ablation_cells(params.get("runs") or {}):
        ref = reference.get(c["split"])
        if not ref or ref == c["run"]:
            continue
        pairs.append((ref, c["run"]))
    return pairs


# ----------------------------------------------------------------------------- stage inputs
def _unique(names) -> list[str]:
    return list(dict.fromkeys(str(n) for n in names))


def tables_runs(params: Mapping[str, Any]) -> list[str]:
    """Run folders whose scores ``sewerbench tables`` reads (the ablation's paired bootstrap)."""
    return _unique(name for pair in ablation_pairs(params) for name in pair)


def plots_runs(params: Mapping[str, Any]) -> list[str]:
    """Run folders ``sewerbench plots`` reads: scores of ``plots.pr_run`` and
    ``plots.cooccurrence_run``, checkpoints of ``plots.cam_runs``."""
    pcfg = params.get("plots") or {}
    names = [pcfg.get(k) for k in PLOT_SCORE_RUN_KEYS]
    names += list(pcfg.get(PLOT_CAM_RUNS_KEY) or [])
    return _unique(n for n in names if n)
