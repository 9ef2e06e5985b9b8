"""Test fixtures shared by the engine tests: the self-check's tiny dataset and params
(:mod:`benchmark.selfcheck`), whose runs train the registered ``tiny_cnn`` in seconds, and the
ground-truth / score frames that the evaluate, combine and tables tests write."""
import pandas as pd

from benchmark.classes import CLASS_CODES, CSV_COLUMNS
from benchmark.selfcheck import make_tiny_dataset, tiny_params

__all__ = ["gt_frame", "make_tiny_dataset", "scores_frame", "tiny_params"]


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
