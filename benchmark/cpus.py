"""How many CPUs this process may run on (its affinity mask on Linux, else the machine's count)."""
from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPUs this process may use: ``len(os.sched_getaffinity(0))`` where there is one (a
    container or ``taskset`` limits it), else ``os.cpu_count()``; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):   # not on Linux
        return max(1, os.cpu_count() or 1)
