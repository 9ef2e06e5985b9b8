"""``sewerbench compare``: paired bootstrap of two scores CSVs on the same images."""
from __future__ import annotations

from benchmark.artifacts import PAIRED_METRICS, CompareResult
from benchmark.errors import SewerbenchError
from benchmark.evaluation import compare, dumps_json
from benchmark.outputs import check_outputs, write_all
from benchmark.report import pct

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


def table(res: CompareResult) -> str:
    lines = ["| Metric | A | B | B - A | 95% CI | p |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in res[PAIRED_METRICS].items():
        lo, hi = m["ci"]
        lines.append(f"| {name.replace('_', '-')} | {pct(m['a'])} | {pct(m['b'])} | "
                     f"{pct(m['delta'])} | [{pct(lo)}, {pct(hi)}] | {m['p_value']:.4f} |")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    if args.bootstrap < 1:
        raise SewerbenchError(f"--bootstrap: must be >= 1, got {args.bootstrap}")
    check_outputs({"--out": args.out}, [args.a, args.b, args.gt])
    res = compare(args.a, args.b, args.gt, args.bootstrap, args.seed)
    write_all({args.out: dumps_json(res)})
    print(f"A = {args.a}\nB = {args.b}\n{res['n_resamples']} paired resamples, seed {res['seed']}")
    print(table(res), end="")
    return 0
