"""Where the prepared splits live: the one reader of ``<prepared>/splits.json``.

``sewerbench prepare`` (:func:`benchmark.data.splits.prepare`) writes the split CSVs and
``splits.json``; everything that needs a split's train/val CSV, the ground truth of an
evaluation set, the image root or a description of the data asks a :class:`PreparedLayout`
instead of building paths itself.

``splits.json`` (format 1) records, among counts, ``"splits": {"<split>/<part>": {"path":
"<split>/<part>.csv", ...}}`` for the parts train, val (every split) and test, test_gt (the
full split only), plus ``"image_root"``, ``"source"`` and ``"kind"`` ("synthetic" | "real").
A folder without ``splits.json`` (hand-made test fixtures) gets the same conventional
``<split>/<part>.csv`` paths from :meth:`PreparedLayout.from_dir`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from benchmark.artifacts import EVAL_TEST, EVAL_VAL, EVAL_VAL_SUB
from benchmark.errors import SewerbenchError

#: The summary file of a prepared folder.
SPLITS_FILE = "splits.json"
#: The split holding the official train/val/test CSVs (every other split is cut from it).
FULL_SPLIT = "full"
#: The parts of a split (file stems); test and test_gt exist for the full split only.
PARTS = ("train", "val", "test", "test_gt")
SPLITS_FORMAT = 1


@dataclass(frozen=True)
class PreparedLayout:
    """The split files of one prepared folder (read with :meth:`load` or :meth:`from_dir`).

    ``files`` maps ``"<split>/<part>"`` to the CSV path relative to ``root`` as recorded in
    ``splits.json`` (empty when there is none); ``recorded`` says whether ``splits.json`` was
    read. ``recorded_image_root``, ``source`` and ``recorded_kind`` are the raw
    ``splits.json`` values (None when absent).
    """

    root: Path
    files: tuple[tuple[str, str], ...] = ()
    recorded: bool = False
    recorded_image_root: str | None = None
    source: str | None = None
    recorded_kind: str | None = None
    has_source: bool = False

    # ------------------------------------------------------------------ constructors
    @classmethod
    def load(cls, prepared_dir: str | os.PathLike) -> "PreparedLayout":
        """The layout recorded in ``<prepared_dir>/splits.json``; a one-line
        :class:`SewerbenchError` naming the file when it is missing or corrupt."""
        root = Path(prepared_dir)
        path = root / SPLITS_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SewerbenchError(f"{path}: missing (run `sewerbench prepare` to write the "
                                  f"prepared splits)") from None
        except OSError as exc:
            raise SewerbenchError(f"{path}: cannot read ({exc.strerror or exc})") from None
        try:
            info = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SewerbenchError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg}); "
                                  f"run `sewerbench prepare` again") from None
        return cls.from_info(root, info, where=path)

    @classmethod
    def from_dir(cls, prepared_dir: str | os.PathLike) -> "PreparedLayout":
        """Like :meth:`load`, but a folder without ``splits.json`` gets the conventional
        ``<split>/<part>.csv`` layout (a corrupt ``splits.json`` is still an error)."""
        root = Path(prepared_dir)
        if not (root / SPLITS_FILE).exists():
            return cls(root=root)
        return cls.load(root)

    @classmethod
    def from_info(cls, root: str | os.PathLike, info: Any,
                  where: str | os.PathLike | None = None) -> "PreparedLayout":
        """The layout of a ``splits.json`` object (as :func:`benchmark.data.splits.prepare`
        returns it) for the folder ``root``."""
        root = Path(root)
        where = where or root / SPLITS_FILE
        if not isinstance(info, Mapping):
            raise SewerbenchError(f"{where}: top level must be an object")
        fmt = info.get("format", SPLITS_FORMAT)
        if fmt != SPLITS_FORMAT:
            raise SewerbenchError(f"{where}: format {fmt!r} is not supported (expected "
                                  f"{SPLITS_FORMAT}); run `sewerbench prepare` again")
        splits = info.get("splits")
        if not isinstance(splits, Mapping):
            raise SewerbenchError(f"{where}: 'splits' must be an object of split files")
        files = []
        for name, entry in splits.items():
            if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
                raise SewerbenchError(f"{where}: splits: {name}: missing 'path'")
            if "/" not in str(name):
                raise SewerbenchError(f"{where}: splits: {name!r} is not '<split>/<part>'")
            files.append((str(name), entry["path"]))
        image_root = info.get("image_root")
        source = info.get("source")
        kind = info.get("kind")
        return cls(root=root, files=tuple(files), recorded=True,
                   recorded_image_root=None if image_root is None else str(image_root),
                   source=None if source is None else str(source),
                   recorded_kind=None if kind is None else str(kind),
                   has_source="source" in info)

    # ------------------------------------------------------------------ splits and files
    @property
    def full_split(self) -> str:
        """Name of the split with the official CSVs (and the test set)."""
        return FULL_SPLIT

    @property
    def splits(self) -> tuple[str, ...]:
        """Split names: as recorded (in ``splits.json`` order), else the sub-folders that
        hold a train.csv or val.csv (sorted)."""
        if self.recorded:
            seen: dict[str, None] = {}
            for key, _ in self.files:
                seen.setdefault(key.split("/", 1)[0], None)
            return tuple(seen)
        if not self.root.is_dir():
            return ()
        return tuple(d.name for d in sorted(self.root.iterdir())
                     if d.is_dir() and any((d / f"{p}.csv").is_file() for p in ("train", "val")))

    def has_split(self, split: str) -> bool:
        return split in self.splits

    def require_split(self, split: str) -> None:
        """A one-line :class:`SewerbenchError` when ``split`` was not prepared."""
        if not self.has_split(split):
            known = ", ".join(self.splits) or "none"
            where = self.root / SPLITS_FILE if self.recorded else self.root
            raise SewerbenchError(f"{where}: no prepared split {split!r} (prepared: {known}); "
                                  f"add it to data.fractions and run `sewerbench prepare`")

    def csv(self, split: str, part: str) -> Path:
        """Path of ``<split>/<part>.csv``: the recorded one, else the conventional one."""
        key = f"{split}/{part}"
        for k, rel in self.files:
            if k == key:
                return self.root / rel
        return self.root / split / f"{part}.csv"

    def train_csv(self, split: str) -> Path:
        return self.csv(split, "train")

    def val_csv(self, split: str) -> Path:
        return self.csv(split, "val")

    def test_csv(self) -> Path:
        """The test CSV (Filename only) of the full split (the path, whether or not it exists)."""
        return self.csv(FULL_SPLIT, "test")

    def test_gt_csv(self) -> Path | None:
        """The test labels of the full split, or None when the prepared data has none."""
        path = self.csv(FULL_SPLIT, "test_gt")
        return path if path.is_file() else None

    def ground_truths(self, split: str) -> dict[str, Path]:
        """Ground-truth CSV per evaluation set for a run trained on ``split``: ``"val"`` the
        full val set, ``"val_sub"`` the split's own val set (splits other than full),
        ``"test"`` the test labels when present."""
        out = {EVAL_VAL: self.val_csv(FULL_SPLIT)}
        if split != FULL_SPLIT:
            out[EVAL_VAL_SUB] = self.val_csv(split)
        test = self.test_gt_csv()
        if test is not None:
            out[EVAL_TEST] = test
        return out

    # ------------------------------------------------------------------ data
    @property
    def image_root(self) -> str | None:
        """The image root ``prepare`` recorded (as written, usually relative to the working
        directory), or None."""
        return self.recorded_image_root

    @property
    def kind(self) -> str:
        """"synthetic", ``"Sewer-ML at <source>"`` for real data, or "unknown" without
        ``splits.json``."""
        if not self.recorded:
            return "unknown"
        if self.recorded_kind == "synthetic":
            return "synthetic"
        return f"Sewer-ML at {self.source if self.has_source else '?'}"
