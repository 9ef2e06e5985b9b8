"""Per-epoch metric logging: ``history.csv`` and DVCLive (``<run>/dvclive``).

DVCLive is opened with ``save_dvc_exp=False`` and ``dvcyaml=None``: it writes only inside
its folder (metrics.json, plots/metrics/*.tsv, params.yaml); the pipeline's dvc.yaml
declares those files as metrics and plots, so ``dvc exp show`` / ``dvc plots`` see them.
On resume the folder is rebuilt from the checkpoint's history, so it never holds an epoch
twice or an epoch the checkpoint does not know.
"""
from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.io import atomic_to_csv

log = logging.getLogger(__name__)

HISTORY = "history.csv"
DVCLIVE = "dvclive"


def _flat(d: dict, prefix: str = "") -> dict:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = str(list(v))
        else:
            out[key] = v
    return out


class Tracker:
    """Writes history.csv and DVCLive on the main process; a no-op elsewhere."""

    def __init__(self, out_dir: str | Path, enabled: bool, params: dict | None = None,
                 history: list[dict] | None = None):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.rows: list[dict] = list(history or [])
        self.live = None
        if not enabled:
            return
        live_dir = self.out_dir / DVCLIVE
        if live_dir.exists():
            shutil.rmtree(live_dir)
        try:
            from dvclive import Live

            self.live = Live(dir=str(live_dir), resume=False, report=None, save_dvc_exp=False,
                             dvcyaml=None)
            if params:
                self.live.log_params({k: v for k, v in _flat(params).items()
                                      if v is None or isinstance(v, (int, float, str, bool))})
        except Exception as exc:  # noqa: BLE001 - logging must never stop training
            log.warning("DVCLive disabled: %s", exc)
            self.live = None
        for row in self.rows:  # replay the epochs a resumed run already has
            self._live_log(row)
        self._write_history()

    def _live_log(self, row: dict) -> None:
        if self.live is None:
            return
        for k, v in row.items():
            if k == "epoch" or v is None:
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
                self.live.log_metric(k, float(v))
        self.live.next_step()

    def _write_history(self) -> None:
        if self.rows:
            atomic_to_csv(pd.DataFrame(self.rows), self.out_dir / HISTORY)

    def log_epoch(self, row: dict) -> None:
        self.rows.append(dict(row))
        if not self.enabled:
            return
        self._live_log(row)
        self._write_history()

    def close(self) -> None:
        if self.live is not None:
            try:
                self.live.end()
            except Exception as exc:  # noqa: BLE001
                log.warning("DVCLive end failed: %s", exc)
            self.live = None
