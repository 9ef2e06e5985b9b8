"""The one source of truth for Sewer-ML's classes, their order, names and CIW weights.

Order, codes, names and class-importance weights follow the official Sewer-ML code
(Haurum & Moeslund, CVPR 2021); see REFERENCE.md section 1.
"""
from __future__ import annotations

import numpy as np

#: The 17 defect class codes in official order (the column order of every scores CSV).
CLASS_CODES: tuple[str, ...] = (
    "RB", "OB", "PF", "DE", "FS", "IS", "RO", "IN", "AF",
    "BE", "FO", "GR", "PH", "PB", "OS", "OP", "OK",
)
NUM_CLASSES = len(CLASS_CODES)

#: English names of the classes (official translation of the Danish codes).
CLASS_NAMES: dict[str, str] = {
    "RB": "Cracks, breaks and collapses",
    "OB": "Surface damage",
    "PF": "Production error",
    "DE": "Deformation",
    "FS": "Displaced joint",
    "IS": "Intruding sealing material",
    "RO": "Roots",
    "IN": "Infiltration",
    "AF": "Settled deposits",
    "BE": "Attached deposits",
    "FO": "Obstacle",
    "GR": "Branch pipe",
    "PH": "Chiseled connection",
    "PB": "Drilled connection",
    "OS": "Lateral reinstatement cuts",
    "OP": "Connection with transition profile",
    "OK": "Connection with construction changes",
}

#: Class-importance weights, same order as CLASS_CODES (sum 6.7024).
CIW: np.ndarray = np.array(
    [1.0000, 0.5518, 0.2896, 0.1622, 0.6419, 0.1847, 0.3559, 0.3131, 0.0811,
     0.2275, 0.2477, 0.0901, 0.4167, 0.4167, 0.9009, 0.3829, 0.4396],
    dtype=np.float64,
)
CIW.setflags(write=False)

#: The label name used for the implicit 18th class (all 17 targets zero).
NORMAL = "Normal"

#: Full header of the official annotation CSVs (train, val and the 1/16 subsets).
CSV_COLUMNS: tuple[str, ...] = ("Filename", "WaterLevel", "VA", *CLASS_CODES, "ND", "Defect")
#: Header of a scores CSV (predictions) and of the public test CSV's first column.
SCORE_COLUMNS: tuple[str, ...] = ("Filename", *CLASS_CODES)

#: The decision threshold of every Sewer-ML metric and of the two-stage combination: a class is
#: predicted present when its score is ``>= THRESHOLD`` (official Sewer-ML code).
THRESHOLD: float = 0.5

#: Classes the MA-Q2L / Q2L optimised ASL up-weights by 2 ("bottleneck" classes).
BOTTLENECK_CLASSES: tuple[str, ...] = ("RB", "IS", "FO", "OS")

#: Convenience index lookup.
CLASS_INDEX: dict[str, int] = {c: i for i, c in enumerate(CLASS_CODES)}
