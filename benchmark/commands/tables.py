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


def _metrics_name(split: str) -> str:
    try:
        from benchmark.artifacts import metrics_file
        return metrics_file(split)
    except ImportError:  # pragma: no cover
        return f"{split}.json"


def check_metrics_dir(path, arg: str = "--metrics") -> int:
    """Refuse a missing, empty or corrupt metrics folder (``<run>/<split>.json``): results are
    never rewritten from missing inputs. Returns the number of metrics files."""
    import json
    import math

    from benchmark.errors import SewerbenchError
    from benchmark.io import check_input_dir
    from benchmark.tables import SPLITS

    root = check_input_dir(path, arg)
    files = [d / _metrics_name(split) for d in sorted(p for p in root.iterdir() if p.is_dir())
             for split in SPLITS if (d / _metrics_name(split)).is_file()]
    if not files:
        raise SewerbenchError(f"{root}: {arg}: no metrics files (<run>/<split>.json for split "
                              f"{' | '.join(SPLITS)}); run the evaluate stage first (refusing to "
                              "write results from missing inputs)")
    for f in files:
        try:
            m = json.loads(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise SewerbenchError(f"{f}: not UTF-8 text (corrupt metrics file)") from None
        except ValueError as exc:
            raise SewerbenchError(f"{f}: corrupt or truncated metrics JSON ({exc})") from None
        except OSError as exc:
            raise SewerbenchError(f"{f}: cannot read ({exc.strerror})") from None
        if not isinstance(m, dict):
            raise SewerbenchError(f"{f}: metrics JSON must be an object (the official layout)")
        for block, keys in (("New", ("F2", "F1_Normal")), ("Main", ("mAP",))):
            b = m.get(block)
            if not isinstance(b, dict):
                raise SewerbenchError(f"{f}: missing the official {block!r} block")
            for k in keys:
                v = b.get(k)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isinf(v):
                    raise SewerbenchError(f"{f}: {block}.{k}: expected a number, got {v!r}")
    return len(files)


def check_args(args) -> None:
    """Every input of ``tables`` / ``plots`` checked before anything is written."""
    from benchmark.errors import SewerbenchError
    from benchmark.io import check_input_dir, check_input_file, check_not_inside_inputs

    check_input_file(args.params, "--params")
    check_metrics_dir(args.metrics)
    check_input_dir(args.runs, "--runs")
    check_input_dir(args.prepared, "--prepared")
    if getattr(args, "bootstrap", None) is not None and args.bootstrap < 1:
        raise SewerbenchError(f"--bootstrap: must be >= 1, got {args.bootstrap}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise SewerbenchError(f"{args.out}: --out is a file, expected a folder")
    check_not_inside_inputs(args.out, (("--metrics", args.metrics), ("--runs", args.runs),
                                       ("--prepared", args.prepared), ("--params", args.params)))


def run(args) -> int:
    from benchmark import tables
    from benchmark.artifacts import ABLATION_PAIRED_FILE
    from benchmark.config import load_params
    from benchmark.data.layout import PreparedLayout
    from benchmark.io import atomic_write_json
    from benchmark.matrix import data_kind
    from benchmark.metrics import to_jsonable

    check_args(args)
    params = load_params(args.params)
    layout = PreparedLayout.from_dir(args.prepared)
    n = args.bootstrap if args.bootstrap is not None else int((params.get("tables") or {}).get("bootstrap", 1000))
    seed = int(params.get("seed", 0))
    metrics = tables.load_metrics(args.metrics)
    paired, reference = tables.paired_against_reference(params, args.runs, layout, n, seed)
    out = Path(args.out)
    atomic_write_json(out / ABLATION_PAIRED_FILE, to_jsonable(paired))
    written = tables.write_all(metrics, out, profile=str(params.get("profile", "smoke")),
                               source=data_kind(layout, params), runs=params.get("runs"),
                               paired=paired, reference=reference,
                               configured=[*(params.get("runs") or {}), *(params.get("combos") or {})])
    log.info("wrote %d table files under %s", len(written), out)
    print((out / "table3.md").read_text(encoding="utf-8"))
    return 0
