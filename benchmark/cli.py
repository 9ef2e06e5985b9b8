"""The ``sewerbench`` command line: a thin dispatcher over ``benchmark.commands``."""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from benchmark import __version__, commands
from benchmark.errors import SewerbenchError


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            yield module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sewerbench",
        description="Reproducible benchmark and ablation suite for multi-label sewer defect "
                    "recognition on Sewer-ML.")
    parser.add_argument("--version", action="version", version=f"sewerbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return int(args._run(args) or 0)
    except SewerbenchError as exc:
        print(f"sewerbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sewerbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
