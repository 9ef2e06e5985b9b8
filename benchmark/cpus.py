"""The CPU this process runs on: its model name, how many CPUs it may use (its affinity mask on
Linux, else the machine's count) and whether it has native bf16."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def usable_cpus() -> int:
    """CPUs this process may use: ``len(os.sched_getaffinity(0))`` where there is one (a
    container or ``taskset`` limits it), else ``os.cpu_count()``; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):   # not on Linux
        return max(1, os.cpu_count() or 1)


def cpu_supports_bf16() -> bool:
    """Native bf16 on this CPU as torch's kernels see it: oneDNN's own check (AVX512-BF16 or
    AMX; ATen's capability string stays ``AVX512`` on an AVX512-BF16 CPU), else ATen's."""
    import torch

    try:
        if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return True
    except (AttributeError, RuntimeError):
        pass
    cap = str(torch.backends.cpu.get_cpu_capability()).upper()
    return "AMX" in cap or "BF16" in cap


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
