"""``sewerbench repro``: ``dvc repro`` with independent stages side by side (benchmark.repro)."""
from __future__ import annotations

import logging
import time

NAME = "repro"
HELP = ("dvc repro with independent stages run side by side (--jobs; auto = one per core on a "
        "CPU profile with one torch thread per run); each stage's log under --log-dir")
log = logging.getLogger(__name__)

#: Stage seconds of the committed reference repro (README "Running the pipeline").
REFERENCE_COSTS = "results/reference/stage_seconds.json"


def add_arguments(p) -> None:
    p.add_argument("--jobs", default="auto",
                   help="stages at a time: a positive integer, or auto (default): usable cores / the "
                        "profile's threads on a CPU profile that fixes threads, else 1")
    p.add_argument("--params", default="params.yaml", help="parameters file (profile, dvc.yaml check)")
    p.add_argument("--log-dir", default=None, help="folder of the stage logs (default logs/repro)")
    p.add_argument("--dry-run", action="store_true", help="print the planned stages and run nothing")
    p.add_argument("--costs", default=REFERENCE_COSTS,
                   help="JSON of stage -> seconds that orders the ready stages (longest chain first); "
                        "the seconds measured by earlier repros (<log-dir>/stage_seconds.json) take "
                        f"precedence (default {REFERENCE_COSTS}, a fresh clone's measured repro)")


def run(args) -> int:
    from pathlib import Path

    from benchmark.config.resolve import load_params
    from benchmark.cpus import usable_cpus
    from benchmark.dvcgen import check_dvc_yaml
    from benchmark.repro import (DEFAULT_LOG_DIR, STAGE_SECONDS, dvc_graph, estimate_costs, final_repro,
                                 parse_jobs, plan_stages, read_stage_seconds, run_plan, summarise)

    params = load_params(args.params)
    jobs = parse_jobs(args.jobs, params, usable_cpus())
    check_dvc_yaml(params, "dvc.yaml", args.params)
    t0 = time.perf_counter()
    deps, changed = dvc_graph(".")
    plan = plan_stages(deps, changed)
    log_dir = Path(args.log_dir or DEFAULT_LOG_DIR)
    measured = {**read_stage_seconds(args.costs), **read_stage_seconds(log_dir / STAGE_SECONDS)}
    cost = estimate_costs(plan.stages, measured)
    print(f"{len(plan)} of {len(deps)} stage(s) to run, {jobs} at a time")
    if args.dry_run:
        for s in plan.order(cost):
            needs = sorted(plan.needs[s])
            print(f"  {s}  (~{cost[s]:.0f} s)" + (f"  (after {', '.join(needs)})" if needs else ""))
        return 0
    if not len(plan):
        print("everything is up to date")
        return 0
    results = run_plan(plan, ".", jobs, log_dir, cost=cost, seconds_file=log_dir / STAGE_SECONDS)
    final_repro(".", log_dir)
    print(summarise(results, time.perf_counter() - t0) + f"; logs in {log_dir}/")
    return 0
