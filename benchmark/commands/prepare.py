"""``sewerbench prepare``: validate a Sewer-ML folder and write the prepared splits.

``--source DIR`` prepares that folder. Without ``--source`` (params mode, the DVC prepare
stage) the folder, fractions, seed and image check come from ``--params``: the active
profile's ``data.<profile>.source`` (the smoke profile's synthetic dataset, the paper
profile's ``data.sewerml_root``), ``data.fractions``, ``seed``, ``data.check_images`` and
``data.subset_rule`` (``data.<profile>.subset_rule`` wins over it; ``systematic`` on a real
folder is meant for the paper dry run's mini Sewer-ML, ``sewerbench dryrun``); ``--fractions``,
``--seed``, ``--subset-rule`` and ``--no-check-images`` given on the command line win.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

NAME = "prepare"
HELP = ("validate a Sewer-ML (or synthetic Sewer-ML) folder and write full, 1/16 subset and "
        "stratified-fraction split CSVs plus splits.json")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default=None, metavar="DIR",
                        help="dataset folder: SewerML_Train.csv, SewerML_Val.csv (SewerML_Test.csv) "
                             "and the images in any sub-folders (default: the active profile's "
                             "data folder of --params)")
    parser.add_argument("--params", default=None, metavar="FILE",
                        help="params.yaml for the defaults when --source is not given "
                             "(default params.yaml)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for the split CSVs")
    parser.add_argument("--fractions", type=float, nargs="*", default=None, metavar="F",
                        help="extra label-stratified fractions of the train split, e.g. 0.125 0.25 "
                             "(default none, in params mode data.fractions)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the stratified fractions (default 0, in params mode seed)")
    parser.add_argument("--subset-dir", default=None, metavar="DIR",
                        help="folder with the published 1/16 subset files (default data/splits)")
    parser.add_argument("--subset-rule", choices=("auto", "published", "systematic"), default=None,
                        help="1/16 subset: published files (real Sewer-ML), systematic every-16th rule "
                             "(synthetic), or auto (systematic when meta.json says synthetic); "
                             "default auto, in params mode data.subset_rule")
    parser.add_argument("--no-check-images", action="store_true",
                        help="do not check that every filename has an image under --source "
                             "(in params mode default data.check_images)")
    parser.add_argument("--force", action="store_true",
                        help="write into an --out folder that `sewerbench prepare` did not create")


def is_prepared_dir(path: Path) -> bool:
    """True when ``path`` holds the output of an earlier ``prepare`` (its splits.json)."""
    try:
        info = json.loads((path / "splits.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and "splits" in info and "format" in info


def check_args(args: argparse.Namespace, source, fractions) -> None:
    """Every argument checked before anything is read at length or written."""
    from benchmark.errors import SewerbenchError
    from benchmark.io import check_input_dir, check_not_inside_inputs, check_replaceable_dir

    check_input_dir(source, "--source")
    if args.subset_dir is not None:
        check_input_dir(args.subset_dir, "--subset-dir")
    for f in fractions:
        if not (0.0 < f <= 1.0):  # also refuses nan
            raise SewerbenchError(f"--fractions: each fraction must be in (0, 1], got {f}")
    check_not_inside_inputs(args.out, (("--source", source), ("--subset-dir", args.subset_dir),
                                       ("--params", args.params)))
    check_replaceable_dir(args.out, NAME, force=getattr(args, "force", False),
                          recognise=is_prepared_dir)


def run(args: argparse.Namespace) -> int:
    from benchmark.data.splits import prepare

    source, fractions, seed, check_images, subset_rule = _settings(args)
    check_args(args, source, fractions)
    summary = prepare(source, args.out, fractions=fractions, seed=seed,
                      subset_dir=args.subset_dir, subset_rule=subset_rule,
                      check_images=check_images)
    for name, info in summary["splits"].items():
        extra = f", {info['defective']} defective" if "defective" in info else ""
        print(f"{name}: {info['rows']} rows{extra}")
    return 0


def _settings(args: argparse.Namespace) -> tuple[str, list[float], int, bool, str]:
    """(source, fractions, seed, check_images, subset_rule): from the command line with
    --source, else from --params with command-line values winning."""
    fractions = None if args.fractions is None else [float(f) for f in args.fractions]
    if args.source is not None:
        if args.params is not None:
            from benchmark.errors import SewerbenchError
            raise SewerbenchError("--params: not with --source (give one of them)")
        return (args.source, fractions or [], 0 if args.seed is None else args.seed,
                not args.no_check_images, args.subset_rule or "auto")
    from benchmark.config import load_params
    from benchmark.matrix import data_source, profile

    params = load_params(args.params or "params.yaml")
    data = params.get("data") or {}
    source = data_source(params)
    log.info("profile %s: preparing splits from %s", profile(params), source)
    if fractions is None:
        fractions = [float(f) for f in data.get("fractions") or []]
    seed = int(params.get("seed", 0)) if args.seed is None else args.seed
    check_images = False if args.no_check_images else bool(data.get("check_images", True))
    subset_rule = args.subset_rule or _params_subset_rule(params, args.params or "params.yaml")
    return source, fractions, seed, check_images, subset_rule


def _params_subset_rule(params, where) -> str:
    """``data.<profile>.subset_rule``, else ``data.subset_rule``, else auto (checked)."""
    from collections.abc import Mapping

    from benchmark.data.splits import SUBSET_RULES
    from benchmark.errors import SewerbenchError
    from benchmark.matrix import profile

    data = params.get("data") or {}
    per = data.get(profile(params))
    key, rule = "data.subset_rule", data.get("subset_rule")
    if isinstance(per, Mapping) and per.get("subset_rule") is not None:
        key, rule = f"data.{profile(params)}.subset_rule", per["subset_rule"]
    if rule is None:
        return "auto"
    if rule not in SUBSET_RULES:
        raise SewerbenchError(f"{where}: {key}: unknown subset rule {rule!r} "
                              f"(choose from {', '.join(SUBSET_RULES)})")
    return str(rule)
