"""``sewerbench plots``: result plots (per-class F2, F2 vs fraction, PR, co-occurrence, curves, CAMs)."""
from __future__ import annotations

import logging

NAME = "plots"
HELP = "write result plots (PNG) from metrics, run folders and prepared splits"

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--metrics", default="results/metrics", help="folder <run>/<split>.json")
    p.add_argument("--runs", default="runs", help="run folders")
    p.add_argument("--prepared", default="data/prepared", help="prepared splits")
    p.add_argument("--out", default="results/plots", help="output folder")


def run(args) -> int:
    import torch

    from benchmark.config import load_params
    from benchmark.plots import make_all

    from benchmark.commands.tables import check_args

    check_args(args)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    params = load_params(args.params)
    written = make_all(params, args.metrics, args.runs, args.prepared, args.out)
    for p in written:
        print(p)
    return 0
