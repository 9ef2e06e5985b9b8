"""``sewerbench dvc-yaml``: write dvc.yaml from params.yaml, or check that it is up to date."""
from __future__ import annotations

import logging

NAME = "dvc-yaml"
HELP = ("generate dvc.yaml from params.yaml (the run folders the tables and plots stages read); "
        "--check exits 2 when the committed dvc.yaml is out of date")

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out", default="dvc.yaml", help="the dvc.yaml to write or check (default dvc.yaml)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 2 when --out differs from what --params implies")


def run(args) -> int:
    from benchmark.config import load_params
    from benchmark.dvcgen import check_dvc_yaml, render_dvc_yaml
    from benchmark.io import atomic_write_text

    params = load_params(args.params)
    if args.check:
        check_dvc_yaml(params, args.out, args.params)
        print(f"{args.out}: up to date with {args.params}")
        return 0
    text = render_dvc_yaml(params)
    atomic_write_text(args.out, text)
    print(f"wrote {args.out} from {args.params}")
    return 0
