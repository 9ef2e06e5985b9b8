"""Read and validate scores and ground-truth CSVs; match them by Filename.

Scores CSV (what the official inference writes): exactly ``Filename`` + the 17 class
columns (any column order). Extra columns are rejected: the official writer produces none,
and an extra column usually means the wrong file (e.g. an annotation CSV passed as scores).
Scores must be numbers in [0, 1] (sigmoid probabilities); NaN, empty and out-of-range values
are errors.

Ground-truth CSV: ``Filename`` + the 17 class columns are required; other columns (the
official header's WaterLevel, VA, ND, Defect, or none at all as in a SewerML_Test_gt-like
file) are allowed and ignored. Labels must be 0 or 1 (-1 is rejected in files; the metric
functions themselves accept -1 as 0, like the official code).

:func:`align` matches rows by Filename and returns them sorted by Filename, the row order
the official ``calculate_results.py`` evaluates in (it matters for AP ties).
Every problem raises :class:`SewerbenchError` with one line naming the file.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.classes import CLASS_CODES, SCORE_COLUMNS
from benchmark.errors import SewerbenchError
from benchmark.io import atomic_path

_FIRST = 5
_NA_STRINGS = ("", "nan", "NaN", "NAN", "-nan", "-NaN", "NA", "N/A", "n/a", "null", "NULL",
               "None", "<NA>", "#N/A", "#NA")


def _first(items) -> str:
    items = list(items)
    head = ", ".join(str(x) for x in items[:_FIRST])
    return head + (", ..." if len(items) > _FIRST else "")


def _read_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
    except FileNotFoundError:
        raise SewerbenchError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise SewerbenchError(f"{path}: is a directory, not a CSV file") from None
    except PermissionError:
        raise SewerbenchError(f"{path}: permission denied") from None
    except UnicodeDecodeError:
        raise SewerbenchError(f"{path}: unreadable: not UTF-8 text") from None
    except (OSError, csv.Error) as exc:
        raise SewerbenchError(f"{path}: unreadable: {exc}") from None
    if not header:
        raise SewerbenchError(f"{path}: empty file (no header)")
    header = [h.strip() for h in header]
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise SewerbenchError(f"{path}: duplicate column(s): {_first(dup)}")
    return header


def _read_frame(path: Path, header: list[str]) -> pd.DataFrame:
    try:
        na = {c: list(_NA_STRINGS) for c in header if c != "Filename"}
        na["Filename"] = [""]
        df = pd.read_csv(path, sep=",", encoding="utf-8-sig", dtype={"Filename": str},
                         keep_default_na=False, na_values=na, skipinitialspace=True)
    except Exception as exc:  # pandas raises many kinds (ParserError, UnicodeDecodeError...)
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise SewerbenchError(f"{path}: unreadable CSV: {msg}") from None
    df.columns = [str(c).strip() for c in df.columns]
    if len(df) == 0:
        raise SewerbenchError(f"{path}: no data rows")
    return df


def _check_filenames(df: pd.DataFrame, path: Path) -> None:
    fn = df["Filename"]
    bad = fn.isna() | (fn.astype(str).str.strip() == "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise SewerbenchError(f"{path}: line {row}: empty Filename ({int(bad.sum())} row(s))")
    dup = fn[fn.duplicated(keep=False)]
    if len(dup):
        uniq = list(dict.fromkeys(dup.tolist()))
        raise SewerbenchError(f"{path}: {len(uniq)} duplicate Filename(s): {_first(uniq)}")


def _numeric(df: pd.DataFrame, path: Path, what: str) -> np.ndarray:
    """The 17 class columns as float64, with a clear error for non-numeric cells."""
    cols = []
    for code in CLASS_CODES:
        col = pd.to_numeric(df[code], errors="coerce")
        bad = col.isna() & df[code].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            cell = str(df[code].iloc[i])
            raise SewerbenchError(
                f"{path}: line {i + 2}: column {code}: {what} {cell!r} is not a number")
        cols.append(col.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.stack(cols, axis=1)


def read_scores_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a scores CSV: a DataFrame with Filename (str) and the 17 float64 class columns."""
    path = Path(path)
    header = _read_header(path)
    missing = [c for c in SCORE_COLUMNS if c not in header]
    extra = [c for c in header if c not in SCORE_COLUMNS]
    if missing:
        raise SewerbenchError(f"{path}: missing column(s): {_first(missing)} "
                              f"(a scores CSV has Filename + the 17 class columns)")
    if extra:
        raise SewerbenchError(f"{path}: unexpected column(s): {_first(extra)} "
                              f"(a scores CSV has exactly Filename + the 17 class columns)")
    df = _read_frame(path, header)
    _check_filenames(df, path)
    values = _numeric(df, path, "score")
    nan = np.isnan(values)
    if nan.any():
        i, k = np.argwhere(nan)[0]
        raise SewerbenchError(f"{path}: line {i + 2}: column {CLASS_CODES[k]}: missing or NaN "
                              f"score ({int(nan.sum())} cell(s))")
    out = (values < 0) | (values > 1)
    if out.any():
        i, k = np.argwhere(out)[0]
        raise SewerbenchError(f"{path}: line {i + 2}: column {CLASS_CODES[k]}: score "
                              f"{float(values[i, k])!r} outside [0, 1] ({int(out.sum())} cell(s))")
    res = pd.DataFrame(values, columns=list(CLASS_CODES))
    res.insert(0, "Filename", df["Filename"].astype(str).to_numpy())
    return res


def read_ground_truth_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ground-truth CSV: a DataFrame with Filename (str) and the 17 int64 label columns."""
    path = Path(path)
    header = _read_header(path)
    missing = [c for c in SCORE_COLUMNS if c not in header]
    if missing:
        raise SewerbenchError(f"{path}: missing column(s): {_first(missing)} "
                              f"(ground truth needs Filename + the 17 class columns)")
    df = _read_frame(path, header)
    _check_filenames(df, path)
    values = _numeric(df, path, "label")
    nan = np.isnan(values)
    if nan.any():
        i, k = np.argwhere(nan)[0]
        raise SewerbenchError(f"{path}: line {i + 2}: column {CLASS_CODES[k]}: missing label, "
                              f"expected 0 or 1 ({int(nan.sum())} cell(s))")
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        i, k = np.argwhere(bad)[0]
        raise SewerbenchError(f"{path}: line {i + 2}: column {CLASS_CODES[k]}: label "
                              f"{float(values[i, k]):g} is not 0 or 1 ({int(bad.sum())} cell(s))")
    res = pd.DataFrame(values.astype(np.int64), columns=list(CLASS_CODES))
    res.insert(0, "Filename", df["Filename"].astype(str).to_numpy())
    return res


@dataclass(frozen=True)
class Aligned:
    """Rows of a scores file and its ground truth, matched by Filename, sorted by Filename."""

    filenames: np.ndarray  # (N,) str
    scores: np.ndarray  # (N, 17) float64
    targets: np.ndarray  # (N, 17) int64

    def __iter__(self):  # allows ``filenames, scores, targets = align(...)``
        return iter((self.filenames, self.scores, self.targets))


def align(scores_df: pd.DataFrame, gt_df: pd.DataFrame, scores_path="scores",
          gt_path="ground truth") -> Aligned:
    """Match scores to ground truth by Filename; every file must appear in both, once."""
    s_names = scores_df["Filename"].to_numpy(dtype=str)
    g_names = gt_df["Filename"].to_numpy(dtype=str)
    s_set, g_set = set(s_names.tolist()), set(g_names.tolist())
    missing = sorted(g_set - s_set)
    extra = sorted(s_set - g_set)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no scores for {len(missing)} Filename(s) of {gt_path}: "
                         f"{_first(missing)}")
        if extra:
            parts.append(f"{len(extra)} Filename(s) not in {gt_path}: {_first(extra)}")
        raise SewerbenchError(f"{scores_path}: " + "; ".join(parts))
    so = np.argsort(s_names, kind="stable")
    go = np.argsort(g_names, kind="stable")
    return Aligned(
        filenames=g_names[go],
        scores=scores_df[list(CLASS_CODES)].to_numpy(dtype=np.float64)[so],
        targets=gt_df[list(CLASS_CODES)].to_numpy(dtype=np.int64)[go],
    )


def load_aligned(scores_path, gt_path) -> Aligned:
    """Read and validate both files, then :func:`align` them."""
    gt = read_ground_truth_csv(gt_path)
    sc = read_scores_csv(scores_path)
    return align(sc, gt, scores_path, gt_path)


def write_scores_csv(path: str | os.PathLike, filenames, probs) -> None:
    """Write Filename + the 17 class columns atomically (probabilities in [0, 1]).

    float32 input is written with the shortest float32 text, anything else as float64 with
    the shortest round-trip text, so reading the file back preserves every value's order
    and every ``>= 0.5`` decision exactly. NaN, out-of-range values or duplicate filenames
    raise :class:`SewerbenchError` and write nothing.
    """
    filenames = [str(f) for f in filenames]
    probs = np.asarray(probs)
    if probs.dtype != np.float32:
        probs = probs.astype(np.float64)
    if probs.ndim != 2 or probs.shape != (len(filenames), len(CLASS_CODES)):
        raise ValueError(f"probs must have shape ({len(filenames)}, {len(CLASS_CODES)}), "
                         f"got {probs.shape}")
    bad = np.isnan(probs) | (probs < 0) | (probs > 1)
    if bad.any():
        raise SewerbenchError(f"{path}: refusing to write {int(bad.sum())} NaN or out-of-range "
                              f"score(s) (first at Filename {filenames[np.argwhere(bad)[0][0]]})")
    names = pd.Series(filenames, dtype=object)
    if names.duplicated().any():
        dup = list(dict.fromkeys(names[names.duplicated()]))
        raise SewerbenchError(f"{path}: refusing to write duplicate Filename(s): {_first(dup)}")
    df = pd.DataFrame(probs, columns=list(CLASS_CODES))
    df.insert(0, "Filename", filenames)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_scores(path: str | os.PathLike, filenames, probs, binary: bool = False) -> None:
    """The one scores writer: Filename + 17 class probabilities (:func:`write_scores_csv`),
    or ``Filename,Defect`` for a binary stage-1 run; atomic."""
    if not binary:
        write_scores_csv(path, filenames, probs)
        return
    from benchmark.io import atomic_to_csv

    filenames = list(filenames)
    probs = np.asarray(probs, dtype=np.float64)
    df = pd.DataFrame({"Filename": filenames, "Defect": probs.reshape(len(filenames), -1)[:, 0]})
    atomic_to_csv(df, path)
