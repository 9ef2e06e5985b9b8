"""``sewerbench dryrun``: the paper profile's whole pipeline on a self-made mini Sewer-ML (CPU)."""
from __future__ import annotations

import argparse
import logging

NAME = "dryrun"
HELP = ("paper dry run: build a paper-shaped mini Sewer-ML and random pretrained weights under "
        "--out, then `dvc repro` the whole pipeline there with the paper profile (reference sizes "
        "and recipes, a few optimiser steps per run, CPU) and check every stage and table")

log = logging.getLogger(__name__)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected run or combo names, comma separated")
    return names


def add_arguments(p: argparse.ArgumentParser) -> None:
    from benchmark.dryrun import DEFAULT_BATCH, DEFAULT_IMAGES, DEFAULT_MAX_SEEDS, DEFAULT_STEPS

    p.add_argument("--out", required=True, metavar="DIR",
                   help="dry-run folder: sewerml/ (mini dataset), weights/, project/ (params.yaml, "
                        "dvc.yaml, runs/, results/), dryrun.log, dryrun.json")
    p.add_argument("--params", default="params.yaml",
                   help="params.yaml to copy and switch to the paper profile (default params.yaml)")
    p.add_argument("--runs", type=_names, default=None, metavar="R1,R2,...",
                   help="runs (or combos, which bring their two stages) to keep; every combo whose "
                        "stages are kept is kept (default: every run and combo)")
    p.add_argument("--images", type=int, default=DEFAULT_IMAGES, metavar="N",
                   help=f"training frames (val N/2, test N/3; default {DEFAULT_IMAGES})")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="K",
                   help=f"optimiser steps per run (one epoch; default {DEFAULT_STEPS})")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="B",
                   help=f"batch size of every run (train and eval; default {DEFAULT_BATCH})")
    p.add_argument("--max-seeds", type=int, default=DEFAULT_MAX_SEEDS, metavar="N",
                   help=f"keep the first N seeds of each run with `seeds:` (default {DEFAULT_MAX_SEEDS}: "
                        "the seed stages run once per such run; 0 = all)")
    p.add_argument("--label-source", default=None, metavar="DIR",
                   help="folder with the published SewerML_{Train,Val}_sub_0.0625.csv "
                        "(default data/splits, else ../shared/sewerml)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted dry run in --out: `dvc repro` skips the finished "
                        "stages (the folder's params are kept; the options above are ignored)")
    p.add_argument("--force", action="store_true",
                   help="write into an --out folder that `sewerbench dryrun` did not create "
                        "(its sewerml/, weights/, project/ are replaced)")


def run(args: argparse.Namespace) -> int:
    from benchmark.dryrun import format_summary, run_dryrun
    from benchmark.io import check_input_file

    if not args.resume:
        check_input_file(args.params, "--params")
    summary = run_dryrun(args.out, params_path=args.params, runs=args.runs, images=args.images,
                         steps=args.steps, batch_size=args.batch_size, force=args.force,
                         label_source=args.label_source, resume=args.resume,
                         max_seeds=args.max_seeds)
    print(format_summary(summary))
    return 0
