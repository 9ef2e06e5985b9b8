"""``sewerbench compare``: paired bootstrap of two scores CSVs on the same images."""
from __future__ import annotations

from benchmark import bootstrap
from benchmark.commands.evaluate import check_outputs, dumps_json, write_all
from benchmark.errors import SewerbenchError
from benchmark.report import pct
from benchmark.scores import align, read_ground_truth_csv, read_scores_csv

NAME = "compare"
HELP = ("paired bootstrap comparison of two scores CSVs on the same ground truth "
        "(delta = b - a of F2-CIW and F1-Normal, 95 percent CI, two-sided p-value)")


def add_arguments(parser) -> None:
    parser.add_argument("--a", required=True, help="scores CSV of system A")
    parser.add_argument("--b", required=True, help="scores CSV of system B")
    parser.add_argument("--gt", required=True, help="ground-truth CSV")
    parser.add_argument("--out", help="JSON file to write")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def compute(a_path, b_path, gt_path, n: int = 1000, seed: int = 0) -> dict:
    gt = read_ground_truth_csv(gt_path)
    da = align(read_scores_csv(a_path), gt, a_path, gt_path)
    db = align(read_scores_csv(b_path), gt, b_path, gt_path)
    res = bootstrap.paired_bootstrap(da.scores, db.scores, da.targets, n=n, seed=seed)
    return {"a": str(a_path), "b": str(b_path), "gt": str(gt_path), **res}


def table(res: dict) -> str:
    lines = ["| Metric | A | B | B - A | 95% CI | p |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in res["metrics"].items():
        lo, hi = m["ci"]
        lines.append(f"| {name.replace('_', '-')} | {pct(m['a'])} | {pct(m['b'])} | "
                     f"{pct(m['delta'])} | [{pct(lo)}, {pct(hi)}] | {m['p_value']:.4f} |")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    if args.bootstrap < 1:
        raise SewerbenchError(f"--bootstrap: must be >= 1, got {args.bootstrap}")
    check_outputs({"--out": args.out}, [args.a, args.b, args.gt])
    res = compute(args.a, args.b, args.gt, args.bootstrap, args.seed)
    write_all({args.out: dumps_json(res)})
    print(f"A = {args.a}\nB = {args.b}\n{res['n_resamples']} paired resamples, seed {res['seed']}")
    print(table(res), end="")
    return 0
