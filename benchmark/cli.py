"""The ``sewerbench`` command line: a thin dispatcher over ``benchmark.commands``.

Errors: every failure prints one line ``sewerbench: error: <file or argument>: <problem>`` to
stderr and exits 2, without a traceback. ``--debug`` (before or after the command name)
shows the traceback instead. Ctrl-C exits 130.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import traceback

from benchmark import __version__, commands
from benchmark.errors import SewerbenchError

#: Exit status of every reported error (as argparse's usage errors).
EXIT_ERROR = 2


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            yield module


def _add_debug(p: argparse.ArgumentParser, default) -> None:
    p.add_argument("--debug", action="store_true", default=default,
                   help="on an error, show the Python traceback instead of the one-line message")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sewerbench",
        description="Reproducible benchmark and ablation suite for multi-label sewer defect "
                    "recognition on Sewer-ML.")
    parser.add_argument("--version", action="version", version=f"sewerbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _add_debug(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        if not any("--debug" in a.option_strings for a in p._actions):
            _add_debug(p, argparse.SUPPRESS)  # keeps the global value unless given here
        p.set_defaults(_run=module.run)
    return parser


def one_line(exc: BaseException) -> str:
    """The one-line message of an error: the SewerbenchError text, ``file: problem`` for OS
    errors, and ``type: message`` (marked internal) for anything else."""
    if isinstance(exc, SewerbenchError):
        return str(exc)
    if isinstance(exc, OSError):
        what = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
        if exc.filename is not None:
            extra = f" -> {exc.filename2}" if getattr(exc, "filename2", None) else ""
            return f"{exc.filename}{extra}: {what}"
        return what
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:300] + "..."
    return (f"{type(exc).__name__}: {text or 'no message'} (unexpected; rerun with --debug for the "
            "traceback)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("sewerbench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error becomes one line (or a traceback)
        if debug:
            traceback.print_exc()
        print(f"sewerbench: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
