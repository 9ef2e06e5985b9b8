"""``sewerbench tune``: Optuna search over a method's ``tune.spaces``, one process, K workers on
one machine, or the same command on many machines sharing one database (see benchmark/tune.py)."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time

NAME = "tune"
HELP = ("Optuna search (seeded TPE / NSGA-II, median or Hyperband pruning) over a method's "
        "tune.yaml's tune.spaces; --workers K processes; share a study across machines with --storage")

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("--tune-config", default=None, metavar="FILE",
                   help="the tune: section (default: tune.yaml beside --params, else params.yaml's tune:)")
    p.add_argument("--method", default=None, help="registry method name (e.g. maq2l, tresnet_l)")
    p.add_argument("--run", default=None,
                   help="base the trials on this params.yaml run (default: the first run of --method on "
                        "--split with train_on all, else a new run entry tune_<method>_<split>)")
    p.add_argument("--split", default=None, help="prepared split to train on (default: full, or the run's)")
    p.add_argument("--trials", type=int, default=10,
                   help="done trials (complete + pruned + failed) the study must hold (default 10)")
    p.add_argument("--study", "--study-name", dest="study", default=None,
                   help="Optuna study name (default: <run>-<objective>); the same name resumes")
    p.add_argument("--storage", default=None,
                   help="sqlite:///PATH (default: OUT/study.db), any RDB URL Optuna accepts "
                        "(postgresql+psycopg://user:pw@host:5432/db), or journal:///PATH/study.log")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--objective", "--metric", dest="objective", default=None,
                   help="F2_CIW | mAP | F1_Normal, or two for a Pareto search: F2_CIW,F1_Normal "
                        "(default: tune.objective)")
    p.add_argument("--pruner", default=None, choices=("median", "hyperband", "none"),
                   help="per-epoch pruning (default: tune.pruner.name; none with two objectives)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a configuration key of every trial (as in `sewerbench train`), "
                        "e.g. --set epochs=2 --set max_train_images=600; repeatable")
    p.add_argument("--seed", type=int, default=None, help="sampler seed (default: tune.seed)")
    p.add_argument("--timeout", type=float, default=None,
                   help="stop starting trials after this many seconds (per worker)")
    p.add_argument("--out", default=None, help="output folder (default: runs/tune/<study>)")
    p.add_argument("--worker-id", type=int, default=None, help=argparse.SUPPRESS)


def _worker_argv(args: argparse.Namespace, search) -> "callable":
    """The command line of worker ``i``: this command, pinned to the parent's resolved choices."""
    base = [sys.executable, "-m", "benchmark"]
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        base.append("-v")
    base += ["tune", "--params", os.path.abspath(args.params)]
    if args.tune_config is not None:
        base += ["--tune-config", os.path.abspath(args.tune_config)]
    base += ["--trials", str(search.n_trials),
             "--study", search.study_name, "--storage", search.storage.argument,
             "--objective", ",".join(search.objectives), "--pruner", search.pruner_name,
             "--seed", str(search.seed), "--out", str(search.out)]
    if args.method:
        base += ["--method", args.method]
    if args.run:
        base += ["--run", args.run]
    if args.split:
        base += ["--split", args.split]
    if args.timeout is not None:
        base += ["--timeout", str(args.timeout)]
    for s in args.sets:
        base += ["--set", s]
    return lambda i: base + ["--worker-id", str(i)]


@contextlib.contextmanager
def _stop_handlers():
    from benchmark.tune import install_stop_handlers

    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    install_stop_handlers()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])


def run(args: argparse.Namespace) -> int:
    from benchmark.config import parse_set
    from benchmark.tune import THREADS_ENV, Search, load_search_params, set_threads, worker_threads

    t0 = time.time()
    params = load_search_params(args.params, args.tune_config)
    sets = parse_set(args.sets)
    search = Search(params, method=args.method, run=args.run, split=args.split, trials=args.trials,
                    study_name=args.study, storage=args.storage, objective=args.objective, pruner=args.pruner,
                    sets=sets, out=args.out, seed=args.seed, timeout=args.timeout, workers=args.workers)
    study = search.open_study()  # storage and study errors before any trial

    if args.worker_id is not None:  # one of the processes started by --workers K
        set_threads(int(os.environ[THREADS_ENV]) if os.environ.get(THREADS_ENV) else None)
        search.worker_tag = f"w{args.worker_id}@{search.worker_tag}"
        with _stop_handlers():
            state = search.work(study)
        return {"done": 0, "timeout": 0, "interrupted": 130}[state]

    log.info("study %s (%s): run %s, objective %s, %d trials, %d worker(s) -> %s", search.study_name,
             search.storage.display, search.run_name, ",".join(search.objectives), search.n_trials,
             search.workers, search.out)
    if search.workers == 1:
        set_threads(worker_threads(search.tcfg, 1))
        with _stop_handlers():
            state = search.work(study)
        codes = []
    else:
        from benchmark.tune import run_workers

        state, codes = run_workers(search, study, _worker_argv(args, search))
    if state == "incomplete" and search.timeout is not None:
        state = "timeout"
    res = search.write_outputs(study, wall_seconds=time.time() - t0)
    best = ""
    if res["best_trial"] is not None:
        best = (f"; best trial {res['best_trial']}: "
                + ", ".join(f"{m} {v:.4f}" for m, v in zip(search.objectives, res["best_values"])))
    print(f"study {search.study_name}: {res['done']}/{search.n_trials} done (complete {res['complete']}, "
          f"pruned {res['pruned']}, failed {res['failed']}; lost {res['lost']}){best} -> {search.out}")
    if state == "done" or res["done"] >= search.n_trials:
        return 0
    if state == "interrupted":
        print(f"sewerbench: interrupted with {res['done']}/{search.n_trials} trials done; run the same "
              f"command again to resume", file=sys.stderr)
        return 130
    if state == "timeout":
        print(f"sewerbench: --timeout reached with {res['done']}/{search.n_trials} trials done", file=sys.stderr)
        return 0
    print(f"sewerbench: error: the study is incomplete ({res['done']}/{search.n_trials} done; worker exit "
          f"codes {codes}); run the same command again to resume", file=sys.stderr)
    return 1
