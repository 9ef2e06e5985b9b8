"""Read and validate the official Sewer-ML annotation CSVs.

Every problem is reported as a one-line :class:`SewerbenchError` naming the file, the line
(1-based, as in the file: the header is line 1) or column, and the problem. All checks are
vectorised pandas so a 1M-row CSV validates in seconds.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
import pandas as pd

from benchmark.classes import CLASS_CODES, CSV_COLUMNS
from benchmark.errors import SewerbenchError

if TYPE_CHECKING:  # pragma: no cover
    from benchmark.data.images import ImageIndex

log = logging.getLogger(__name__)

#: Columns whose values must be 0/1 (the 17 classes plus VA, ND and Defect).
BINARY_COLUMNS: tuple[str, ...] = ("VA", *CLASS_CODES, "ND", "Defect")
#: How many offending filenames an error message lists.
SHOW = 5


def _line(index_value) -> int:
    """File line number of a data row (header is line 1, first data row line 2)."""
    return int(index_value) + 2


def _read_csv(path: Path, usecols=None) -> pd.DataFrame:
    if not path.exists():
        raise SewerbenchError(f"{path}: file not found")
    if path.is_dir():
        raise SewerbenchError(f"{path}: is a directory, expected a CSV file")
    try:
        df = pd.read_csv(path, dtype={"Filename": str}, skip_blank_lines=False,
                         keep_default_na=False, na_values=[""], usecols=usecols,
                         encoding="utf-8", low_memory=False)
    except pd.errors.EmptyDataError:
        raise SewerbenchError(f"{path}: empty file (no header)") from None
    except pd.errors.ParserError as exc:
        msg = " ".join(str(exc).split())
        raise SewerbenchError(f"{path}: malformed CSV: {msg}") from None
    except UnicodeDecodeError as exc:
        raise SewerbenchError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:  # usecols mismatch and similar
        msg = " ".join(str(exc).split())
        raise SewerbenchError(f"{path}: unreadable CSV: {msg}") from None
    except OSError as exc:
        raise SewerbenchError(f"{path}: cannot read: {exc.strerror or exc}") from None
    df.columns = [str(c).strip() for c in df.columns]
    # Blank lines are kept as all-NaN rows so index+2 stays the file line; drop them now.
    if len(df):
        blank = df.isna().all(axis=1)
        if blank.any():
            df = df.loc[~blank]
    return df


def _check_filenames(df: pd.DataFrame, path: Path) -> None:
    names = df["Filename"]
    missing = names.isna()
    if missing.any():
        raise SewerbenchError(f"{path}: line {_line(names.index[missing.argmax()])}: "
                              f"column Filename: empty filename")
    names = names.astype(str)
    # One vectorised pass finds both problems; the slower detail only runs on failure.
    suspicious = names.str.contains(r"[/\\]|^\s|\s$", regex=True) | names.isin(["", ".", ".."])
    if suspicious.any():
        spaced = names[suspicious].str.strip() != names[suspicious]
        if spaced.any():
            i = spaced.index[spaced.argmax()]
            raise SewerbenchError(f"{path}: line {_line(i)}: column Filename: filename "
                                  f"{names[i]!r} has leading or trailing whitespace")
        i = names.index[suspicious.argmax()]
        raise SewerbenchError(f"{path}: line {_line(i)}: column Filename: {names[i]!r} has path "
                              f"components ({int(suspicious.sum())} such rows); filenames must be "
                              f"bare names like 00000001.png")
    dup = names.duplicated(keep=False)
    if dup.any():
        first = names[dup].iloc[0]
        lines = [_line(i) for i in names.index[(names == first).to_numpy()]]
        n_dup = int(names.duplicated().sum())
        raise SewerbenchError(f"{path}: line {lines[1]}: column Filename: duplicate filename "
                              f"{first!r} (also on line {lines[0]}; {n_dup} duplicate rows in all)")


def _check_binary(df: pd.DataFrame, path: Path, col: str, allowed: np.ndarray) -> pd.Series:
    """Return the column as int64, raising on the first non-binary value."""
    s = df[col]
    if pd.api.types.is_integer_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        vals = s.to_numpy()
        ok = np.isin(vals, allowed)
        if ok.all():
            return s.astype(np.int64)
        bad = ~ok
    else:
        num = pd.to_numeric(s, errors="coerce")
        ok = num.isin(allowed).to_numpy()
        if ok.all():
            return num.astype(np.int64)
        bad = ~ok
    i = s.index[bad.argmax()]
    shown = "" if pd.isna(s[i]) else str(s[i])
    what = "empty value" if shown == "" else f"value {shown!r}"
    allowed_txt = "/".join(str(a) for a in allowed)
    raise SewerbenchError(f"{path}: line {_line(i)}: column {col}: {what} is not binary "
                          f"(allowed {allowed_txt}; {int(bad.sum())} bad rows in this column)")


def _check_waterlevel(df: pd.DataFrame, path: Path) -> pd.Series:
    s = df["WaterLevel"]
    num = pd.to_numeric(s, errors="coerce")
    ok = (num.notna() & (num == np.round(num)) & (num >= 0) & (num <= 100)).to_numpy()
    if not ok.all():
        i = s.index[(~ok).argmax()]
        shown = "" if pd.isna(s[i]) else str(s[i])
        raise SewerbenchError(f"{path}: line {_line(i)}: column WaterLevel: value {shown!r} is not "
                              f"an integer percentage 0-100")
    return num.astype(np.int64)


def check_images(filenames: Iterable[str], image_index: "ImageIndex", path: str | os.PathLike) -> None:
    """Raise if any filename has no image under ``image_index``'s root (count + first few)."""
    missing = image_index.missing(filenames)
    if missing:
        shown = ", ".join(missing[:SHOW]) + (", ..." if len(missing) > SHOW else "")
        raise SewerbenchError(f"{path}: {len(missing)} filenames have no image under "
                              f"{image_index.root} (first: {shown})")


def read_annotations(path: str | os.PathLike, image_index: "ImageIndex | None" = None, *,
                     allow_uncertain: bool = False) -> pd.DataFrame:
    """Read an official annotation CSV (train, val, test ground truth or a 1/16 subset).

    Returns a DataFrame with exactly ``CSV_COLUMNS`` in official order (extra columns are
    dropped), a default RangeIndex, ``Filename`` as strings (leading zeros kept) and every
    other column int64. Raises :class:`SewerbenchError` for: unreadable file, missing
    columns, non-binary labels, WaterLevel outside 0-100, duplicate filenames, filenames
    with path components, Defect inconsistent with the 17 labels and (when ``image_index``
    is given) filenames with no image. ``allow_uncertain=True`` also accepts -1 in the 17
    class columns (the official metric counts -1 as 0; :class:`SewerMLDataset` maps it to 0).
    Rows with ND == 1 and Defect == 1 are only logged as a warning.
    """
    path = Path(path)
    df = _read_csv(path)
    missing_cols = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing_cols:
        raise SewerbenchError(f"{path}: header: missing columns {', '.join(missing_cols)} "
                              f"(expected {','.join(CSV_COLUMNS)})")
    extra = [c for c in df.columns if c not in CSV_COLUMNS]
    if extra:
        log.debug("%s: ignoring extra columns %s", path, extra)
    if len(df) == 0:
        raise SewerbenchError(f"{path}: no data rows")
    _check_filenames(df, path)

    binary = np.array([0, 1])
    ternary = np.array([-1, 0, 1])
    out = {"Filename": df["Filename"].astype(str), "WaterLevel": _check_waterlevel(df, path)}
    for col in BINARY_COLUMNS:
        allowed = ternary if (allow_uncertain and col in CLASS_CODES) else binary
        out[col] = _check_binary(df, path, col, allowed)
    res = pd.DataFrame(out, columns=list(CSV_COLUMNS))

    labels = res[list(CLASS_CODES)].to_numpy()
    any_pos = (labels == 1).any(axis=1).astype(np.int64)
    defect = res["Defect"].to_numpy()
    bad = any_pos != defect
    if bad.any():
        k = int(bad.argmax())
        i = res.index[k]
        why = ("Defect is 1 but all 17 class labels are 0" if defect[k] == 1 else
               "Defect is 0 but class " +
               ",".join(c for c, v in zip(CLASS_CODES, labels[k]) if v == 1) + " is 1")
        raise SewerbenchError(f"{path}: line {_line(i)}: column Defect: {why} "
                              f"({int(bad.sum())} inconsistent rows in all)")
    nd_bad = (res["ND"].to_numpy() == 1) & (defect == 1)
    if nd_bad.any():
        log.warning("%s: %d rows have ND == 1 and Defect == 1 (first on line %d)", path,
                    int(nd_bad.sum()), _line(res.index[nd_bad.argmax()]))
    res = res.reset_index(drop=True)
    if image_index is not None:
        check_images(res["Filename"], image_index, path)
    return res


def read_filenames(path: str | os.PathLike, image_index: "ImageIndex | None" = None) -> pd.DataFrame:
    """Read a Filename-only CSV (the public SewerML_Test.csv); other columns are ignored.

    Returns a DataFrame with the single column ``Filename``; validated for empty, duplicate
    and path-like filenames and, with ``image_index``, for missing images.
    """
    path = Path(path)
    df = _read_csv(path)
    if "Filename" not in df.columns:
        raise SewerbenchError(f"{path}: header: missing column Filename")
    if len(df) == 0:
        raise SewerbenchError(f"{path}: no data rows")
    _check_filenames(df, path)
    res = pd.DataFrame({"Filename": df["Filename"].astype(str)}).reset_index(drop=True)
    if image_index is not None:
        check_images(res["Filename"], image_index, path)
    return res


def label_matrix(df: pd.DataFrame) -> np.ndarray:
    """The (N, 17) float32 target matrix of a validated DataFrame; -1 (uncertain) becomes 0."""
    y = np.array(df[list(CLASS_CODES)].to_numpy(), dtype=np.float32)  # a writable copy
    np.maximum(y, 0.0, out=y)
    return y


def summarize(df: pd.DataFrame) -> dict:
    """Counts for splits.json: rows, normal, defective and positives per class."""
    if all(c in df.columns for c in CLASS_CODES):
        y = df[list(CLASS_CODES)].to_numpy() == 1
        defective = int(y.any(axis=1).sum())
        return {"rows": int(len(df)), "normal": int(len(df) - defective), "defective": defective,
                "positives": {c: int(n) for c, n in zip(CLASS_CODES, y.sum(axis=0))}}
    return {"rows": int(len(df))}
