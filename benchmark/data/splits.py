"""Split preparation: full train/val/test, the published 1/16 subset, stratified fractions.

- ``full``: the official SewerML_Train.csv / SewerML_Val.csv (and SewerML_Test.csv, plus
  SewerML_Test_gt.csv when present, as the synthetic generator writes it).
- ``sub_0.0625``: for real Sewer-ML, exactly the rows of the full CSVs whose filenames are
  in the published MA-Q2L subset files (``data/splits/``); their labels must agree with the
  subset files. For a synthetic dataset (no real filenames) the same systematic rule that
  produced the published files: sort by filename, take every 16th row starting with the
  first, floor(N / 16) rows (at least 1).
- ``frac_<f>``: a seeded, label-stratified cut of the full train split (val stays full),
  see :func:`stratified_fraction`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from benchmark.classes import CLASS_CODES, CSV_COLUMNS
from benchmark.data.annotations import check_images as check_image_files
from benchmark.data.annotations import read_annotations, read_filenames, summarize
from benchmark.data.images import ImageIndex
from benchmark.data.layout import FULL_SPLIT, SPLITS_FILE, SPLITS_FORMAT
from benchmark.errors import SewerbenchError
from benchmark.io import atomic_to_csv, atomic_write_json

log = logging.getLogger(__name__)

SUBSET_FRACTION = 0.0625
SUBSET_STEP = 16
SUBSET_NAME = "sub_0.0625"
#: The published MA-Q2L subset files: name, rows, sha256.
PUBLISHED_SUBSETS: dict[str, tuple[str, int, str]] = {
    "train": ("SewerML_Train_sub_0.0625.csv", 65008,
              "32fcf57bc162f0ee186dd4c57e87d713b6d169dda46698b08a2d013e3fb4dde3"),
    "val": ("SewerML_Val_sub_0.0625.csv", 8127,
            "29eb9a611e8714c61d3da16455405903bb866cca5677d64991b4d70b860349d5"),
}
#: Official file names of a Sewer-ML (or synthetic Sewer-ML) folder.
SOURCE_FILES: dict[str, str] = {
    "train": "SewerML_Train.csv",
    "val": "SewerML_Val.csv",
    "test": "SewerML_Test.csv",
    "test_gt": "SewerML_Test_gt.csv",
}
SUBSET_RULES = ("auto", "published", "systematic")


def default_subset_dir() -> Path:
    """``data/splits`` of the source checkout (falls back to ./data/splits)."""
    here = Path(__file__).resolve().parents[2] / "data" / "splits"
    return here if here.is_dir() else Path("data/splits")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fraction_name(fraction: float) -> str:
    """Folder name of a stratified fraction, e.g. 0.125 -> ``frac_0.125``."""
    return f"frac_{float(fraction):g}"


# --------------------------------------------------------------------------- sources
def find_source_files(source_dir: str | os.PathLike) -> dict[str, Path | None]:
    """Locate the official CSVs in ``source_dir`` (top level first, else anywhere below).

    Train and val are required; test and test_gt may be absent (None).
    """
    root = Path(source_dir)
    if not root.is_dir():
        raise SewerbenchError(f"{root}: source folder not found")
    found: dict[str, Path | None] = {}
    for key, name in SOURCE_FILES.items():
        top = root / name
        if top.is_file():
            found[key] = top
            continue
        hits = sorted(p for p in root.rglob(name) if p.is_file())
        if len(hits) > 1:
            raise SewerbenchError(f"{root}: {name} found {len(hits)} times ({hits[0]}, {hits[1]}); "
                                  f"keep one")
        found[key] = hits[0] if hits else None
    for key in ("train", "val"):
        if found[key] is None:
            raise SewerbenchError(f"{root}: {SOURCE_FILES[key]} not found (expected the official "
                                  f"Sewer-ML annotation CSVs in the source folder)")
    return found


def is_synthetic(source_dir: str | os.PathLike) -> bool:
    """True when the folder's meta.json says ``"synthetic": true`` (the synthetic generator)."""
    meta = Path(source_dir) / "meta.json"
    if not meta.is_file():
        return False
    try:
        return bool(json.loads(meta.read_text(encoding="utf-8")).get("synthetic", False))
    except (OSError, ValueError, AttributeError):
        log.warning("%s: unreadable meta.json, treating the source as real Sewer-ML", meta)
        return False


# --------------------------------------------------------------------------- 1/16 subset
def load_subset_files(subset_dir: str | os.PathLike | None = None) -> dict[str, tuple[Path, pd.DataFrame, str]]:
    """Read the published subset files: {"train"|"val": (path, frame, sha256)}."""
    d = Path(subset_dir) if subset_dir is not None else default_subset_dir()
    out = {}
    for key, (name, rows, sha) in PUBLISHED_SUBSETS.items():
        p = d / name
        if not p.is_file():
            raise SewerbenchError(f"{p}: subset file not found (pass --subset-dir, default data/splits)")
        got = sha256_file(p)
        if got != sha:
            log.warning("%s: sha256 %s differs from the published MA-Q2L file (%s)", p, got[:12], sha[:12])
        out[key] = (p, read_annotations(p), got)
    return out


def published_subset(full: pd.DataFrame, subset: pd.DataFrame, full_path: str | os.PathLike = "full CSV",
                     subset_path: str | os.PathLike = "subset CSV") -> pd.DataFrame:
    """Rows of ``full`` whose filenames are in ``subset``, in the subset's order.

    Every subset filename must be in ``full`` with identical values in every official
    column; otherwise :class:`SewerbenchError` (count and first offender).
    """
    pos = pd.Index(full["Filename"]).get_indexer(subset["Filename"])
    absent = pos < 0
    if absent.any():
        first = subset["Filename"].iloc[int(absent.argmax())]
        raise SewerbenchError(f"{subset_path}: {int(absent.sum())} of {len(subset)} subset filenames are "
                              f"not in {full_path} (first: {first}); is this the real Sewer-ML? "
                              f"For other data use --subset-rule systematic")
    rows = full.iloc[pos].reset_index(drop=True)
    sub = subset.reset_index(drop=True)
    cols = [c for c in CSV_COLUMNS if c != "Filename"]
    diff = rows[cols].to_numpy() != sub[cols].to_numpy()
    bad = diff.any(axis=1)
    if bad.any():
        k = int(bad.argmax())
        which = ", ".join(f"{c} {rows[c].iloc[k]} vs {sub[c].iloc[k]}"
                          for c, d in zip(cols, diff[k]) if d)
        raise SewerbenchError(f"{subset_path}: line {k + 2}: {sub['Filename'].iloc[k]} has other labels "
                              f"in {full_path} ({which}); {int(bad.sum())} rows disagree")
    return rows


def systematic_subset(df: pd.DataFrame, step: int = SUBSET_STEP) -> pd.DataFrame:
    """Sort by filename and take every ``step``-th row from the first: floor(N/step) rows
    (at least 1), the construction of the published 1/16 subset files."""
    if len(df) == 0:
        return df.copy()
    srt = df.sort_values("Filename", kind="stable").reset_index(drop=True)
    n = max(1, len(srt) // step)
    return srt.iloc[0::step].iloc[:n].reset_index(drop=True)


# --------------------------------------------------------------------------- stratified
def _iterative_stratify(y: np.ndarray, want_k: np.ndarray, want_total: float,
                        rng: np.random.Generator) -> np.ndarray:
    """Iterative stratification (Sechidis et al., 2011) into two parts; returns the mask of
    rows that go to part 0, whose desired label counts are ``want_k`` and size ``want_total``."""
    m, k = y.shape
    desired = np.stack([want_k.astype(np.float64), y.sum(axis=0) - want_k]).astype(np.float64)
    desired_total = np.array([float(want_total), float(m) - float(want_total)])
    part = np.full(m, -1, dtype=np.int64)
    remaining = np.ones(m, dtype=bool)
    label_left = y.sum(axis=0).astype(np.int64)
    order = rng.permutation(m)

    def assign(r: int, col: int | None) -> None:
        if col is not None:
            d = desired[:, col]
            cands = np.flatnonzero(d == d.max())
        else:
            cands = np.array([0, 1])
        if len(cands) > 1:
            t = desired_total[cands]
            cands = cands[t == t.max()]
        s = int(cands[0] if len(cands) == 1 else rng.choice(cands))
        part[r] = s
        desired[s, y[r]] -= 1
        desired_total[s] -= 1
        remaining[r] = False
        label_left[y[r]] -= 1

    while True:
        live = label_left > 0
        if not live.any():
            break
        col = int(np.flatnonzero(live)[np.argmin(label_left[live])])
        rows = order[remaining[order] & y[order, col]]
        for r in rows:
            assign(int(r), col)
    for r in order[remaining[order]]:
        assign(int(r), None)
    return part == 0


def _refine(sel: np.ndarray, counts: np.ndarray, yg: np.ndarray, want_k: np.ndarray,
            want_total: float, max_moves: int, top: int = 256) -> np.ndarray:
    """Greedy local search on per-group selection counts: add, remove or swap one row at a
    time while that lowers |class-count deviation|^2 + (size deviation)^2."""
    sel = sel.copy()
    yf = yg.astype(np.float64)
    sq = yf.sum(axis=1)  # |y|^2 for 0/1 vectors
    for _ in range(max_moves):
        d = yf.T @ sel - want_k
        s = float(sel.sum()) - want_total
        yd = yf @ d
        can_rm = sel > 0
        can_add = sel < counts
        r = np.where(can_rm, -2 * yd + sq, np.inf)   # change in J from removing one row of a group
        q = np.where(can_add, 2 * yd + sq, np.inf)   # ... from adding one
        best, move = -1e-9, None
        if can_rm.any():
            a = int(np.argmin(r))
            if r[a] - 2 * s + 1 < best:
                best, move = r[a] - 2 * s + 1, ("rm", a, -1)
        if can_add.any():
            b_ = int(np.argmin(q))
            if q[b_] + 2 * s + 1 < best:
                best, move = q[b_] + 2 * s + 1, ("add", -1, b_)
        if can_rm.any() and can_add.any():
            ia = np.argsort(r, kind="stable")[:min(top, int(can_rm.sum()))]
            ib = np.argsort(q, kind="stable")[:min(top, int(can_add.sum()))]
            change = r[ia][:, None] + q[ib][None, :] - 2 * (yf[ia] @ yf[ib].T)
            change[ia[:, None] == ib[None, :]] = np.inf
            flat = int(np.argmin(change))
            i, j = divmod(flat, change.shape[1])
            if change[i, j] < best:
                best, move = change[i, j], ("swap", int(ia[i]), int(ib[j]))
        if move is None:
            break
        _, ga, gb = move
        if ga >= 0:
            sel[ga] -= 1
        if gb >= 0:
            sel[gb] += 1
    return sel


def stratified_fraction(df: pd.DataFrame, fraction: float, seed: int = 0,
                        label_columns: Sequence[str] = CLASS_CODES) -> pd.DataFrame:
    """A seeded, label-stratified random ``fraction`` of the rows of ``df`` (original order).

    Multi-label iterative stratification, fast and robust to a sparse label powerset: rows
    are grouped by label combination (rows of one group are interchangeable and taken in a
    seeded random order); floor(fraction x group size) rows of every group are taken
    outright; the fractional remainders (one candidate row per group) are distributed by
    Sechidis et al.'s (2011) iterative stratification; a greedy local search (add / remove /
    swap one row) then brings every class count, and the size, to the nearest achievable
    value of fraction x full count. The all-negative ("Normal") combination is one group, so
    Normal keeps its share too. Same ``df``, ``fraction`` and ``seed`` give the same rows.
    """
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise SewerbenchError(f"stratified_fraction: fraction must be in (0, 1], got {fraction}")
    missing = [c for c in label_columns if c not in df.columns]
    if missing:
        raise SewerbenchError(f"stratified_fraction: missing label columns {', '.join(missing)}")
    n = len(df)
    if fraction == 1.0 or n == 0:
        return df.reset_index(drop=True).copy()
    rng = np.random.default_rng(seed)
    y = df[list(label_columns)].to_numpy() == 1
    y = np.column_stack([y, ~y.any(axis=1)])  # "Normal" as an extra label to stratify on
    k = y.shape[1]
    codes = y.astype(np.int64) @ (np.int64(1) << np.arange(k, dtype=np.int64))
    shuffled = rng.permutation(n)
    perm = shuffled[np.argsort(codes[shuffled], kind="stable")]
    _, starts, counts = np.unique(codes[perm], return_index=True, return_counts=True)
    yg = y[perm[starts]]  # (G, K) label vector of each group
    want_k = fraction * y.sum(axis=0)
    want_total = round(fraction * n)
    sel = np.floor(counts * fraction + 1e-9).astype(np.int64)
    groups = np.flatnonzero(counts * fraction - sel > 1e-9)
    if len(groups):
        chosen = _iterative_stratify(yg[groups], want_k - yg.T.astype(np.int64) @ sel,
                                     want_total - int(sel.sum()), rng)
        sel[groups[chosen]] += 1
    sel = _refine(sel, counts, yg, want_k, want_total, max_moves=4 * k + 4 * len(groups) + 100)
    rows = np.concatenate([perm[s:s + c] for s, c in zip(starts, sel) if c > 0])
    return df.iloc[np.sort(rows)].reset_index(drop=True)


# --------------------------------------------------------------------------- prepare
def _check_disjoint(a: pd.DataFrame, b: pd.DataFrame, a_path, b_path) -> None:
    both = pd.Index(a["Filename"]).intersection(pd.Index(b["Filename"]))
    if len(both):
        raise SewerbenchError(f"{b_path}: {len(both)} filenames are also in {a_path} "
                              f"(first: {sorted(both)[0]}); splits must be disjoint")


def image_fingerprint(index: ImageIndex, names: Iterable[str]) -> dict:
    """{"count", "sha256"}: a digest over the names and bytes of the images ``names``."""
    h, n = hashlib.sha256(), 0
    for name in names:
        with open(index.path(name), "rb") as fh:
            h.update(f"{name}\t{hashlib.sha256(fh.read()).hexdigest()}\n".encode())
        n += 1
    return {"count": n, "sha256": h.hexdigest()}


def prepare(source_dir: str | os.PathLike, out_dir: str | os.PathLike,
            fractions: Iterable[float] = (), seed: int = 0,
            subset_dir: str | os.PathLike | None = None, subset_rule: str = "auto",
            check_images: bool = True) -> dict:
    """Validate a Sewer-ML folder and write the prepared split CSVs and ``splits.json``.

    Writes (atomically) ``out/full/{train,val}.csv`` (+ ``test.csv`` Filename only and
    ``test_gt.csv`` when the source has test labels), ``out/sub_0.0625/{train,val}.csv`` and
    ``out/frac_<f>/{train,val}.csv`` for each fraction (val = the full val split), then
    ``out/splits.json`` (counts and positives per class). ``subset_rule``: "published"
    (real Sewer-ML: the published subset files), "systematic" (every 16th sorted filename) or
    "auto" (systematic when the source's meta.json says synthetic, else published).
    Returns the splits.json content.
    """
    if subset_rule not in SUBSET_RULES:
        raise SewerbenchError(f"prepare: unknown subset rule {subset_rule!r} (choose from {', '.join(SUBSET_RULES)})")
    source = Path(source_dir)
    out = Path(out_dir)
    files = find_source_files(source)
    synthetic = is_synthetic(source)
    index = ImageIndex(source) if check_images else None
    if index is not None:
        log.info("found %d images under %s", len(index), source)

    train = read_annotations(files["train"], index)
    val = read_annotations(files["val"], index)
    _check_disjoint(train, val, files["train"], files["val"])
    test = test_gt = None
    if files["test"] is not None:
        test = read_filenames(files["test"], index)
        _check_disjoint(train, test, files["train"], files["test"])
        _check_disjoint(val, test, files["val"], files["test"])
    if files["test_gt"] is not None:
        test_gt = read_annotations(files["test_gt"])
        if test is None:
            test = test_gt[["Filename"]].copy()
            if index is not None:
                check_image_files(test["Filename"], index, files["test_gt"])
        elif set(test_gt["Filename"]) != set(test["Filename"]):
            raise SewerbenchError(f"{files['test_gt']}: filenames differ from {files['test']}")
    log.info("full splits: train %d, val %d, test %s rows", len(train), len(val),
             "-" if test is None else len(test))

    rule = subset_rule if subset_rule != "auto" else ("systematic" if synthetic else "published")
    subset_info: dict = {"rule": rule}
    if rule == "published":
        subs = load_subset_files(subset_dir)
        sub_train = published_subset(train, subs["train"][1], files["train"], subs["train"][0])
        sub_val = published_subset(val, subs["val"][1], files["val"], subs["val"][0])
        subset_info["files"] = {k: {"path": str(p), "sha256": sha,
                                    "published": sha == PUBLISHED_SUBSETS[k][2]}
                                for k, (p, _, sha) in subs.items()}
        log.info("1/16 subset: the published MA-Q2L subset files (%d train, %d val rows)",
                 len(sub_train), len(sub_val))
    else:
        sub_train, sub_val = systematic_subset(train), systematic_subset(val)
        subset_info["note"] = ("synthetic or non-Sewer-ML source: every 16th row of the "
                               "filename-sorted CSV from the first, floor(N/16) rows, the "
                               "construction of the published subset files")
        log.info("1/16 subset: %s source, systematic rule (sorted filenames, every 16th row): "
                 "%d train, %d val rows", "synthetic" if synthetic else "non-Sewer-ML",
                 len(sub_train), len(sub_val))

    outputs: dict[str, pd.DataFrame] = {f"{FULL_SPLIT}/train": train, f"{FULL_SPLIT}/val": val}
    if test is not None:
        outputs[f"{FULL_SPLIT}/test"] = test
    if test_gt is not None:
        outputs[f"{FULL_SPLIT}/test_gt"] = test_gt
    outputs[f"{SUBSET_NAME}/train"] = sub_train
    outputs[f"{SUBSET_NAME}/val"] = sub_val
    fracs = []
    for f in fractions:
        f = float(f)
        if not 0.0 < f <= 1.0:
            raise SewerbenchError(f"prepare: fraction must be in (0, 1], got {f}")
        if f in fracs:
            continue
        fracs.append(f)
        cut = stratified_fraction(train, f, seed)
        outputs[f"{fraction_name(f)}/train"] = cut
        outputs[f"{fraction_name(f)}/val"] = val
        log.info("%s: %d of %d train rows (stratified, seed %d)", fraction_name(f), len(cut), len(train), seed)

    splits = {}
    for name, df in outputs.items():
        path = out / f"{name}.csv"
        atomic_to_csv(df, path)
        splits[name] = {"path": f"{name}.csv", **summarize(df)}
    images_info = None
    if synthetic and index is not None:
        images_info = image_fingerprint(index, sorted({n for df in outputs.values() for n in df["Filename"]}))
    summary = {
        "format": SPLITS_FORMAT,
        # paths as given (relative to the working directory when given so), so the output
        # does not depend on where the checkout lives
        "source": os.fspath(source),
        "image_root": os.fspath(source),
        "kind": "synthetic" if synthetic else "real",
        "images_checked": bool(check_images),
        "seed": int(seed),
        "fractions": fracs,
        "subset": subset_info,
        "source_files": {k: (str(p) if p is not None else None) for k, p in files.items()},
        "splits": splits,
    }
    if images_info is not None:
        # the training stages depend on data/prepared, not on the 32k files of the synthetic
        # folder (DVC would stat them all once per stage): new images change this digest
        summary["images"] = images_info
    atomic_write_json(out / SPLITS_FILE, summary)
    log.info("wrote %d split files and %s", len(splits), out / SPLITS_FILE)
    return summary
