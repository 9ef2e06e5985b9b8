"""DVC ``prepare`` stage: ``sewerbench prepare`` on the active profile's data folder.

The smoke profile reads the synthetic dataset (``data.smoke.source``), the paper profile the
real Sewer-ML folder (``data.sewerml_root``), so ``dvc exp run -S profile=paper`` is the only
switch. Run as ``python -m benchmark.pipeline.prepare --params params.yaml --out data/prepared``.
"""
from __future__ import annotations

import argparse
import logging
import sys

from benchmark.errors import SewerbenchError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.pipeline.prepare")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/prepared")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        from benchmark.data.splits import prepare
        from benchmark.pipeline.matrix import data_source, load_params
        params = load_params(args.params)
        data = params.get("data") or {}
        src = data_source(params)
        logging.getLogger(__name__).info("profile %s: preparing splits from %s",
                                         params.get("profile", "smoke"), src)
        prepare(src, args.out, fractions=[float(f) for f in data.get("fractions") or []],
                seed=int(params.get("seed", 0)), check_images=bool(data.get("check_images", True)))
    except SewerbenchError as exc:
        print(f"sewerbench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
