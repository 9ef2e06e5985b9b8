"""``sewerbench check``: recompute small deterministic results and compare with references."""
from __future__ import annotations

import logging
import time

NAME = "check"
HELP = ("tolerance check: metrics of committed score files and of a tiny deterministic run "
        "against results/reference/ (exit 1 on any miss)")

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--reference-dir", default="results/reference",
                   help="folder with reference.json and the committed inputs")
    p.add_argument("--case", action="append", default=None,
                   help="only this case (repeatable); default every case of reference.json")
    p.add_argument("--update", action="store_true",
                   help="recompute and rewrite reference.json (keeps the tolerances)")


def run(args) -> int:
    from benchmark.check import compute_reference, run_checks, write_reference

    t0 = time.perf_counter()
    if args.update:
        ref = compute_reference(args.reference_dir, args.case)
        write_reference(args.reference_dir, ref)
        n = sum(len(c["expected"]) for c in ref["cases"].values())
        print(f"check: wrote {args.reference_dir}/reference.json ({n} metrics)")
        return 0
    misses, n = run_checks(args.reference_dir, args.case)
    dt = time.perf_counter() - t0
    if misses:
        print(f"check: {len(misses)} of {n} metrics outside tolerance ({dt:.1f} s):")
        print("case | metric | expected | got | tolerance")
        for m in misses:
            print(f"{m.case} | {m.metric} | {m.expected!r} | {m.got!r} | {m.tolerance:g}")
        return 1
    print(f"check: all {n} metrics within tolerance ({dt:.1f} s)")
    return 0
