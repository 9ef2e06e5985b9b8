"""Learned-metric cases of ``sewerbench check``: small real methods trained for real.

Each case trains one method of the default profile (its ``smoke`` recipe from ``params.yaml``,
from scratch, no stand-in) on a small synthetic Sewer-ML rendered by the ``synth`` section's
renderer (same resolution and difficulty, its own counts :data:`LEARN_DATA`), and reports the
official metrics of its final val scores. The committed reference holds seed 0's values and,
per metric, a tolerance of ``max(MIN_TOLERANCE, SPREAD_FACTOR x sd)`` over the seeds
:data:`SPREAD_SEEDS` (measured by ``sewerbench check --update``), so the check passes on a
rerun and fails when a mechanism breaks (shuffled labels, a broken head, a recipe that stops
learning): ``tests/test_learncheck.py`` shows it.

Cases (:data:`LEARN_CASES`): ``learn_maq2l`` (tiny MA-Q2L with MA and LC) and
``learn_resnet101`` (the tiny Sewer-ML ResNet-101: the smoke profile's sewerml recipe, Adam + OneCycle,
BCE with the training pos_weight), about 30 s and 40 s on 2 threads with the profile's bf16
autocast. Xie2019 is not a case: it stays at the prior here (12 epochs on these 2,000 frames:
val mAP 0.063).
"""
from __future__ import annotations

import atexit
import copy
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.errors import SewerbenchError

log = logging.getLogger(__name__)

#: The small synthetic set of the learned cases (rendered once per process, shared by the cases).
LEARN_DATA = {"seed": 0, "n_train": 2000, "n_val": 800, "n_test": 16}
#: Run entries (as in ``runs:``) of the cases.
LEARN_CASES: dict[str, dict[str, Any]] = {
    "learn_maq2l": {"method": "maq2l", "recipe": "maq2l", "split": "full",
                    "model": {"mask_attention": True, "label_correlation": True}},
    "learn_resnet101": {"method": "resnet101", "recipe": "sewerml", "split": "full"},
}
#: Settings over the smoke profile: from scratch (the stand-in needs the pretrain stage),
#: every epoch validated on the whole (small) val set, 2 torch threads whatever the machine.
#: 4 epochs over the small set (the profile's 2 are for its 12,000 frames).
LEARN_SETTINGS = {"pretrained": False, "max_eval_images": None, "progress": False,
                  "threads": None, "workers": 0,   # LEARN_THREADS below, the loader in-process
                  "epochs": 4,
                  "amp_native_only": False}        # bf16 on every CPU (emulated where not native): one numerics
                                                   # for the committed reference, whatever the machine
LEARN_THREADS = 2
METRICS = ("mAP", "F2_CIW", "F1_Normal")
SPREAD_SEEDS = (0, 1, 2)
SPREAD_FACTOR = 3.0
MIN_TOLERANCE = 0.01

_DATA: dict[tuple, Path] = {}


def _emulated_bf16_is_intended(record: logging.LogRecord) -> bool:
    """Drop the engine's warning about emulated bf16: the cases ask for bf16 on every CPU
    (``amp_native_only: False``) so that one reference holds everywhere."""
    from benchmark.train.loop import EMULATED_BF16

    return record.msg is not EMULATED_BF16


def _render(params: dict) -> Path:
    """Render and prepare the learned cases' dataset (once per process; removed at exit)."""
    from benchmark.data.splits import prepare
    from benchmark.synth.generate import SynthConfig, generate

    synth = {k: v for k, v in dict(params.get("synth") or {}).items() if k != "calibrate"}
    synth.update(LEARN_DATA)
    key = tuple(sorted((k, str(v)) for k, v in synth.items() if k != "out"))
    if key in _DATA and _DATA[key].is_dir():
        return _DATA[key]
    root = Path(tempfile.mkdtemp(prefix="sewerbench-learn-"))
    atexit.register(shutil.rmtree, root, True)
    synth["out"] = str(root / "synthetic")
    generate(SynthConfig.from_dict(synth), progress=False)
    prepare(root / "synthetic", root / "prepared")
    _DATA[key] = root
    return root


def case_params(params: dict, case: str, root: Path) -> dict:
    """``params`` with the case as its only run, the smoke profile and the case's data."""
    if case not in LEARN_CASES:
        raise SewerbenchError(f"learned check: unknown case {case!r} (known: {', '.join(LEARN_CASES)})")
    p = copy.deepcopy(params)
    p["profile"] = "smoke"
    data = p.setdefault("data", {})
    data["prepared"] = str(root / "prepared")
    data["cache"] = str(root / "cache")
    data.setdefault("smoke", {})["images"] = str(root / "synthetic")
    p["runs"] = {case: copy.deepcopy(LEARN_CASES[case])}
    p["combos"] = {}
    return p


def learned_metrics(case: str, params_path: str | Path = "params.yaml", seed: int = 0) -> dict[str, float]:
    """Train the case with ``seed`` and return the official val metrics of its final scores."""
    import torch

    from benchmark.config import resolve_run
    from benchmark.config.resolve import load_params
    from benchmark import artifacts as A
    from benchmark.evaluation import compute
    from benchmark.train import train_run

    params = load_params(params_path)
    root = _render(params)
    p = case_params(params, case, root)
    threads = torch.get_num_threads()
    quiet = [logging.getLogger(n) for n in ("benchmark.train", "benchmark.data", "benchmark.synth")]
    levels = [lg.level for lg in quiet]
    torch.set_num_threads(LEARN_THREADS)
    for lg in quiet:
        lg.setLevel(logging.WARNING)
    engine = logging.getLogger("benchmark.train.engine")
    engine.addFilter(_emulated_bf16_is_intended)
    try:
        cfg = resolve_run(p, case, overrides=LEARN_SETTINGS, seed=seed)
        with tempfile.TemporaryDirectory(prefix=f"sewerbench-{case}-") as tmp:
            train_run(cfg, Path(tmp) / "run")
            m = compute(Path(tmp) / "run" / "scores_val.csv", root / "prepared" / "full" / "val.csv")
    finally:
        engine.removeFilter(_emulated_bf16_is_intended)
        torch.set_num_threads(threads)
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)
    return {"mAP": float(m[A.MAIN]["mAP"]), "F2_CIW": float(m[A.NEW][A.F2]),
            "F1_Normal": float(m[A.NEW][A.F1_NORMAL])}


def reference_entry(case: str, params_path: str | Path = "params.yaml") -> dict[str, Any]:
    """``--update`` entry of a learned case: seed 0's metrics as ``expected``, per-metric
    tolerances from the spread over :data:`SPREAD_SEEDS`, and the per-seed values."""
    runs = {s: learned_metrics(case, params_path, seed=s) for s in SPREAD_SEEDS}
    sd = {k: float(np.std([runs[s][k] for s in SPREAD_SEEDS], ddof=1)) for k in METRICS}
    return {"expected": runs[SPREAD_SEEDS[0]],
            "tolerances": {k: max(MIN_TOLERANCE, SPREAD_FACTOR * sd[k]) for k in METRICS},
            "seed_sd": sd, "seeds": {str(s): runs[s] for s in SPREAD_SEEDS}}
