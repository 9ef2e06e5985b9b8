"""Result tables: Table 3 (published beside ours), per-class, ablation, Sewer-ML Tables 4/5.

Every builder works on plain inputs (metric dicts in the official JSON layout, CI dicts,
paired-bootstrap dicts) and returns a pandas DataFrame; :func:`write_table` writes it as
CSV, Markdown and LaTeX (atomically), with a header that states data and profile.

Layout of the evaluation results consumed here (written by :func:`benchmark.evaluation.evaluate_run`):
``<metrics_dir>/<run>/<split>.json`` holds the official metrics JSON, optionally with the
``"Bootstrap"`` block of ``sewerbench evaluate --bootstrap`` (``{"F2_CIW": [lo, hi], "F1_Normal": [lo, hi], ...}``);
the schemas are those of :mod:`benchmark.artifacts`.
``split`` is ``val`` (full val set), ``val_sub`` (the 1/16 val set) or ``test``.

Seeds. A run with ``seeds:`` in params.yaml (:func:`benchmark.matrix.seed_groups`: the run
and its ``<run>_seed<s>`` runs) is shown as its first seed's value with that run's image
bootstrap CI (as for every run), beside the seed mean ± sd (sample sd, ``ddof=1``) of F2-CIW,
F1-Normal (and mAP where the table shows it) and the number of seeds with metrics; the CSVs
carry ``*_mean``, ``*_sd`` and ``*n_seeds`` columns for every row (single-seed rows: the
value, empty sd, 1). Tables without a multi-seed run display exactly as before.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark import artifacts as A
from benchmark import published
from benchmark.classes import CIW, CLASS_CODES, CLASS_NAMES, NORMAL
from benchmark.data.layout import FULL_SPLIT, PreparedLayout
from benchmark.io import atomic_to_csv, atomic_write_text
from benchmark.matrix import ablation_cells, ablation_pairs, ablation_reference, seed_groups

log = logging.getLogger(__name__)

SPLITS = A.EVAL_SETS

Metrics = Mapping[str, Mapping[str, Mapping[str, Any]]]   # run -> split -> metrics JSON
Seeds = Mapping[str, Sequence[str]]                        # run -> its run names over seeds

#: Headline keys with a seed mean ± sd.
SEED_KEYS = ("F2", "F1", "mAP")
#: Display separator of mean and sd.
PM = "±"


# ----------------------------------------------------------------------------- loading
def load_metrics(metrics_dir: str | Path) -> dict[str, dict[str, dict]]:
    """Read ``<metrics_dir>/<run>/<split>.json`` into ``{run: {split: metrics}}``."""
    out: dict[str, dict[str, dict]] = {}
    root = Path(metrics_dir)
    if not root.is_dir():
        return out
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for split in SPLITS:
            f = run_dir / A.metrics_file(split)
            if f.is_file():
                out.setdefault(run_dir.name, {})[split] = json.loads(f.read_text())
    return out


def ci_block(m: Mapping[str, Any] | None) -> dict:
    """The bootstrap block of a metrics JSON (:data:`benchmark.artifacts.BOOTSTRAP`), or {}."""
    return A.bootstrap_of(m)


def headline(m: Mapping[str, Any] | None) -> dict[str, float]:
    """F1-Normal, F2-CIW and mAP (in %) of one metrics JSON, plus CI bounds if present."""
    if not m:
        return {}
    out = {"F1": 100 * m[A.NEW][A.F1_NORMAL], "F2": 100 * m[A.NEW][A.F2],
           "mAP": 100 * m[A.MAIN][A.MAP]}
    boot = ci_block(m)
    for key, name in ((A.F1_NORMAL, "F1"), (A.F2_CIW, "F2")):
        if key in boot and boot[key] is not None:
            lo, hi = boot[key]
            out[f"{name}_lo"], out[f"{name}_hi"] = 100 * lo, 100 * hi
    return out


def _get(metrics: Metrics, run: str | None, split: str) -> Mapping[str, Any] | None:
    if run is None:
        return None
    return metrics.get(run, {}).get(split)


def seed_stats(metrics: Metrics, names: Sequence[str], split: str) -> dict[str, Any]:
    """Over the runs ``names`` (one run's seeds) that have ``split`` metrics: ``n`` and, per
    headline key (F2, F1, mAP, in %), ``<key>_mean`` and ``<key>_sd`` (sample sd, ddof=1;
    None with fewer than two seeds; both None without metrics)."""
    found = [headline(_get(metrics, r, split)) for r in names]
    found = [h for h in found if h]
    out: dict[str, Any] = {"n": len(found)}
    for k in SEED_KEYS:
        v = np.array([h[k] for h in found], dtype=np.float64)
        out[f"{k}_mean"] = float(v.mean()) if len(v) else None
        out[f"{k}_sd"] = float(v.std(ddof=1)) if len(v) > 1 else None
    return out


def _group(seeds: Seeds | None, run: str | None) -> list[str]:
    if not run:
        return []
    return list((seeds or {}).get(run) or [run])


def _multi(seeds: Seeds | None, runs: Sequence[str | None]) -> bool:
    """True when one of ``runs`` has several seeds (its table shows the seed columns)."""
    return any(len(_group(seeds, r)) > 1 for r in runs)


def fmt_seeds(n: int, configured: int) -> str:
    """``3``, or ``2 of 3`` when some seeds have no metrics yet; empty for none."""
    if not n:
        return ""
    return str(n) if n == configured else f"{n} of {configured}"


# ----------------------------------------------------------------------------- formatting
def fmt(x: Any, digits: int = 2) -> str:
    """Number with fixed decimals; empty for None/nan."""
    if x is None:
        return ""
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(xf):
        return ""
    return f"{xf:.{digits}f}"


def fmt_ci(value: Any, lo: Any = None, hi: Any = None) -> str:
    """``62.38 [60.10, 64.50]`` (or just the value when no interval)."""
    s = fmt(value)
    if s and fmt(lo) and fmt(hi):
        s += f" [{fmt(lo)}, {fmt(hi)}]"
    return s


def fmt_mean_sd(mean: Any, sd: Any = None, digits: int = 2) -> str:
    """``62.38 ± 0.45`` (just the mean when there is no sd); empty without a mean."""
    s = fmt(mean, digits)
    if s and fmt(sd, digits):
        s += f" {PM} {fmt(sd, digits)}"
    return s


def data_description(profile: str, source: str) -> str:
    """One-line statement of what data the numbers come from."""
    if source == "synthetic":
        return (f"Data: SYNTHETIC Sewer-ML (sewerbench synth), profile `{profile}`. "
                "These numbers are not a reproduction of the papers' numbers; "
                "they only exercise the pipeline.")
    return f"Data: real Sewer-ML ({source}), profile `{profile}`."


def to_markdown(df: pd.DataFrame) -> str:
    """GitHub Markdown table (no external dependency)."""
    cols = [str(c) for c in df.columns]
    rows = [["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
             for v in r] for r in df.itertuples(index=False, name=None)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


_TEX_ESCAPE = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
               "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}",
               PM: r"$\pm$"}


def tex_escape(s: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in str(s))


def to_latex(df: pd.DataFrame, caption: str = "") -> str:
    """A booktabs ``tabular`` (inside a ``table``) with escaped cells."""
    cols = [tex_escape(c) for c in df.columns]
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        lines.append(r"\caption{" + tex_escape(caption) + "}")
    lines += [r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule", " & ".join(cols) + r" \\",
              r"\midrule"]
    for r in df.itertuples(index=False, name=None):
        cells = ["" if v is None or (isinstance(v, float) and math.isnan(v)) else tex_escape(v)
                 for v in r]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(numeric: pd.DataFrame, display: pd.DataFrame, out_stem: str | Path,
                title: str, header: Sequence[str] = (), formats: Sequence[str] = ("csv", "md", "tex")
                ) -> list[Path]:
    """Write ``numeric`` as CSV and ``display`` as Markdown/LaTeX, atomically."""
    stem = Path(out_stem)
    written = []
    if "csv" in formats:
        p = stem.with_suffix(".csv")
        atomic_to_csv(numeric, p, float_format="%.4f")
        written.append(p)
    if "md" in formats:
        p = stem.with_suffix(".md")
        text = f"# {title}\n\n" + "".join(f"{h}\n\n" for h in header) + to_markdown(display)
        atomic_write_text(p, text)
        written.append(p)
    if "tex" in formats:
        p = stem.with_suffix(".tex")
        text = "".join(f"% {h}\n" for h in header) + to_latex(display, caption=title)
        atomic_write_text(p, text)
        written.append(p)
    return written


# ----------------------------------------------------------------------------- Table 3
def table3(metrics: Metrics, rows: Sequence[published.Table3Row] = published.TABLE3,
           seeds: Seeds | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 3 of the MA-Q2L paper, published numbers beside ours (numeric, display).

    ``seeds``: run -> its runs over seeds (:func:`benchmark.matrix.seed_groups`); a row whose
    run has several gets the seed mean ± sd beside the first seed's value and CI."""
    num, disp = [], []
    multi = _multi(seeds, [r.run for r in rows])
    for row in rows:
        rec: dict[str, Any] = {"key": row.key, "training_data": row.fraction, "model": row.model,
                               "run": row.run or "", "eval_split": row.val_split if row.run else ""}
        ours = {"val": headline(_get(metrics, row.run, row.val_split)),
                "test": headline(_get(metrics, row.run, "test"))}
        group = _group(seeds, row.run)
        stats = {"val": seed_stats(metrics, group, row.val_split),
                 "test": seed_stats(metrics, group, "test")}
        for split in ("val", "test"):
            for k in ("F1", "F2"):
                pub = getattr(row, f"{split}_{k.lower()}")
                o = ours[split]
                rec[f"{split}_{k.lower()}_paper"] = pub
                rec[f"{split}_{k.lower()}_ours"] = o.get(k)
                rec[f"{split}_{k.lower()}_ours_lo"] = o.get(f"{k}_lo")
                rec[f"{split}_{k.lower()}_ours_hi"] = o.get(f"{k}_hi")
                rec[f"{split}_{k.lower()}_ours_mean"] = stats[split][f"{k}_mean"]
                rec[f"{split}_{k.lower()}_ours_sd"] = stats[split][f"{k}_sd"]
            rec[f"{split}_n_seeds"] = stats[split]["n"]
        if row.run is None:
            note = row.reason or "not re-run"
        elif not ours["val"]:
            note = f"run `{row.run}` has no `{row.val_split}` metrics yet"
        else:
            note = f"run `{row.run}` on `{row.val_split}`"
        rec["note"] = note
        num.append(rec)
        d = {"Training data": row.fraction, "Model": row.model}
        for split in ("val", "test"):
            for k in ("F1", "F2"):
                key = f"{split}_{k.lower()}"
                d[f"{split} {k} (paper)"] = fmt(rec[f"{key}_paper"])
                d[f"{split} {k} (ours, 95% CI)"] = fmt_ci(rec[f"{key}_ours"], rec[f"{key}_ours_lo"],
                                                          rec[f"{key}_ours_hi"])
                if multi:
                    d[f"{split} {k} (ours, mean {PM} sd)"] = _mean_sd_cell(
                        rec[f"{key}_ours_mean"], rec[f"{key}_ours_sd"], group)
        if multi:
            d["Seeds"] = fmt_seeds(rec["val_n_seeds"], len(group))
        d["Note"] = note
        disp.append(d)
    return pd.DataFrame(num), pd.DataFrame(disp)


def _mean_sd_cell(mean: Any, sd: Any, group: Sequence[str]) -> str:
    """The ``mean ± sd`` display cell of a multi-seed row (empty for a single-seed row)."""
    return fmt_mean_sd(mean, sd) if len(group) > 1 else ""


# ----------------------------------------------------------------------------- per class
def per_class_table(m: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """17 classes + Normal: CIW, P, R, F1, F2, AP (in %) and Ng/Np/Nc from one metrics JSON."""
    aux, new = m[A.AUXILLARY], m[A.NEW]
    codes = list(CLASS_CODES) + [NORMAL]
    num = []
    for i, code in enumerate(codes):
        is_normal = i == len(CLASS_CODES)
        num.append({
            "class": code,
            "name": "no defect (all 17 labels 0)" if is_normal else CLASS_NAMES[code],
            "CIW": None if is_normal else float(CIW[i]),
            "P": 100 * aux["P_class"][i], "R": 100 * aux["R_class"][i],
            "F1": 100 * aux["F1_class"][i], "F2": 100 * new["F2_class"][i],
            "AP": None if is_normal else 100 * aux["AP"][i],
            "Ng": aux["Ng"][i], "Np": aux["Np"][i], "Nc": aux["Nc"][i],
        })
    df = pd.DataFrame(num)
    disp = pd.DataFrame({
        "Class": df["class"], "Name": df["name"],
        "CIW": [fmt(v, 4) for v in df["CIW"]],
        **{k: [fmt(v) for v in df[k]] for k in ("P", "R", "F1", "F2", "AP")},
        "Ng": [fmt(v, 0) for v in df["Ng"]],
    })
    summary = pd.DataFrame([{
        "Class": "F2-CIW / F1-Normal / mAP", "Name": "", "CIW": "",
        "P": "", "R": "", "F1": fmt(100 * new[A.F1_NORMAL]), "F2": fmt(100 * new[A.F2]),
        "AP": fmt(100 * m[A.MAIN][A.MAP]), "Ng": ""}])
    return df, pd.concat([disp, summary], ignore_index=True)


# ----------------------------------------------------------------------------- ablation
# ablation_cells (the MA x LC cells of params.yaml runs:) lives in benchmark.matrix.
def paired_against_reference(params: Mapping[str, Any], runs_dir: str | Path,
                             prepared: str | Path | PreparedLayout, n: int, seed: int
                             ) -> tuple[dict[str, A.PairedComparison | A.SeedPairedComparison],
                                        dict[str, str]]:
    """Paired bootstrap (full val set) of every ablation cell against its reference cell
    (:func:`benchmark.matrix.ablation_pairs`); returns ``({cell run: comparison}, reference)``.

    Each arm is the cell's runs over its seeds (:func:`benchmark.matrix.seed_groups`) that
    have val scores. Both arms with one seed: the image bootstrap
    :func:`benchmark.bootstrap.paired_bootstrap`; otherwise the two-level (images x seeds)
    :func:`benchmark.bootstrap.paired_seed_bootstrap`. A pair with an arm without any scores
    file is skipped with a warning, as is (with a warning) a seed run without scores."""
    from benchmark.bootstrap import paired_bootstrap, paired_seed_bootstrap
    from benchmark.scores import load_aligned

    layout = prepared if isinstance(prepared, PreparedLayout) else PreparedLayout.from_dir(prepared)
    runs_dir = Path(runs_dir)
    gt = layout.val_csv(layout.full_split)
    out: dict[str, A.PairedComparison] = {}
    cache: dict = {}

    def load(run):
        if run not in cache:
            f = runs_dir / run / A.scores_file(A.EVAL_VAL)
            cache[run] = load_aligned(f, gt) if f.is_file() else None
        return cache[run]

    groups = seed_groups(params.get("runs"))

    def arm(name):
        names = groups.get(name, [name])
        loaded = [(r, load(r)) for r in names]
        missing = [r for r, d in loaded if d is None]
        present = [d for _, d in loaded if d is not None]
        if missing and present:
            log.warning("ablation: no val scores for %s; %s compared over %d of %d seeds",
                        ", ".join(missing), name, len(present), len(names))
        return present

    for ref, run in ablation_pairs(params):
        a, b = arm(ref), arm(run)
        if not a or not b:
            log.warning("ablation: no scores for %s or %s, no p-value", ref, run)
            continue
        if len(a) == 1 and len(b) == 1:
            out[run] = paired_bootstrap(a[0].scores, b[0].scores, a[0].targets, n=n, seed=seed)
        else:
            out[run] = paired_seed_bootstrap([x.scores for x in a], [x.scores for x in b],
                                             a[0].targets, n=n, seed=seed)
    return out, ablation_reference(params)


def _paired_value(result: Mapping[str, Any] | None, metric: str, key: str) -> float | None:
    """``key`` ("delta" or "p_value") of ``metric`` in a paired comparison, or None."""
    entry = A.paired_entry(result, metric)
    return None if entry is None else float(entry[key])


def _p_value(result: Mapping[str, Any] | None, metric: str) -> float | None:
    return _paired_value(result, metric, "p_value")


def _delta(result: Mapping[str, Any] | None, metric: str) -> float | None:
    return _paired_value(result, metric, "delta")


def _delta_ci(result: Mapping[str, Any] | None, metric: str) -> tuple[float | None, float | None]:
    entry = A.paired_entry(result, metric)
    if entry is None:
        return None, None
    lo, hi = entry["ci"]
    return float(lo), float(hi)


def _seed_aware(result: Mapping[str, Any] | None) -> bool:
    """True for a two-level (images x seeds) comparison."""
    return bool(result) and "n_seeds_a" in result  # type: ignore[operator]


def ablation_table(cells: Sequence[Mapping[str, Any]], metrics: Metrics,
                   paired: Mapping[str, Mapping[str, Any]] | None = None,
                   reference: Mapping[str, str] | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MA x LC ablation on the full val set, paired-bootstrap p-values against full MA-Q2L.

    ``paired[run]`` is the :func:`benchmark.bootstrap.paired_bootstrap` result (or, when
    either cell has several seeds, the :func:`benchmark.bootstrap.paired_seed_bootstrap` one)
    of the reference cell of its split (``reference[split]``, as ``a``) against the cell (as
    ``b``), so deltas are cell minus reference (means over seeds in the two-level case).
    A cell's ``seed_runs`` (:func:`benchmark.matrix.ablation_cells`) give the seed mean ± sd
    of val F2-CIW, F1-Normal and mAP; the other values are the first seed's run.
    """
    paired = paired or {}
    reference = reference or {}
    multi = any(len(c.get("seed_runs") or [c["run"]]) > 1 for c in cells)
    num, disp = [], []
    for c in cells:
        group = list(c.get("seed_runs") or [c["run"]])
        h = headline(_get(metrics, c["run"], "val"))
        hs = headline(_get(metrics, c["run"], "val_sub"))
        st = seed_stats(metrics, group, "val")
        res = paired.get(c["run"])
        is_ref = reference.get(c["split"]) == c["run"]
        rec = {"split": c["split"], "run": c["run"], "mask_attention": c["mask_attention"],
               "label_correlation": c["label_correlation"], "reference": is_ref,
               "val_f2": h.get("F2"), "val_f2_lo": h.get("F2_lo"), "val_f2_hi": h.get("F2_hi"),
               "val_f1": h.get("F1"), "val_f1_lo": h.get("F1_lo"), "val_f1_hi": h.get("F1_hi"),
               "val_map": h.get("mAP"), "val_sub_f2": hs.get("F2"), "val_sub_f1": hs.get("F1")}
        for k, short in (("F2", "f2"), ("F1", "f1"), ("mAP", "map")):
            rec[f"val_{short}_mean"] = st[f"{k}_mean"]
            rec[f"val_{short}_sd"] = st[f"{k}_sd"]
        rec["n_seeds"] = st["n"]
        for metric, short in ((A.F2_CIW, "f2"), (A.F1_NORMAL, "f1")):
            d = _delta(res, metric)
            lo, hi = _delta_ci(res, metric)
            rec[f"delta_{short}"] = None if d is None else 100 * d
            rec[f"delta_{short}_lo"] = None if lo is None else 100 * lo
            rec[f"delta_{short}_hi"] = None if hi is None else 100 * hi
            rec[f"p_{short}"] = _p_value(res, metric)
        rec["p_method"] = "" if not res else ("images x seeds" if _seed_aware(res) else "images")
        num.append(rec)
        d = {
            "Training data": "1" if c["split"] == FULL_SPLIT else c["split"].replace("sub_", ""),
            "MA": "yes" if c["mask_attention"] else "no",
            "LC": "yes" if c["label_correlation"] else "no",
            "Run": c["run"] + (" (reference)" if is_ref else ""),
            "val F2-CIW (95% CI)": fmt_ci(rec["val_f2"], rec["val_f2_lo"], rec["val_f2_hi"]),
        }
        if multi:
            d[f"val F2-CIW (mean {PM} sd)"] = _mean_sd_cell(rec["val_f2_mean"], rec["val_f2_sd"], group)
        d["val F1-Normal (95% CI)"] = fmt_ci(rec["val_f1"], rec["val_f1_lo"], rec["val_f1_hi"])
        if multi:
            d[f"val F1-Normal (mean {PM} sd)"] = _mean_sd_cell(rec["val_f1_mean"], rec["val_f1_sd"], group)
        d["val mAP"] = fmt(rec["val_map"])
        if multi:
            d[f"val mAP (mean {PM} sd)"] = _mean_sd_cell(rec["val_map_mean"], rec["val_map_sd"], group)
            d["Seeds"] = fmt_seeds(rec["n_seeds"], len(group))
        d["val* F2-CIW"] = fmt(rec["val_sub_f2"])
        if multi:   # the delta's interval too (two-level or image bootstrap, see p method)
            d["dF2 vs ref (95% CI)"] = fmt_ci(rec["delta_f2"], rec["delta_f2_lo"], rec["delta_f2_hi"])
        else:
            d["dF2 vs ref"] = fmt(rec["delta_f2"])
        d["p (F2)"] = fmt(rec["p_f2"], 3)
        if multi:
            d["dF1 vs ref (95% CI)"] = fmt_ci(rec["delta_f1"], rec["delta_f1_lo"], rec["delta_f1_hi"])
        else:
            d["dF1 vs ref"] = fmt(rec["delta_f1"])
        d["p (F1)"] = fmt(rec["p_f1"], 3)
        if multi:
            d["p method"] = rec["p_method"]
        disp.append(d)
    return pd.DataFrame(num), pd.DataFrame(disp)


# ----------------------------------------------------------------------------- Sewer-ML
def sewerml_table(rows: Sequence[published.SewerMLRow], metrics: Metrics,
                  seeds: Seeds | None = None, configured: Collection[str] | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sewer-ML Table 4 or 5: published val/test F2-CIW and F1-Normal beside ours (``seeds``
    as in :func:`table3`). ``configured``: the runs and combos of the matrix; a row whose run
    is not among them is noted as opt-in rather than pending."""
    num, disp = [], []
    multi = _multi(seeds, [r.run for r in rows])
    for row in rows:
        ours = {s: headline(_get(metrics, row.run, s)) for s in ("val", "test")}
        group = _group(seeds, row.run)
        stats = {s: seed_stats(metrics, group, s) for s in ("val", "test")}
        rec: dict[str, Any] = {"model": row.model, "run": row.run or ""}
        d: dict[str, Any] = {"Model": row.model}
        for split in ("val", "test"):
            for k in ("F2", "F1"):
                key = f"{split}_{k.lower()}"
                o = ours[split]
                rec[f"{key}_paper"] = getattr(row, key)
                rec[f"{key}_ours"] = o.get(k)
                rec[f"{key}_ours_lo"] = o.get(f"{k}_lo")
                rec[f"{key}_ours_hi"] = o.get(f"{k}_hi")
                rec[f"{key}_ours_mean"] = stats[split][f"{k}_mean"]
                rec[f"{key}_ours_sd"] = stats[split][f"{k}_sd"]
                d[f"{split} {k} (paper)"] = fmt(getattr(row, key))
                d[f"{split} {k} (ours, 95% CI)"] = fmt_ci(o.get(k), o.get(f"{k}_lo"),
                                                          o.get(f"{k}_hi"))
                if multi:
                    d[f"{split} {k} (ours, mean {PM} sd)"] = _mean_sd_cell(
                        rec[f"{key}_ours_mean"], rec[f"{key}_ours_sd"], group)
            rec[f"{split}_n_seeds"] = stats[split]["n"]
        if multi:
            d["Seeds"] = fmt_seeds(rec["val_n_seeds"], len(group))
        if ours["val"]:
            note = f"run `{row.run}`"
        elif row.reason:
            note = row.reason
        elif configured is not None and row.run not in configured:
            note = f"run `{row.run}` is not in this matrix (opt-in: params.yaml runs/combos)"
        else:
            note = f"run `{row.run}` has no metrics yet"
        rec["note"] = d["Note"] = note
        num.append(rec)
        disp.append(d)
    return pd.DataFrame(num), pd.DataFrame(disp)


def benchmark_classic_table(m_val: Mapping[str, Any] | None, m_test: Mapping[str, Any] | None
                            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The Benchmark's classic val metrics and per-class test F2, published beside ours."""
    recs = []
    for k, pub in published.BENCHMARK_CLASSIC_VAL.items():
        ours = None if not m_val else 100 * m_val[A.MAIN][k]
        recs.append({"metric": f"val {k}", "paper": pub, "ours": ours})
    codes = list(CLASS_CODES) + [NORMAL]
    for i, code in enumerate(codes):
        ours = None if not m_test else 100 * m_test[A.NEW][A.F2_CLASS][i]
        recs.append({"metric": f"test F2 {code}", "paper": published.BENCHMARK_TEST_F2_CLASS[code],
                     "ours": ours})
    df = pd.DataFrame(recs)
    disp = pd.DataFrame({"Metric": df["metric"], "Paper": [fmt(v) for v in df["paper"]],
                         "Ours": [fmt(v) for v in df["ours"]]})
    return df, disp


# ----------------------------------------------------------------------------- all
#: Header note of a table with a multi-seed run.
SEEDS_NOTE = (f"Runs with several seeds (params.yaml `seeds:`): `95% CI` columns and the other "
              f"single values are the run of the first seed (runs/<run>) with its image-bootstrap "
              f"interval; `mean {PM} sd` is over the seeds (sample sd, n - 1); Seeds = seeds with "
              f"metrics.")
#: Header note of the ablation table when a cell has several seeds.
SEED_PAIRED_NOTE = ("Where the cell or its reference has several seeds, dF/p come from a two-level "
                    "paired bootstrap (p method `images x seeds`): each resample draws the images "
                    "with replacement (the same draw for both cells) and, independently per cell, "
                    "as many seeds as it has, with replacement; dF = the cell's seed mean minus "
                    "the reference's, with the percentile 95% interval of the resampled "
                    "differences and a two-sided p-value. Single-seed pairs: images only (`images`).")
def write_all(metrics: Metrics, out_dir: str | Path, *, profile: str, source: str,
              runs: Mapping[str, Mapping[str, Any]] | None = None,
              paired: Mapping[str, Mapping[str, Any]] | None = None,
              reference: Mapping[str, str] | None = None,
              benchmark_run: str = "benchmark_full",
              configured: Collection[str] | None = None) -> list[Path]:
    """Write every table under ``out_dir``; returns the written paths. ``configured``: the
    matrix's run and combo names (rows outside it are marked opt-in)."""
    out = Path(out_dir)
    header = [data_description(profile, source),
              "F1 = F1-Normal, F2 = F2-CIW, in %; ours with a 95% bootstrap interval "
              "(resampling images). `*` = trained on the 1/16 subset and evaluated on the "
              "1/16 val set."]
    seeds = seed_groups(runs) if runs else {}

    def with_seeds(table_runs) -> list[str]:
        return header + ([SEEDS_NOTE] if _multi(seeds, table_runs) else [])

    written: list[Path] = []
    n, d = table3(metrics, seeds=seeds)
    written += write_table(n, d, out / "table3", f"Table 3 ({published.MAQ2L_PAPER}) "
                           "beside this suite", with_seeds([r.run for r in published.TABLE3]))
    n, d = sewerml_table(published.TABLE4, metrics, seeds, configured)
    written += write_table(n, d, out / "sewerml_table4", "Sewer-ML Table 4: end-to-end models "
                           f"({published.SEWERML_PAPER})", with_seeds([r.run for r in published.TABLE4]))
    n, d = sewerml_table(published.TABLE5, metrics, seeds, configured)
    written += write_table(n, d, out / "sewerml_table5", "Sewer-ML Table 5: two-stage models, "
                           f"Xie2019 stage 1 + stage 2, replace ({published.SEWERML_PAPER})",
                           with_seeds([r.run for r in published.TABLE5]))
    n, d = benchmark_classic_table(_get(metrics, benchmark_run, "val"),
                                   _get(metrics, benchmark_run, "test"))
    written += write_table(n, d, out / "benchmark_metrics",
                           "Sewer-ML Benchmark: classic val metrics and per-class test F2", header)
    if runs:
        cells = ablation_cells(runs)
        if cells:
            n, d = ablation_table(cells, metrics, paired, reference)
            notes = ["Full val set; dF/p: paired bootstrap (same images resampled) of each cell "
                     "minus the full MA-Q2L of the same training data; val* = 1/16 val set."]
            if any(len(c["seed_runs"]) > 1 for c in cells):
                notes += [SEEDS_NOTE, SEED_PAIRED_NOTE]
            written += write_table(
                n, d, out / "ablation", "MA-Q2L ablation: mask attention (MA) x label "
                "correlation (LC)", header + notes)
    for run in sorted(metrics):
        for split, m in sorted(metrics[run].items()):
            n, d = per_class_table(m)
            written += write_table(n, d, out / "per_class" / f"{run}_{split}",
                                   f"Per-class metrics: run {run}, split {split}", header,
                                   formats=("csv", "md"))
    return written
