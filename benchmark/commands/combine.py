"""``sewerbench combine``: two-stage combination of a binary and a multi-label scores CSV."""
from __future__ import annotations

import logging

NAME = "combine"
HELP = "combine stage-1 (Filename,Defect) and stage-2 scores CSVs (replace | multiply)"

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--stage1", required=True, help="binary scores CSV (Filename,Defect)")
    p.add_argument("--stage2", required=True, help="multi-label scores CSV (Filename + 17 classes)")
    p.add_argument("--mode", choices=("replace", "multiply"), default="replace",
                   help="replace: P(defect) < 0.5 sets every class to P(defect) (the Sewer-ML "
                        "benchmark); multiply: class score x P(defect)")
    p.add_argument("--out", required=True, help="combined scores CSV")


def run(args) -> int:
    from benchmark.pipeline.combine import combine_files
    n = combine_files(args.stage1, args.stage2, args.out, args.mode)
    log.info("wrote %s (%d rows, mode %s)", args.out, n, args.mode)
    return 0
