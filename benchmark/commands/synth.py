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


def load_config(params: str | None, overrides: dict):
    from benchmark.synth import SynthConfig
    section = {}
    if params:
        path = Path(params)
        if path.is_file():
            try:
                doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise SewerbenchError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
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


def run(args) -> int:
    from benchmark.synth import generate
    cfg = load_config(args.params, {"out": args.out, "seed": args.seed, "n_train": args.n_train,
                                    "n_val": args.n_val, "n_test": args.n_test, "width": args.width,
                                    "height": args.height, "difficulty": args.difficulty,
                                    "workers": args.workers, "label_source": args.label_source})
    if not (args.calibrate and args.no_generate):
        meta = generate(cfg)
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
