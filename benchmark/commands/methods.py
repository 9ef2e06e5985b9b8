"""``sewerbench methods``: list the registered methods (and, with --counts, parameter counts)."""
from __future__ import annotations

import argparse
import json
import logging
from typing import Any

NAME = "methods"
HELP = "list every registered method, its family and (with --counts) its parameter counts"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=("reference", "tiny"), default="reference",
                        help="model size the counts refer to (default: reference)")
    parser.add_argument("--counts", action="store_true",
                        help="build each model (on the meta device, no memory) and count its "
                             "total and trainable parameters")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def count_method(name: str, size: str = "reference") -> dict[str, Any]:
    """Build ``name`` on the meta device and count its parameters.

    Returns {"total", "trainable", "reference"} (ints or None), or {"error": reason} when
    the builder is missing or fails.
    """
    import torch

    from methods.registry import get_spec

    spec = get_spec(name)
    try:
        builder = spec.builder()
    except Exception as exc:  # a module still being written, a missing dependency, ...
        return {"error": f"unavailable: {type(exc).__name__}: {exc}".splitlines()[0]}
    kwargs = dict(spec.defaults)
    kwargs.update(size=size, num_classes=1 if spec.binary else 17, pretrained=False)
    try:
        if spec.kind == "torch":
            with torch.device("meta"):
                model = builder(**kwargs)
        else:
            model = builder(**kwargs)
    except Exception as exc:
        return {"error": f"unavailable: {type(exc).__name__}: {exc}".splitlines()[0]}
    ref = getattr(model, "reference_num_params", None)
    if not hasattr(model, "parameters"):
        return {"total": None, "trainable": None, "reference": ref}
    params = list(model.parameters())
    return {"total": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad),
            "reference": ref}


def _fmt(n: Any) -> str:
    return "-" if n is None else f"{n:,}"


def run(args: argparse.Namespace) -> int:
    from methods.registry import REGISTRY

    rows = []
    for name, spec in REGISTRY.items():
        row: dict[str, Any] = {"name": name, "family": spec.family, "kind": spec.kind,
                               "binary": spec.binary, "image_size": spec.image_size,
                               "description": spec.description}
        if args.counts:
            row.update(count_method(name, args.size))
        rows.append(row)
    if args.json:
        print(json.dumps({"size": args.size if args.counts else None, "methods": rows}, indent=2))
        return 0
    head = ["name", "family", "kind", "px"]
    if args.counts:
        head += [f"total ({args.size})", "trainable"]
    head.append("description")
    table = []
    for r in rows:
        line = [r["name"], r["family"], r["kind"] + (" (binary)" if r["binary"] else ""),
                str(r["image_size"])]
        if args.counts:
            if "error" in r:
                line += [r["error"], ""]
            else:
                line += [_fmt(r["total"]), _fmt(r["trainable"])]
        line.append(r["description"])
        table.append(line)
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(head)]
    widths[-1] = 0
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths)).rstrip())
    return 0
