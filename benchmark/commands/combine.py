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


def check_args(args) -> None:
    """Inputs readable and numeric, --out a file path that overwrites no input."""
    from benchmark.classes import CLASS_CODES
    from benchmark.io import (check_input_file, check_not_inside_inputs, check_numeric_columns,
                              check_output_file)

    check_input_file(args.stage1, "--stage1")
    check_input_file(args.stage2, "--stage2")
    check_output_file(args.out)
    check_not_inside_inputs(args.out, (("--stage1", args.stage1), ("--stage2", args.stage2)))
    check_numeric_columns(args.stage1, any_of=(("Defect",), CLASS_CODES))
    check_numeric_columns(args.stage2, CLASS_CODES)


def run(args) -> int:
    from benchmark.combine import combine_files
    check_args(args)
    n = combine_files(args.stage1, args.stage2, args.out, args.mode)
    log.info("wrote %s (%d rows, mode %s)", args.out, n, args.mode)
    return 0
