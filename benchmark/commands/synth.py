"""``sewerbench synth``: generate the synthetic Sewer-ML dataset (optionally calibrate it)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from benchmark.errors import SewerbenchError

NAME = "synth"
HELP = "generate the synthetic Sewer-ML dataset (official CSV/PNG layout, per-class masks)"
log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--params", default="params.yaml", help="parameter file with a synth: section")
    p.add_argument("--out", help="output folder (default synth.out)")
    p.add_argument("--seed", type=int, help="random seed (default synth.seed)")
    p.add_argument("--n-train", type=int)
    p.add_argument("--n-val", type=int)
    p.add_argument("--n-test", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--difficulty", type=float)
    p.add_argument("--workers", type=int, help="processes (default synth.workers)")
    p.add_argument("--label-source", help="folder holding SewerML_{Train,Val}_sub_0.0625.csv")
    p.add_argument("--calibrate", action="store_true",
                   help="after generating, train a small CNN and report F2-CIW / F1-Normal vs chance")
    p.add_argument("--no-generate", action="store_true", help="with --calibrate: use the existing dataset")
    p.add_argument("--epochs", type=int, default=None, help="calibration epochs (default synth.calibrate.epochs)")
    p.add_argument("--calibration-out", help="write the calibration JSON here")
    p.add_argument("--force", action="store_true",
                   help="replace an --out folder that is not a synthetic dataset (its contents are lost)")


def load_config(params: str | None, overrides: dict):
    from benchmark.synth import SynthConfig
    section = {}
    if params:
        path = Path(params)
        if path.is_dir():
            raise SewerbenchError(f"{path}: --params is a folder, expected a YAML file")
        if path.is_file():
            try:
                doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise SewerbenchError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
            except UnicodeDecodeError:
                raise SewerbenchError(f"{path}: not UTF-8 text (a binary file?)") from None
            except OSError as exc:
                raise SewerbenchError(f"{path}: cannot read ({exc.strerror})") from None
            if not isinstance(doc, dict):
                raise SewerbenchError(f"{path}: top level must be a mapping")
            section = doc.get("synth") or {}
            if not isinstance(section, dict):
                raise SewerbenchError(f"{path}: synth: must be a mapping")
        elif params != "params.yaml":
            raise SewerbenchError(f"{path}: no such parameter file")
    section = {**section, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return SynthConfig.from_dict(section)
    except TypeError as exc:
        raise SewerbenchError(f"{params}: synth: {exc}") from None


def _check_args(args, cfg) -> None:
    """Every argument checked before anything is written."""
    from benchmark.io import check_not_inside_inputs, check_output_file
    from benchmark.synth.generate import check_output, is_synthetic_dataset

    if args.workers is not None and args.workers < 1:
        raise SewerbenchError(f"--workers: must be >= 1, got {args.workers}")
    if args.epochs is not None and args.epochs < 1:
        raise SewerbenchError(f"--epochs: must be >= 1, got {args.epochs}")
    if args.no_generate and not args.calibrate:
        raise SewerbenchError("--no-generate: only with --calibrate")
    if args.label_source is not None and not Path(args.label_source).exists():
        raise SewerbenchError(f"{args.label_source}: --label-source: no such folder or file")
    inputs = (("--params", args.params if args.params and Path(args.params).is_file() else None),)
    if args.calibrate and args.no_generate:
        if not is_synthetic_dataset(cfg.out):
            raise SewerbenchError(f"{cfg.out}: --no-generate: not a synthetic dataset (no meta.json "
                                  "written by `sewerbench synth`)")
    else:
        check_output(cfg, force=args.force, inputs=inputs)
    if args.calibration_out:
        check_output_file(args.calibration_out, "--calibration-out")
        check_not_inside_inputs(args.calibration_out, (*inputs, ("--out", cfg.out),
                                                      ("synth.label_source", cfg.label_source)),
                                "--calibration-out")


def run(args) -> int:
    from benchmark.synth import generate
    cfg = load_config(args.params, {"out": args.out, "seed": args.seed, "n_train": args.n_train,
                                    "n_val": args.n_val, "n_test": args.n_test, "width": args.width,
                                    "height": args.height, "difficulty": args.difficulty,
                                    "workers": args.workers, "label_source": args.label_source})
    _check_args(args, cfg)
    if not (args.calibrate and args.no_generate):
        meta = generate(cfg, force=args.force)
        print(f"synth: {sum(meta['counts'].values())} images -> {cfg.out} "
              f"({meta['images_per_second']} img/s on {meta['workers']} workers)")
    if args.calibrate:
        from benchmark.synth.calibrate import calibrate
        ccfg = dict(cfg.extra.get("calibrate") or {})
        if args.epochs is not None:
            ccfg["epochs"] = args.epochs
        result = calibrate(cfg.out, seed=cfg.seed, **ccfg)
        text = json.dumps(result, indent=2)
        print(text)
        if args.calibration_out:
            from benchmark.io import atomic_write_json
            atomic_write_json(args.calibration_out, result)
    return 0
