"""Sewer-ML data layer: annotations, image lookup, splits, transforms, image cache, dataset.

Names are imported lazily so that CSV-only users (``sewerbench prepare``) do not load torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "read_annotations": "annotations", "read_filenames": "annotations", "label_matrix": "annotations",
    "ImageIndex": "images",
    "prepare": "splits", "stratified_fraction": "splits", "systematic_subset": "splits",
    "published_subset": "splits",
    "build_transform": "transforms",
    "ImageCache": "cache",
    "SewerMLDataset": "dataset",
    "PreparedLayout": "layout",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
