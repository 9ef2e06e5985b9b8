"""All-or-nothing output of several files, and the checks done before anything is written.

Commands that write more than one file (``sewerbench evaluate --out --table-md --table-tex``,
``sewerbench compare --out``) first validate every output path with :func:`check_outputs`,
compute everything, then write with :func:`write_all`: temporary files beside the targets,
renamed at the end, so an error leaves no output behind.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Mapping

from benchmark.errors import SewerbenchError
from benchmark.io import atomic_path


def check_outputs(outputs: Mapping[str, str | None], inputs: list[str]) -> None:
    """Refuse output paths that are folders, collide with each other or with an input.

    ``outputs`` maps the option name (for the message) to the path; empty paths are skipped.
    """
    seen: dict[Path, str] = {}
    ins = {Path(p).resolve() for p in inputs}
    for opt, p in outputs.items():
        if not p:
            continue
        path = Path(p)
        rp = path.resolve()
        if path.is_dir():
            raise SewerbenchError(f"{p}: {opt} is a directory, expected a file path")
        if rp in ins:
            raise SewerbenchError(f"{p}: {opt} would overwrite an input file")
        if rp in seen:
            raise SewerbenchError(f"{p}: {opt} is the same path as {seen[rp]}")
        seen[rp] = opt
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise SewerbenchError(f"{p}: {opt}: {parent} is not a directory")


def write_all(texts: Mapping[str | None, str]) -> None:
    """Write several text files all-or-nothing (temp files first, renamed at the end);
    entries with an empty path are skipped."""
    items = [(p, t) for p, t in texts.items() if p]
    current = None
    try:
        with contextlib.ExitStack() as stack:
            tmps = []
            for p, text in items:
                current = p
                tmps.append(stack.enter_context(atomic_path(p)))
            for (p, text), tmp in zip(items, tmps):
                current = p
                tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise SewerbenchError(f"{current}: cannot write: {exc.strerror or exc}") from None
