"""``sewerbench train``: train one run of params.yaml (any method, its reference recipe)."""
from __future__ import annotations

import argparse
import json
import logging
import os

NAME = "train"
HELP = ("train one run of params.yaml (recipe <- profile <- run <- --set); multi-GPU with "
        "`torchrun --nproc_per_node N -m benchmark train ...`")

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("run_name", nargs="?", metavar="RUN",
                   help="run name (a key of runs: in params.yaml); same as --run")
    p.add_argument("--run", default=None, help="run name (under torchrun write `-m benchmark -- train "
                                                "--run NAME` or the positional RUN: torchrun's own "
                                                "parser mistakes --run for its --run-path)")
    p.add_argument("--out", default=None, help="run folder (default: runs/RUN)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt when it exists (else start fresh)")
    p.add_argument("--force", action="store_true",
                   help="replace a finished run in OUT, or a folder that another command made")
    p.add_argument("--seed", type=int, default=None, help="override the seed of params.yaml")
    p.add_argument("--profile", default=None, help="override params.yaml's profile (smoke | paper)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a configuration key (dotted, YAML value), e.g. --set epochs=3 "
                        "--set optimizer.lr=1e-4; repeatable")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved configuration (what config.json will hold) and exit")


def run(args: argparse.Namespace) -> int:
    from benchmark.config import load_params, parse_set, resolve_run
    from benchmark.errors import SewerbenchError

    if args.run and args.run_name and args.run != args.run_name:
        raise SewerbenchError(f"train: two run names given ({args.run_name} and --run {args.run})")
    args.run = args.run or args.run_name
    if not args.run:
        raise SewerbenchError("train: no run name (give RUN or --run NAME)")
    params = load_params(args.params)
    overrides = parse_set(args.sets)
    if args.profile:
        overrides["profile"] = args.profile
    cfg = resolve_run(params, args.run, overrides, seed=args.seed, where=str(args.params))
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    from benchmark.train import train_run

    out = args.out or f"runs/{args.run}"
    summary = train_run(cfg, out, resume=args.resume, force=args.force)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    log.info("%s: best epoch %s (%s %s = %.4f), %.1f train images/s, wall %.1f s -> %s",
             args.run, summary["best_epoch"], summary["selected_model"], summary["selection_metric"],
             summary["selection_score"] if summary["selection_score"] is not None else float("nan"),
             summary["train_images_per_s"], summary["wall_seconds"], out)
    return 0
