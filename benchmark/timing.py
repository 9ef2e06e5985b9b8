"""The one summary of repeated timings that ``sewerbench bench`` reports (median and spread),
shared by :mod:`benchmark.bench` and :mod:`benchmark.refstep`."""
from __future__ import annotations

import statistics
from typing import Any


def summary(times: list[float], per: float = 1.0, rate: bool = True) -> dict[str, Any]:
    """Median and spread of repetition times: images/s (``per`` images each) or seconds."""
    if rate:
        vals = [per / t if t > 0 else float("inf") for t in times]
        unit = "images/s"
    else:
        vals = list(times)
        unit = "s"
    return {"median": float(statistics.median(vals)), "min": float(min(vals)),
            "max": float(max(vals)), "reps": len(vals), "unit": unit}
