"""``sewerbench prepare``: validate a Sewer-ML folder and write the prepared splits."""
from __future__ import annotations

import argparse
import logging

NAME = "prepare"
HELP = ("validate a Sewer-ML (or synthetic Sewer-ML) folder and write full, 1/16 subset and "
        "stratified-fraction split CSVs plus splits.json")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, metavar="DIR",
                        help="dataset folder: SewerML_Train.csv, SewerML_Val.csv (SewerML_Test.csv) "
                             "and the images in any sub-folders")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for the split CSVs")
    parser.add_argument("--fractions", type=float, nargs="*", default=[], metavar="F",
                        help="extra label-stratified fractions of the train split, e.g. 0.125 0.25")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stratified fractions (default 0)")
    parser.add_argument("--subset-dir", default=None, metavar="DIR",
                        help="folder with the published 1/16 subset files (default data/splits)")
    parser.add_argument("--subset-rule", choices=("auto", "published", "systematic"), default="auto",
                        help="1/16 subset: published files (real Sewer-ML), systematic every-16th rule "
                             "(synthetic), or auto (systematic when meta.json says synthetic)")
    parser.add_argument("--no-check-images", action="store_true",
                        help="do not check that every filename has an image under --source")


def run(args: argparse.Namespace) -> int:
    from benchmark.data.splits import prepare

    summary = prepare(args.source, args.out, fractions=args.fractions, seed=args.seed,
                      subset_dir=args.subset_dir, subset_rule=args.subset_rule,
                      check_images=not args.no_check_images)
    for name, info in summary["splits"].items():
        extra = f", {info['defective']} defective" if "defective" in info else ""
        print(f"{name}: {info['rows']} rows{extra}")
    return 0
