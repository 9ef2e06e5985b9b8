"""``sewerbench bench``: measure the suite's speed and write ``perf.json`` and ``perf.md``.

Model rows (per method and size: parameters, GFLOPs per image, training and inference
images/s model-only and end to end through the real loader, peak memory), loader images/s
per core from PNG frames (704x576) and from the uint8 cache, the official metrics on 130,046
x 17 against the official implementation timed in the same run, 1,000 bootstrap resamples,
the synthetic renderer, and with ``--reference`` the MA-Q2L / Q2L training step against the
authors' code (:mod:`benchmark.refstep`). Warm-up, repetitions, median and min/max spread; see
:mod:`benchmark.bench`. Nothing is asserted about speed: the numbers are reported.
"""
from __future__ import annotations

import logging
import sys

from benchmark.errors import SewerbenchError

NAME = "bench"
HELP = ("performance benchmark: model and loader images/s, memory, GFLOPs, metric and "
        "bootstrap seconds against the official code; writes perf.json and perf.md")

log = logging.getLogger(__name__)


def _list(text: str | None, option: str) -> list[str]:
    if text is None:
        return []
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise SewerbenchError(f"{option}: empty name in {text!r} (give a comma-separated list)")
    return list(dict.fromkeys(items))


def _params(path: str | None) -> dict | None:
    """``--params`` (must exist), else ./params.yaml when present, else None."""
    from pathlib import Path

    from benchmark.config import check_params, load_params

    if path is None:
        if not Path("params.yaml").is_file():
            return None
        path = "params.yaml"
    params = load_params(path)
    check_params(params, str(path))
    return params


def add_arguments(p) -> None:
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--methods", default=None,
                   help="comma-separated registry names (default: every torch method but the self-check's tiny_cnn)")
    p.add_argument("--sizes", default="smoke",
                   help="comma-separated: smoke (tiny builders, 64 px) and/or paper (reference "
                        "builders at each method's reference size); default smoke")
    p.add_argument("--out", default="results", help="folder for perf.json and perf.md (default results)")
    p.add_argument("--quick", action="store_true",
                   help="shorter paper-size rows (batch 2, 1 warm-up, 2 repetitions; the smoke rows keep "
                        "the full protocol) and the official metrics timed once")
    p.add_argument("--batch", type=int, default=None, help="batch size of the model rows")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up iterations")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers of the end-to-end rows (default: the profile's: 0 for smoke, "
                        "as the smoke profile; 8 for paper, at most the cores)")
    p.add_argument("--rows", type=int, default=None,
                   help="rows of the metric/bootstrap data (default 130046, the Sewer-ML validation split)")
    p.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default 1000)")
    p.add_argument("--no-official", action="store_true",
                   help="do not time the official metrics implementation")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads of the model rows (default: torch's default); "
                        "on a shared machine 1 avoids waiting on busy cores")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default 0)")
    p.add_argument("--params", default=None,
                   help="parameters file whose profiles give the end-to-end rows' training augmentation "
                        "(smoke size: profiles.smoke, paper size: profiles.paper; default params.yaml when "
                        "it exists, else each family's default augmentation)")
    p.add_argument("--reference", action="append", default=None, metavar="METHOD=DIR",
                   help="also time METHOD's training step (maq2l, q2l) against the authors' code in "
                        "the local checkout DIR (shengyu27/MA-Q2L, SlongLiu/query2labels): ResNet-101, "
                        "224 px, fp32, batch 4, the same weights; repeatable")


def run(args) -> int:
    from benchmark import bench, refstep

    references = refstep.parse_references(args.reference)
    params = _params(args.params)
    st = bench.Settings(
        device=args.device, methods=_list(args.methods, "--methods"),
        sizes=_list(args.sizes, "--sizes"), quick=args.quick, batch=args.batch,
        warmup=args.warmup, reps=args.reps, workers=args.workers,
        rows=bench.METRIC_ROWS if args.rows is None else args.rows,
        resamples=bench.RESAMPLES if args.resamples is None else args.resamples,
        official=not args.no_official, seed=args.seed, threads=args.threads,
        references=references, params=params)
    if args.methods is not None and not st.methods:
        raise SewerbenchError("--methods: give at least one method")
    if not st.methods:
        st.methods = bench.default_methods()
    bench.check_settings(st)
    bench.check_out(args.out)
    rep = bench.run_benchmark(st, command=["sewerbench", *sys.argv[1:]])
    pj, pm = bench.write_report(rep, args.out)
    print(bench.to_markdown(rep), end="")
    log.info("wrote %s and %s", pj, pm)
    return 0
