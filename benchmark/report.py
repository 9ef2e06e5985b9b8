"""Readable Markdown and LaTeX tables of an official Sewer-ML metrics dict.

Values are printed x100 with 2 decimals (like the official ``*_latex.txt``); nan as ``n/a``.
Three parts: the headline (F2-CIW, F1-Normal, with bootstrap CIs when given), the main
metrics (official order: mF1, MF1, OF1, OP, OR, CF1, CP, CR, EMAcc, mAP) and a per-class
table (CIW, P, R, F1, F2, AP, Ng) with the Normal entry last.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from benchmark import artifacts as A
from benchmark.classes import CLASS_NAMES, NORMAL

MAIN_ORDER = ("mF1", "MF1", "OF1", "OP", "OR", "CF1", "CP", "CR", "EMAcc", A.MAP)


def pct(x, na: str = "n/a") -> str:
    """x100 with 2 decimals; ``na`` for nan/None."""
    if x is None:
        return na
    x = float(x)
    if math.isnan(x):
        return na
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{100.0 * x:.2f}"


def _ci_text(ci, key: str, na: str) -> str:
    if not ci or key not in ci or ci[key] is None:
        return ""
    lo, hi = ci[key]
    return f"[{pct(lo, na)}, {pct(hi, na)}]"


def _conf(ci) -> str:
    c = (ci or {}).get("confidence", 0.95)
    return f"{100 * float(c):g}% CI"


def headline_rows(metrics: Mapping, ci: Mapping | None = None, na: str = "n/a") -> list[list[str]]:
    rows = [["F2-CIW", pct(metrics[A.NEW][A.F2], na)],
            ["F1-Normal", pct(metrics[A.NEW][A.F1_NORMAL], na)]]
    if ci:
        rows[0].append(_ci_text(ci, A.F2_CIW, na))
        rows[1].append(_ci_text(ci, A.F1_NORMAL, na))
    return rows


def class_rows(metrics: Mapping, na: str = "n/a", names: bool = True) -> list[list[str]]:
    labels: Sequence[str] = metrics[A.LABELS]
    w = metrics[A.LABEL_WEIGHTS]
    aux, new = metrics[A.AUXILLARY], metrics[A.NEW]
    rows = []
    for k, code in enumerate(list(labels) + [NORMAL]):
        normal = k == len(labels)
        row = [code]
        if names:
            row.append("all 17 labels 0" if normal else CLASS_NAMES.get(code, ""))
        row += [
            "-" if normal else f"{float(w[k]):.4f}",
            pct(aux["P_class"][k], na), pct(aux["R_class"][k], na), pct(aux["F1_class"][k], na),
            pct(new["F2_class"][k], na), "-" if normal else pct(aux["AP"][k], na),
            str(int(aux["Ng"][k])),
        ]
        rows.append(row)
    return rows


def _md(header: list[str], rows: list[list[str]], right_from: int = 1) -> str:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown_table(metrics: Mapping, ci: Mapping | None = None, title: str | None = None) -> str:
    """The three tables as Markdown text."""
    out = []
    if title:
        out += [f"## {title}", ""]
    head = ["Metric", "Value"] + ([_conf(ci)] if ci else [])
    out += [_md(head, headline_rows(metrics, ci)), ""]
    main = metrics[A.MAIN]
    out += [_md(list(MAIN_ORDER), [[pct(main[k]) for k in MAIN_ORDER]], right_from=0), ""]
    out += [_md(["Class", "Name", "CIW", "P", "R", "F1", "F2", "AP", "Ng"],
                class_rows(metrics), right_from=2)]
    return "\n".join(out) + "\n"


def _tex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                 ("#", r"\#"), ("$", r"\$")):
        s = s.replace(a, b)
    return s


def _tex(header: list[str], rows: list[list[str]], spec: str) -> str:
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_tex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex_escape(c) for c in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def latex_table(metrics: Mapping, ci: Mapping | None = None, title: str | None = None) -> str:
    """The three tables as LaTeX ``tabular`` blocks (booktabs rules)."""
    out = []
    if title:
        out += [f"% {title}"]
    head = ["Metric", "Value"] + ([_conf(ci)] if ci else [])
    out += [_tex(head, headline_rows(metrics, ci, na="--"), "l" + "r" * (len(head) - 1)), ""]
    main = metrics[A.MAIN]
    out += [_tex(list(MAIN_ORDER), [[pct(main[k], "--") for k in MAIN_ORDER]],
                 "r" * len(MAIN_ORDER)), ""]
    out += [_tex(["Class", "CIW", "P", "R", "F1", "F2", "AP", "Ng"],
                 class_rows(metrics, na="--", names=False), "lrrrrrrr")]
    return "\n".join(out) + "\n"
