"""Datasets of one run: annotation CSVs -> frames -> :class:`SewerMLDataset` with the
recipe's transforms, binary targets for stage-1 runs, defect-only filtering for stage 2,
and the image source (the uint8 cache when enabled, else the image folder)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from benchmark.classes import CLASS_CODES
from benchmark.errors import SewerbenchError
from benchmark.seed import derive_seed, item_streams

log = logging.getLogger(__name__)


def read_frame(path: str | Path, require_labels: bool) -> pd.DataFrame:
    """A validated annotation frame; a Filename-only CSV is accepted when labels are optional."""
    from benchmark.data.annotations import read_annotations, read_filenames

    path = Path(path)
    if not path.is_file():
        raise SewerbenchError(f"{path}: annotation CSV not found (run `sewerbench prepare` / dvc repro)")
    header = pd.read_csv(path, nrows=0).columns
    if all(c in header for c in CLASS_CODES) or require_labels:
        return read_annotations(path)
    return read_filenames(path)


def select_rows(df: pd.DataFrame, train_on: str, max_images: int | None, seed: int,
                where: str) -> pd.DataFrame:
    """Defect-only filtering (stage 2) and an optional seeded cap (order kept)."""
    if train_on == "defect_only":
        df = df[df["Defect"] == 1].reset_index(drop=True)
        if len(df) == 0:
            raise SewerbenchError(f"{where}: no defect rows to train a defect-only model on")
    if max_images is not None and len(df) > int(max_images):
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.permutation(len(df))[: int(max_images)])
        df = df.iloc[keep].reset_index(drop=True)
    return df


def train_val_frames(cfg) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's training and validation rows (``train_on`` filter and seeded caps applied)."""
    from benchmark.seed import derive_seed

    data, rt = cfg.data, cfg.runtime
    train_df = select_rows(read_frame(data.train_csv, True), cfg.train_on,
                           rt.max_train_images, derive_seed(cfg.seed, "subsample"), data.train_csv)
    val_df = select_rows(read_frame(data.val_csv, True), cfg.train_on,
                         rt.max_eval_images, derive_seed(cfg.seed, "subsample-val"), data.val_csv)
    frames = {"train": (str(data.train_csv), train_df), "val": (str(data.val_csv), val_df)}
    if data.test_csv and Path(data.test_csv).is_file():
        frames["test"] = (str(data.test_csv), read_frame(data.test_csv, False))
    check_no_leak(frames, f"run {cfg.run}")
    log_class_counts(f"run {cfg.run}: train", train_df)
    log_class_counts(f"run {cfg.run}: val", val_df)
    return train_df, val_df


def check_no_leak(frames: dict[str, tuple[str, pd.DataFrame]], where: str) -> None:
    """Refuse a run whose splits share images (train/val/test leak, or val identical to train)."""
    names = {k: (path, set(df["Filename"])) for k, (path, df) in frames.items()}
    keys = list(names)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            (pa, na), (pb, nb) = names[a], names[b]
            if pa == pb or not (na and nb):
                continue
            both = na & nb
            if both:
                first = ", ".join(sorted(both)[:3])
                raise SewerbenchError(f"{where}: {len(both)} image(s) are in both the {a} split ({pa}) and the "
                                      f"{b} split ({pb}), e.g. {first}: a leak between splits")


def log_class_counts(name: str, df: pd.DataFrame) -> None:
    from benchmark.data.annotations import label_matrix

    y = label_matrix(df)
    counts = ", ".join(f"{c} {int(n)}" for c, n in zip(CLASS_CODES, y.sum(axis=0)))
    log.info("%s: %d images, %d normal; positives per class: %s", name, len(df), int((y.max(axis=1) == 0).sum()),
             counts)


def targets_of(df: pd.DataFrame, binary: bool) -> np.ndarray:
    """(N, 17) float32 labels, or (N, 1) Defect labels for binary runs (-1 counts as 0)."""
    from benchmark.data.annotations import label_matrix

    y = label_matrix(df)
    return y.max(axis=1, keepdims=True) if binary else y


class BinaryTargets(Dataset):
    """Wrap a 17-class dataset: target = Defect = any class positive, shape (1,)."""

    def __init__(self, base: Dataset):
        self.base = base
        self.filenames = list(base.filenames)
        self.targets = np.asarray(base.targets).max(axis=1, keepdims=True).astype(np.float32)

    def __len__(self) -> int:
        return len(self.base)

    @property
    def deterministic(self) -> bool:
        return bool(getattr(self.base, "deterministic", False))

    @property
    def batch_plan(self):
        return getattr(self.base, "batch_plan", None)

    def __getitem__(self, i):
        x, y, name = self.base[i]
        return x, y.max().reshape(1), name

    def __getitems__(self, indices, draws=None) -> list:
        items = self.base.__getitems__(indices) if draws is None else self.base.__getitems__(indices, draws=draws)
        return [(x, y.max().reshape(1), name) for x, y, name in items]


def split_filenames(cfg) -> list[str]:
    """Every image a run of ``cfg`` reads: the Filename column of its train, val and test CSVs."""
    names: list[str] = []
    d = cfg.data
    for csv in dict.fromkeys(c for c in (d.train_csv, d.val_csv, d.full_val_csv, d.test_csv) if c):
        if csv in (d.train_csv, d.val_csv) or Path(csv).is_file():   # train / val must exist
            names += read_frame(csv, require_labels=False)["Filename"].astype(str).tolist()
    return list(dict.fromkeys(names))


def cache_dir(cfg, label: str) -> Path:
    """data.cache/<label>/<size>x<size>-<codec>[q<quality>]: one cache per image set and resolution."""
    from benchmark.data.cache import LOSSY

    rt = cfg.runtime
    q = f"q{rt.cache_quality}" if rt.cache_codec in LOSSY else ""
    return Path(cfg.data.cache) / label / f"{cfg.image_size}x{cfg.image_size}-{rt.cache_codec}{q}"


def image_source(cfg, ctx=None, filenames=None):
    """The image cache of the run's images at its resolution (built once by rank 0; only the
    images of its split's CSVs, or of ``filenames`` when they lie outside them) or the image
    folder index (``use_cache: false``, or a method whose features read the original images,
    e.g. Myrans2018's GIST)."""
    import hashlib

    from benchmark.data.images import ImageIndex
    from benchmark.data.layout import PreparedLayout
    from methods.registry import get_spec

    data = cfg.data
    images = data.images or PreparedLayout.from_dir(data.prepared).image_root
    if not images:
        raise SewerbenchError(f"run {cfg.run}: data.images (the image folder) is not set in "
                              f"params.yaml and {data.prepared}/splits.json records none")
    if not cfg.runtime.use_cache or not data.cache or get_spec(cfg.method).full_resolution:
        return ImageIndex(images)
    from benchmark.data.cache import ImageCache

    names, label = split_filenames(cfg), cfg.split
    if filenames is not None:
        wanted = list(dict.fromkeys(str(n) for n in filenames))
        if not set(wanted) <= set(names):
            names = wanted
            label = "files-" + hashlib.sha256("\n".join(sorted(wanted)).encode()).hexdigest()[:12]
    directory = cache_dir(cfg, label)
    is_main = ctx is None or ctx.is_main
    if is_main:
        rt = cfg.runtime
        ImageCache.build(directory, sorted(names), ImageIndex(images), cfg.image_size,
                         workers=rt.cache_workers, codec=rt.cache_codec, quality=rt.cache_quality,
                         shard_images=rt.cache_shard_images)
    if ctx is not None:
        ctx.barrier()
    return ImageCache.open(directory)


def make_dataset(df: pd.DataFrame, images, cfg, train: bool) -> Dataset:
    from benchmark.data.dataset import SewerMLDataset
    from benchmark.data.transforms import build_transform

    aug = cfg.aug.kwargs() if train else {}
    tf = build_transform(cfg.transform, cfg.image_size, train, **aug)
    ds = SewerMLDataset(df, images, tf)
    return BinaryTargets(ds) if cfg.binary else ds


def pos_weight(targets: np.ndarray) -> torch.Tensor:
    """Sewer-ML ``getClassWeights``: (N - N_c) / N_c per class, 0 for a class with no positives."""
    t = np.asarray(targets) == 1
    n = t.shape[0]
    pos = t.sum(axis=0).astype(np.float64)
    w = np.where(pos > 0, (n - pos) / np.maximum(pos, 1), 0.0)
    return torch.tensor(w, dtype=torch.float32)


class EpochSeeded(Dataset):
    """Per-sample augmentation seeds: item ``i`` of epoch ``e`` is drawn under torch seed
    ``derive_seed(seed, "item", e, i)`` (the global CPU generator, restored afterwards), and
    with the Python and NumPy generators of :func:`benchmark.seed.item_streams`, seeded
    ``derive_seed(seed, "item-python", e, i)`` and ``derive_seed(seed, "item-numpy", e, i) mod
    2**32`` (the reference RandAugment draws from them through ``python_random()`` /
    ``numpy_random()``; the global ``random`` and ``np.random`` are not touched).

    Augmentations then depend only on (seed, epoch, index): not on the number of DataLoader
    workers, the number of DDP processes or a resume point.
    """

    def __init__(self, base: Dataset, seed: int):
        self.base = base
        self.seed = int(seed)
        self.epoch = 0
        self.filenames = base.filenames
        self.targets = base.targets

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        e, i = self.epoch, int(i)
        with torch.random.fork_rng(devices=[]), \
                item_streams(derive_seed(self.seed, "item-python", e, i), derive_seed(self.seed, "item-numpy", e, i)):
            # the CPU generator only: torch.manual_seed also seeds every lazy CUDA / MTIA
            # generator, which records a stack trace per call (~0.4 ms an item); the
            # transforms draw from the CPU generator, so the draws are the same
            torch.default_generator.manual_seed(derive_seed(self.seed, "item", e, i))
            return self.base[i]

    def __getitems__(self, indices) -> list:
        """A batch of items: a base dataset whose items draw no random number needs no
        per-item seeds (the generators above are restored after each item, so skipping them
        changes nothing) and fetches the batch at once; one whose transform has a
        :class:`benchmark.data.transforms.BatchPlan` with random steps (flip, colour jitter:
        torch's generator only) gets each item's draws under that item's torch seed, then does
        the batch's work at once: the same values as item by item. Else item by item, seeded."""
        if getattr(self.base, "deterministic", False):
            return self.base.__getitems__(indices)
        plan = getattr(self.base, "batch_plan", None)
        if plan is None:
            return [self[int(i)] for i in indices]
        draws = []
        for i in indices:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(derive_seed(self.seed, "item", self.epoch, int(i)))
                draws.append(plan.draw())
        return self.base.__getitems__(indices, draws=draws)
