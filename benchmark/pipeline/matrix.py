"""The run matrix of params.yaml (``runs:`` and ``combos:``) and data-source helpers."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import yaml

from benchmark.errors import SewerbenchError


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise SewerbenchError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise SewerbenchError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise SewerbenchError(f"{path}: top level must be a mapping")
    return data


def runs(params: Mapping[str, Any]) -> dict[str, dict]:
    return {k: dict(v or {}) for k, v in (params.get("runs") or {}).items()}


def combos(params: Mapping[str, Any]) -> dict[str, dict]:
    return {k: dict(v or {}) for k, v in (params.get("combos") or {}).items()}


def run_split(params: Mapping[str, Any], run: str) -> str:
    """Training split of a run or combo (a combo inherits its stage-2 run's split)."""
    r = runs(params)
    if run in r:
        return str(r[run].get("split", "full"))
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


def data_kind(prepared: str | Path = "data/prepared", params: Mapping[str, Any] | None = None) -> str:
    """"synthetic" or a description of real data, from prepared/splits.json."""
    f = Path(prepared) / "splits.json"
    if f.is_file():
        info = json.loads(f.read_text())
        if info.get("kind") == "synthetic":
            return "synthetic"
        return f"Sewer-ML at {info.get('source', '?')}"
    if params is not None and profile(params) == "smoke":
        return "synthetic"
    return "unknown"
