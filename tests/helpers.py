"""Test fixtures shared by the engine tests: the self-check's tiny dataset and params
(:mod:`benchmark.selfcheck`), whose runs train the registered ``tiny_cnn`` in seconds, and the
ground-truth / score frames that the evaluate, combine and tables tests write."""
import pandas as pd

from benchmark.classes import CLASS_CODES, CSV_COLUMNS
from benchmark.selfcheck import make_tiny_dataset, tiny_params

__all__ = ["cache_build_dying_at", "gt_frame", "make_tiny_dataset", "scores_frame", "tiny_params"]


def gt_frame(names, y) -> pd.DataFrame:
    """An official-schema annotation frame of labels ``y`` (N, 17) for ``names``."""
    df = pd.DataFrame(y, columns=list(CLASS_CODES))
    df.insert(0, "Filename", names)
    df.insert(1, "WaterLevel", 0)
    df.insert(2, "VA", 0)
    df["Defect"] = y.max(axis=1)
    df["ND"] = 1 - df["Defect"]
    return df[list(CSV_COLUMNS)]


def scores_frame(names, s) -> pd.DataFrame:
    """A scores frame (Filename + one probability column per class)."""
    df = pd.DataFrame(s, columns=list(CLASS_CODES))
    df.insert(0, "Filename", names)
    return df


def cache_build_dying_at(n: int, build_kwargs: str = "") -> str:
    """Source of a child process that builds ``ImageCache(argv[2])`` of every image under
    ``argv[1]`` at 8 px on one thread (``build_kwargs``: more keyword arguments, Python text)
    and SIGKILLs itself at its ``n``-th image decode."""
    return f"""
import os, signal, sys
from benchmark.data import cache
from benchmark.data.images import ImageIndex
real, n = cache.load_rgb, {{"i": 0}}
def dying(path, size=None):
    n["i"] += 1
    if n["i"] == {int(n)}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, size)
cache.load_rgb = dying
idx = ImageIndex(sys.argv[1])
cache.ImageCache.build(sys.argv[2], sorted(idx.filenames), idx, 8, workers=1, {build_kwargs})
"""
