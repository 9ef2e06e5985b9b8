"""Two-stage combination of score files (stage 1: Filename,Defect; stage 2: Filename + 17)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.classes import CLASS_CODES, SCORE_COLUMNS
from benchmark.errors import SewerbenchError
from benchmark.io import atomic_to_csv

MODES = ("replace", "multiply")


def read_stage1(path: str | Path) -> pd.DataFrame:
    """A binary scores CSV: ``Filename,Defect`` (a 17-class file is reduced to its max)."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SewerbenchError(f"{path}: cannot read ({exc})") from None
    if "Filename" not in df.columns:
        raise SewerbenchError(f"{path}: missing column Filename")
    if "Defect" not in df.columns:
        if all(c in df.columns for c in CLASS_CODES):
            df = pd.DataFrame({"Filename": df["Filename"],
                               "Defect": df[list(CLASS_CODES)].max(axis=1)})
        else:
            raise SewerbenchError(f"{path}: missing column Defect")
    return df[["Filename", "Defect"]]


def read_stage2(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SewerbenchError(f"{path}: cannot read ({exc})") from None
    missing = [c for c in SCORE_COLUMNS if c not in df.columns]
    if missing:
        raise SewerbenchError(f"{path}: missing columns {', '.join(missing)}")
    return df[list(SCORE_COLUMNS)]


def combine_frames(stage1: pd.DataFrame, stage2: pd.DataFrame, mode: str = "replace",
                   where: tuple[str, str] = ("stage1", "stage2")) -> pd.DataFrame:
    """Match by Filename and combine with ``methods.two_stage.combine``; rows sorted by Filename."""
    from methods.two_stage import combine

    if mode not in MODES:
        raise SewerbenchError(f"--mode: must be one of {', '.join(MODES)}, got {mode!r}")
    for df, w in ((stage1, where[0]), (stage2, where[1])):
        dup = df["Filename"][df["Filename"].duplicated()]
        if len(dup):
            raise SewerbenchError(f"{w}: duplicate Filename {dup.iloc[0]!r} ({len(dup)} duplicates)")
    a = stage1.sort_values("Filename").reset_index(drop=True)
    b = stage2.sort_values("Filename").reset_index(drop=True)
    if len(a) != len(b) or not (a["Filename"].to_numpy() == b["Filename"].to_numpy()).all():
        only1 = sorted(set(a["Filename"]) - set(b["Filename"]))
        only2 = sorted(set(b["Filename"]) - set(a["Filename"]))
        raise SewerbenchError(f"{where[0]} and {where[1]}: filenames differ "
                              f"({len(only1)} only in {where[0]}, {len(only2)} only in {where[1]}; "
                              f"first: {(only1 + only2)[:3]})")
    p1 = a["Defect"].to_numpy(np.float64)
    p2 = b[list(CLASS_CODES)].to_numpy(np.float64)
    for arr, w in ((p1, where[0]), (p2, where[1])):
        if np.isnan(arr).any() or (arr < 0).any() or (arr > 1).any():
            raise SewerbenchError(f"{w}: scores must be probabilities in [0, 1] without NaN")
    out = np.asarray(combine(p1, p2, mode), dtype=np.float64)
    return pd.DataFrame({"Filename": a["Filename"], **{c: out[:, k] for k, c in enumerate(CLASS_CODES)}})


def combine_files(stage1: str | Path, stage2: str | Path, out: str | Path, mode: str = "replace") -> int:
    """Combine two score files into ``out`` (atomic); returns the number of rows."""
    df = combine_frames(read_stage1(stage1), read_stage2(stage2), mode, (str(stage1), str(stage2)))
    atomic_to_csv(df, out, float_format="%.6f")
    return len(df)
