"""``sewerbench tune``: Optuna hyper-parameter search for one method."""
from __future__ import annotations

import json
import logging

NAME = "tune"
HELP = "Optuna search (seeded TPE, median pruning) over a method's params.yaml tune: space"

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--method", required=True, help="registry method name (e.g. maq2l, tresnet_l)")
    p.add_argument("--trials", type=int, default=10, help="number of trials (default 10)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--run", default=None, help="base the trials on this params.yaml run "
                   "(default: a new run of --method on --split)")
    p.add_argument("--split", default="full", help="prepared split to train on (default full)")
    p.add_argument("--study-name", default=None, help="Optuna study name (resume with --storage)")
    p.add_argument("--storage", default=None, help="Optuna storage URL, e.g. sqlite:///tune.db")
    p.add_argument("--metric", default=None, help="objective: F2_CIW | mAP | F1_Normal (default tune.metric)")
    p.add_argument("--seed", type=int, default=None, help="sampler seed (default tune.seed)")
    p.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--out", default=None, help="output folder (default runs/tune/<method>)")


def run(args) -> int:
    from benchmark.errors import SewerbenchError
    from benchmark.pipeline.matrix import load_params
    from benchmark.tune import run_study

    if args.trials < 1:
        raise SewerbenchError(f"--trials: must be >= 1, got {args.trials}")
    params = load_params(args.params)
    out = args.out or f"runs/tune/{args.method}"
    res = run_study(params, args.method, args.trials, out, run=args.run, split=args.split,
                    study_name=args.study_name, storage=args.storage, metric=args.metric,
                    seed=args.seed, timeout=args.timeout)
    print(json.dumps(res, indent=2, default=str))
    return 0
