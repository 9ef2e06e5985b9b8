"""Torch dataset over a validated annotation DataFrame.

Targets are the 17 class columns in official order as float32; an uncertain label (-1,
only present when the CSV was read with ``allow_uncertain=True``) becomes 0, as the
official metric counts -1 as 0. A Filename-only frame (public test CSV) gives all-zero
targets.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from benchmark.classes import CLASS_CODES, NUM_CLASSES
from benchmark.data.annotations import label_matrix
from benchmark.data.cache import ImageCache, load_rgb
from benchmark.data.images import ImageIndex
from benchmark.data.transforms import BatchPlan, batch_plan, deterministic_steps
from benchmark.errors import SewerbenchError

log = logging.getLogger(__name__)


class SewerMLDataset(Dataset):
    """Items are ``(image, target, filename)``: image a float32 CxHxW tensor (after
    ``transform``; without one, the uint8 image as a float32 tensor in [0, 1]), target a
    float32 (17,) tensor.

    ``images`` is an :class:`ImageCache` (decoded once, fast) or an :class:`ImageIndex`
    (decodes the PNG each time). Filenames absent from the source raise, except files a
    cache skipped as corrupt, which are dropped with a warning when ``drop_skipped``.
    Picklable (only filenames, targets, paths or the cache folder travel to workers).
    """

    def __init__(self, df: pd.DataFrame, images: ImageCache | ImageIndex,
                 transform: Callable | None = None, *, drop_skipped: bool = True):
        if "Filename" not in df.columns:
            raise SewerbenchError("dataset: the annotation frame has no Filename column")
        names = df["Filename"].astype(str).tolist()
        if all(c in df.columns for c in CLASS_CODES):
            targets = label_matrix(df)
        else:
            targets = np.zeros((len(names), NUM_CLASSES), dtype=np.float32)
        keep = np.ones(len(names), dtype=bool)
        if isinstance(images, ImageCache):
            missing = images.missing(names)
            if missing:
                skipped = set(images.skipped)
                truly = [m for m in missing if m not in skipped]
                if truly or not drop_skipped:
                    bad = truly or missing
                    raise SewerbenchError(f"{images.directory}: {len(bad)} images of the split are not "
                                          f"in the cache (first: {', '.join(bad[:5])})")
                drop = set(missing)
                keep = np.array([n not in drop for n in names])
                log.warning("dataset: dropping %d rows whose images were skipped as unreadable",
                            len(drop))
            # only the shard reader (folder, codec, row counts) and row numbers travel to
            # workers, not the cache's filename index
            self._reader = images.reader()
            self._paths: list[str] | None = None
            self._rows = np.array([images.row(n) for n, k in zip(names, keep) if k], dtype=np.int64)
        elif isinstance(images, ImageIndex):
            self._reader = None
            self._paths = images.paths(names)
            self._rows = None
        else:
            raise TypeError(f"images must be an ImageCache or ImageIndex, not {type(images).__name__}")
        self.filenames: list[str] = [n for n, k in zip(names, keep) if k]
        self.targets: np.ndarray = np.ascontiguousarray(targets[keep])
        self.transform = transform

    def __len__(self) -> int:
        return len(self.filenames)

    def load(self, i: int) -> np.ndarray:
        """The raw HxWx3 uint8 image of item ``i`` (no transform)."""
        if self._reader is not None:
            return self._reader.read(int(self._rows[i]))  # a copy (each worker opens the shards)
        try:
            return load_rgb(self._paths[i])
        except Exception as exc:  # noqa: BLE001
            raise SewerbenchError(f"{self._paths[i]}: unreadable image ({type(exc).__name__}: {exc})") from None

    @property
    def deterministic(self) -> bool:
        """True when an item draws no random number (its transform is ToUint8 + ToFloat)."""
        return deterministic_steps(self.transform) is not None

    @property
    def batch_plan(self) -> BatchPlan | None:
        """The transform as per-image draws and one batch pass (:func:`batch_plan`), or None."""
        return batch_plan(self.transform)

    def __getitems__(self, indices, draws=None) -> list:
        """The items of ``indices`` (the DataLoader's batched fetch). A transform with a
        :class:`BatchPlan` (every eval transform; a flip + colour jitter train transform) runs
        its work once on the stacked uint8 batch instead of per item: the same operations per
        image, so the same values as ``[self[i] for i in indices]`` (tests/test_data_batched.py;
        loader times in README "Performance"). Its random steps take ``draws`` (one
        :meth:`BatchPlan.draw` per index, e.g. made under per-item seeds by
        :class:`benchmark.train.data.EpochSeeded`); without them they are drawn here, image after
        image, from torch's generator, as the per-item path draws them."""
        plan = self.batch_plan
        if plan is None:
            return [self[int(i)] for i in indices]
        indices = [int(i) for i in indices]
        if draws is None:
            draws = [plan.draw() for _ in indices]
        elif len(draws) != len(indices):
            raise ValueError(f"dataset: {len(draws)} draws for {len(indices)} items")
        x = torch.stack([plan.to_uint8(self.load(i)) for i in indices])
        x = plan.apply(x, draws) if plan.random else plan.to_float(x)
        return [(x[j], torch.from_numpy(self.targets[i].copy()), self.filenames[i])
                for j, i in enumerate(indices)]

    def __getitem__(self, i: int):
        img = self.load(i)
        if self.transform is not None:
            x = self.transform(img)
        else:
            x = torch.from_numpy(img).permute(2, 0, 1).float().div_(255.0)
        return x, torch.from_numpy(self.targets[i].copy()), self.filenames[i]
