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
                   help="recompute and rewrite reference.json (keeps the tolerances); with --results: "
                        "write results_<profile>.json from the finished repro")
    p.add_argument("--results", metavar="DIR",
                   help="compare a finished `dvc repro` (DIR/metrics/<run>/*.json) with the committed "
                        "headline numbers of its profile (--reference-dir/results_<profile>.json)")
    p.add_argument("--merge", action="store_true",
                   help="with --results --update: add this repro (another machine's) to the existing "
                        "reference instead of replacing it; expected = the machines' mean, per-split "
                        "tolerances from the spread between them")
    p.add_argument("--params", default="params.yaml",
                   help="params.yaml: the recipes of the learned cases; with --results: the repro's "
                        "(profile, runs, seeds)")


def _report_misses(title: str, first: str, misses) -> None:
    """Print the misses as a `|` table under ``title`` (``first``: the name of the first column)."""
    print(title)
    print(f"{first} | metric | expected | got | tolerance")
    for m in misses:
        print(f"{m.case} | {m.metric} | {m.expected!r} | {m.got!r} | {m.tolerance:g}")


def _run_results(args) -> int:
    from pathlib import Path

    from benchmark.check_results import build_reference, compare, load_reference, machine_note, reference_path
    from benchmark.config.resolve import load_params
    from benchmark.errors import SewerbenchError
    from benchmark.io import atomic_write_json
    from benchmark.matrix import profile

    if args.case:
        raise SewerbenchError("--case: not with --results (the results check has no cases)")
    params = load_params(args.params)
    root = Path(args.results)
    metrics_dir = root / "metrics" if (root / "metrics").is_dir() else root
    path = reference_path(args.reference_dir, profile(params))
    if args.update:
        ref = build_reference(metrics_dir, params, merge=load_reference(path) if args.merge else None)
        atomic_write_json(path, ref)
        n = sum(len(m) for sets in ref["expected"].values() for m in sets.values())
        machines = len(ref.get("observations") or [ref])
        print(f"check: wrote {path} ({n} metrics, {machines} machine(s), tolerances {ref['tolerances']}"
              + (f", per split {ref['split_tolerances']}" if "split_tolerances" in ref else "") + ")")
        return 0
    ref = load_reference(path)
    misses, n = compare(metrics_dir, ref, profile(params))
    note = machine_note(ref)
    if note:
        print(note)
    if misses:
        _report_misses(f"check --results: {len(misses)} of {n} metrics outside tolerance:", "run/set", misses)
        return 1
    print(f"check --results: all {n} metrics of {metrics_dir} within tolerance of {path}")
    return 0


def run(args) -> int:
    from benchmark.check import compute_reference, run_checks, write_reference

    if args.merge and not (args.results and args.update):
        from benchmark.errors import SewerbenchError

        raise SewerbenchError("--merge: only with --update --results (adds a repro to the results reference)")
    if args.results:
        return _run_results(args)
    t0 = time.perf_counter()
    if args.update:
        ref = compute_reference(args.reference_dir, args.case, args.params)
        write_reference(args.reference_dir, ref)
        n = sum(len(c["expected"]) for c in ref["cases"].values())
        print(f"check: wrote {args.reference_dir}/reference.json ({n} metrics)")
        return 0
    misses, n = run_checks(args.reference_dir, args.case, args.params)
    dt = time.perf_counter() - t0
    if misses:
        _report_misses(f"check: {len(misses)} of {n} metrics outside tolerance ({dt:.1f} s):", "case", misses)
        return 1
    print(f"check: all {n} metrics within tolerance ({dt:.1f} s)")
    return 0
