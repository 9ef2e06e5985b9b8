"""``sewerbench tables``: Table 3, ablation, per-class and Sewer-ML Tables 4/5 from metrics."""
from __future__ import annotations

import logging
from pathlib import Path

NAME = "tables"
HELP = "write results tables (Table 3 beside the paper, ablation, per-class, Sewer-ML 4/5)"

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--metrics", default="results/metrics", help="folder <run>/<split>.json")
    p.add_argument("--runs", default="runs", help="run folders (scores for the paired bootstrap)")
    p.add_argument("--prepared", default="data/prepared", help="prepared splits (ground truth)")
    p.add_argument("--out", default="results", help="output folder")
    p.add_argument("--bootstrap", type=int, default=None, help="paired-bootstrap resamples "
                   "(default tables.bootstrap)")


def paired_against_reference(params: dict, runs_dir: Path, prepared: Path, n: int, seed: int
                             ) -> tuple[dict, dict]:
    """Paired bootstrap (full val set) of every ablation cell against its reference cell."""
    from benchmark.bootstrap import paired_bootstrap
    from benchmark.scores import load_aligned
    from benchmark.tables import ablation_cells

    tables = params.get("tables") or {}
    reference = dict(tables.get("ablation_reference") or {})
    cells = ablation_cells(params.get("runs") or {})
    gt = prepared / "full" / "val.csv"
    out: dict = {}
    cache: dict = {}

    def load(run):
        if run not in cache:
            f = runs_dir / run / "scores_val.csv"
            cache[run] = load_aligned(f, gt) if f.is_file() else None
        return cache[run]

    for c in cells:
        ref = reference.get(c["split"])
        if not ref or ref == c["run"]:
            continue
        a, b = load(ref), load(c["run"])
        if a is None or b is None:
            log.warning("ablation: no scores for %s or %s, no p-value", ref, c["run"])
            continue
        out[c["run"]] = paired_bootstrap(a.scores, b.scores, a.targets, n=n, seed=seed)
    return out, reference


def run(args) -> int:
    from benchmark import tables
    from benchmark.io import atomic_write_json
    from benchmark.metrics import to_jsonable
    from benchmark.pipeline.matrix import data_kind, load_params

    params = load_params(args.params)
    n = args.bootstrap if args.bootstrap is not None else int((params.get("tables") or {}).get("bootstrap", 1000))
    seed = int(params.get("seed", 0))
    metrics = tables.load_metrics(args.metrics)
    paired, reference = paired_against_reference(params, Path(args.runs), Path(args.prepared), n, seed)
    out = Path(args.out)
    atomic_write_json(out / "ablation_paired.json", to_jsonable(paired))
    written = tables.write_all(metrics, out, profile=str(params.get("profile", "smoke")),
                               source=data_kind(args.prepared, params), runs=params.get("runs"),
                               paired=paired, reference=reference)
    log.info("wrote %d table files under %s", len(written), out)
    print((out / "table3.md").read_text(encoding="utf-8"))
    return 0
