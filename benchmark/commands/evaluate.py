"""``sewerbench evaluate``: official Sewer-ML metrics of a scores CSV against ground truth.

The JSON has the official keys exactly ("Labels", "LabelWeights", "New", "Main",
"Auxillary"); values are those of the official ``calculate_results.py`` bit for bit (rows
matched by Filename and evaluated in sorted-Filename order, as the official script does).
nan is written as ``NaN`` like the official ``json.dump``; the text is indented (the
official file is one line), parsing gives the same object. With ``--bootstrap N`` an extra
top-level key "Bootstrap" holds percentile 95% CIs of F2-CIW and F1-Normal.
Every input is validated and every output computed before anything is written; outputs are
written all-or-nothing via temporary files, so an error leaves no output behind.
"""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Mapping

from benchmark import bootstrap, metrics, report
from benchmark.errors import SewerbenchError
from benchmark.io import atomic_path
from benchmark.metrics import to_jsonable
from benchmark.scores import load_aligned

NAME = "evaluate"
HELP = ("official Sewer-ML metrics (F2-CIW, F1-Normal, ...) of a scores CSV against a "
        "ground-truth CSV; writes the official JSON layout and prints a table")

log = logging.getLogger(__name__)

#: Extra top-level key (not in the official layout) holding bootstrap CIs, only when asked.
CI_KEY = "Bootstrap"


def check_outputs(outputs: Mapping[str, str | None], inputs: list[str]) -> None:
    """Refuse output paths that are folders, collide with each other or with an input."""
    seen: dict[Path, str] = {}
    ins = {Path(p).resolve() for p in inputs}
    for opt, p in outputs.items():
        if not p:
            continue
        path = Path(p)
        rp = path.resolve()
        if path.is_dir():
            raise SewerbenchError(f"{p}: {opt} is a directory, expected a file path")
        if rp in ins:
            raise SewerbenchError(f"{p}: {opt} would overwrite an input file")
        if rp in seen:
            raise SewerbenchError(f"{p}: {opt} is the same path as {seen[rp]}")
        seen[rp] = opt
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise SewerbenchError(f"{p}: {opt}: {parent} is not a directory")


def dumps_json(obj) -> str:
    """JSON text; nan/inf written as NaN/Infinity like the official ``json.dump``."""
    return json.dumps(to_jsonable(obj), indent=2, allow_nan=True) + "\n"


def write_all(texts: Mapping[str, str]) -> None:
    """Write several text files all-or-nothing (temp files first, renamed at the end)."""
    items = [(p, t) for p, t in texts.items() if p]
    current = None
    try:
        with contextlib.ExitStack() as stack:
            tmps = []
            for p, text in items:
                current = p
                tmps.append(stack.enter_context(atomic_path(p)))
            for (p, text), tmp in zip(items, tmps):
                current = p
                tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise SewerbenchError(f"{current}: cannot write: {exc.strerror or exc}") from None


def add_arguments(parser) -> None:
    parser.add_argument("--scores", required=True, help="scores CSV: Filename + 17 class columns")
    parser.add_argument("--gt", required=True, help="ground-truth CSV (official annotation header)")
    parser.add_argument("--out", help="metrics JSON to write (official layout)")
    parser.add_argument("--table-md", help="also write the Markdown table here")
    parser.add_argument("--table-tex", help="also write the LaTeX table here")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="bootstrap resamples for 95%% CIs of F2-CIW and F1-Normal "
                             "(0 = off; adds a top-level \"Bootstrap\" key to the JSON)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="do not print the table")


def compute(scores_path, gt_path, n_bootstrap: int = 0, seed: int = 0) -> dict:
    """Official metrics dict for two files, plus the "Bootstrap" block when ``n_bootstrap`` > 0."""
    data = load_aligned(scores_path, gt_path)
    result = metrics.evaluate(data.scores, data.targets)
    if n_bootstrap:
        ci = bootstrap.bootstrap_ci(data.scores, data.targets, n=n_bootstrap, seed=seed)
        result[CI_KEY] = {"F2_CIW": list(ci["F2_CIW"]), "F1_Normal": list(ci["F1_Normal"]),
                          "n": n_bootstrap, "seed": seed, "confidence": 0.95,
                          "method": "percentile bootstrap, images resampled"}
    return result


def run(args) -> int:
    if args.bootstrap < 0:
        raise SewerbenchError(f"--bootstrap: must be >= 0, got {args.bootstrap}")
    check_outputs({"--out": args.out, "--table-md": args.table_md, "--table-tex": args.table_tex},
                  [args.scores, args.gt])
    result = compute(args.scores, args.gt, args.bootstrap, args.seed)
    ci = result.get(CI_KEY)
    md = report.markdown_table(result, ci)
    texts = {args.out: dumps_json(result)}
    if args.table_md:
        texts[args.table_md] = md
    if args.table_tex:
        texts[args.table_tex] = report.latex_table(result, ci)
    write_all(texts)
    if not args.quiet:
        print(md, end="")
    return 0
