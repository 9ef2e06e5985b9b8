"""``sewerbench evaluate``: official Sewer-ML metrics of a scores CSV or of a whole run folder.

Scores mode (``--scores S --gt G [--out M.json]``): the JSON has the official keys exactly
("Labels", "LabelWeights", "New", "Main", "Auxillary"); values are those of the official
``calculate_results.py`` bit for bit (rows matched by Filename and evaluated in sorted-Filename
order, as the official script does). nan is written as ``NaN`` like the official
``json.dump``; the text is indented (the official file is one line), parsing gives the same
object. With ``--bootstrap N`` an extra top-level key "Bootstrap" holds percentile 95% CIs
of F2-CIW and F1-Normal. Every input is validated and every output computed before anything
is written; outputs are written all-or-nothing via temporary files, so an error leaves no
output behind.

Run-folder mode (``--run-dir runs/X --out results/metrics/X``, the DVC evaluate stage): every
scores file of the run against the matching ground truth of ``--prepared``
(:func:`benchmark.evaluation.evaluate_run`); ``--split``, ``--bootstrap`` and ``--seed``
default to ``runs.<run>.split``, ``tables.bootstrap`` and ``seed`` of ``--params``.
"""
from __future__ import annotations

import logging
from pathlib import Path

from benchmark.errors import SewerbenchError

NAME = "evaluate"
HELP = ("official Sewer-ML metrics (F2-CIW, F1-Normal, ...) of a scores CSV against a "
        "ground-truth CSV (writes the official JSON layout and prints a table), or of every "
        "scores file of a run folder (--run-dir)")

log = logging.getLogger(__name__)

_TABLE_OPTIONS = (("--table-md", "table_md"), ("--table-tex", "table_tex"), ("--quiet", "quiet"))


def add_arguments(parser) -> None:
    parser.add_argument("--scores", help="scores CSV: Filename + 17 class columns")
    parser.add_argument("--gt", help="ground-truth CSV (official annotation header)")
    parser.add_argument("--out", help="metrics JSON to write (official layout); with --run-dir "
                                      "the output folder")
    parser.add_argument("--table-md", help="also write the Markdown table here")
    parser.add_argument("--table-tex", help="also write the LaTeX table here")
    parser.add_argument("--bootstrap", type=int, default=None, metavar="N",
                        help="bootstrap resamples for 95%% CIs of F2-CIW and F1-Normal "
                             "(0 = off; adds a top-level \"Bootstrap\" key to the JSON; default 0, "
                             "with --run-dir tables.bootstrap of --params)")
    parser.add_argument("--seed", type=int, default=None,
                        help="bootstrap seed (default 0, with --run-dir seed of --params)")
    parser.add_argument("--quiet", action="store_true", help="do not print the table")
    run = parser.add_argument_group("run-folder mode")
    run.add_argument("--run-dir", metavar="DIR",
                     help="evaluate every scores_*.csv of this run folder into --out (a folder)")
    run.add_argument("--prepared", default="data/prepared", metavar="DIR",
                     help="prepared splits with the ground truth (default data/prepared)")
    run.add_argument("--params", default="params.yaml",
                     help="params.yaml for the defaults of --split, --bootstrap and --seed")
    run.add_argument("--run", default=None, help="run name in params.yaml (default: the folder name)")
    run.add_argument("--split", default=None,
                     help="the run's training split (default runs.<run>.split of --params)")


def run(args) -> int:
    if args.bootstrap is not None and args.bootstrap < 0:
        raise SewerbenchError(f"--bootstrap: must be >= 0, got {args.bootstrap}")
    if args.run_dir:
        return run_folder(args)
    for opt, name in (("--run", "run"), ("--split", "split")):
        if getattr(args, name) is not None:
            raise SewerbenchError(f"{opt}: only with --run-dir")
    missing = [opt for opt, v in (("--scores", args.scores), ("--gt", args.gt)) if not v]
    if missing:
        raise SewerbenchError(f"{' and '.join(missing)}: required (or --run-dir for a run folder)")
    return run_scores(args)


def run_scores(args) -> int:
    from benchmark import report
    from benchmark.artifacts import BOOTSTRAP
    from benchmark.evaluation import compute, dumps_json
    from benchmark.outputs import check_outputs, write_all

    n = 0 if args.bootstrap is None else args.bootstrap
    seed = 0 if args.seed is None else args.seed
    check_outputs({"--out": args.out, "--table-md": args.table_md, "--table-tex": args.table_tex},
                  [args.scores, args.gt])
    result = compute(args.scores, args.gt, n, seed)
    ci = result.get(BOOTSTRAP)
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


def run_folder(args) -> int:
    from benchmark.evaluation import evaluate_run

    for opt, v in (("--scores", args.scores), ("--gt", args.gt)):
        if v:
            raise SewerbenchError(f"{opt}: not with --run-dir (one mode at a time)")
    for opt, name in _TABLE_OPTIONS:
        if getattr(args, name):
            raise SewerbenchError(f"{opt}: only with --scores")
    if not args.out:
        raise SewerbenchError("--out: required with --run-dir (the metrics folder)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SewerbenchError(f"{out}: --out must be a folder with --run-dir")
    split, n, seed = args.split, args.bootstrap, args.seed
    if split is None or n is None or seed is None:
        from benchmark.config import load_params
        from benchmark.matrix import run_split

        params = load_params(args.params)
        if split is None:
            split = run_split(params, args.run or Path(args.run_dir).name)
        if n is None:
            n = int((params.get("tables") or {}).get("bootstrap", 1000))
        if seed is None:
            seed = int(params.get("seed", 0))
    written = evaluate_run(args.run_dir, out, args.prepared, split, n, seed)
    log.info("%s: wrote %s", args.run_dir, ", ".join(p.name for p in written.values()))
    return 0
