"""Label vectors for synthetic frames, resampled from Sewer-ML's published 1/16 subset files.

Whole rows (17 classes, WaterLevel, VA, ND, Defect) are drawn with replacement, so class
imbalance, co-occurrence and the water-level distribution are Sewer-ML's own.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.classes import CLASS_CODES, CSV_COLUMNS
from benchmark.errors import SewerbenchError

SOURCE_FILES = {"train": "SewerML_Train_sub_0.0625.csv", "val": "SewerML_Val_sub_0.0625.csv"}
#: Where the subset files are looked for when ``label_source`` holds none (the shared copy).
FALLBACK_SOURCES = ("data/splits", "../shared/sewerml")
_REPO_ROOT = Path(__file__).resolve().parents[2]
#: Split -> (source file key, random stream id). Test draws from the val file on its own stream.
SPLIT_SOURCE = {"train": ("train", 1), "val": ("val", 2), "test": ("val", 3)}


def resolve_source(label_source: str | Path | None, which: str) -> Path:
    """Path of the subset file ``which`` ("train" or "val") under label_source or a fallback."""
    name = SOURCE_FILES[which]
    candidates = [Path(label_source)] if label_source else []
    for p in FALLBACK_SOURCES:
        candidates += [Path(p), _REPO_ROOT / p]
    for folder in candidates:
        path = folder / name if folder.suffix != ".csv" else folder
        if path.is_file():
            return path
    raise SewerbenchError(f"{name}: label source not found (looked in "
                          f"{', '.join(str(c) for c in candidates)})")


def read_source(path: str | Path) -> pd.DataFrame:
    """Read and sanity-check a subset annotation file (official header)."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a user-input error
        raise SewerbenchError(f"{path}: cannot read CSV: {exc}") from None
    missing = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing:
        raise SewerbenchError(f"{path}: missing columns {missing}")
    if len(df) == 0:
        raise SewerbenchError(f"{path}: no rows")
    labels = df[list(CSV_COLUMNS[1:])]
    if labels.isna().any().any():
        raise SewerbenchError(f"{path}: empty label cells")
    for col in CSV_COLUMNS[1:]:
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() | (num != np.round(num))
        if col != "WaterLevel":
            bad |= ~num.isin([0, 1])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise SewerbenchError(f"{path}: line {i + 2}: column {col}: value {df[col].iloc[i]!r} is not "
                                  f"{'an integer' if col == 'WaterLevel' else '0 or 1'}")
    return df[list(CSV_COLUMNS)].reset_index(drop=True)


def sample_rows(source: pd.DataFrame, n: int, seed: int, stream: int) -> pd.DataFrame:
    """Draw ``n`` whole label rows with replacement (seeded); Filename column left empty."""
    rng = np.random.default_rng([int(seed), int(stream), 7919])
    idx = rng.integers(0, len(source), size=int(n))
    out = source.iloc[idx].reset_index(drop=True).copy()
    out["Filename"] = ""
    for col in CSV_COLUMNS[1:]:
        out[col] = out[col].astype(np.int64)
    # keep REFERENCE.md's rules exact even if a source row were inconsistent
    any_def = out[list(CLASS_CODES)].to_numpy().any(1)
    out["Defect"] = any_def.astype(np.int64)
    out.loc[any_def, "ND"] = 0
    return out


def sample_split_labels(split: str, n: int, seed: int, label_source=None) -> pd.DataFrame:
    """Label rows of one split ("train", "val", "test") without rendering anything."""
    which, stream = SPLIT_SOURCE[split]
    return sample_rows(read_source(resolve_source(label_source, which)), n, seed, stream)
