"""Locate Sewer-ML images by filename under a user-given folder tree.

The official download is split over several folders; :class:`ImageIndex` walks the whole
tree once and maps each bare filename to its path. The same filename in two folders is an
error (the annotation CSVs identify images by bare filename only).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from benchmark.errors import SewerbenchError

log = logging.getLogger(__name__)

#: File extensions (lower case) treated as images.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageIndex:
    """Filename -> path map over every image file below ``root`` (recursive).

    Hidden files and folders (names starting with ".") are skipped, symbolic links to
    folders are followed once. Picklable (a plain dict of strings).
    """

    def __init__(self, root: str | os.PathLike, extensions: Iterable[str] = IMAGE_EXTENSIONS):
        self.root = Path(root)
        if not self.root.exists():
            raise SewerbenchError(f"{self.root}: image folder not found")
        if not self.root.is_dir():
            raise SewerbenchError(f"{self.root}: not a folder")
        self.extensions = tuple(e.lower() for e in extensions)
        self._paths: dict[str, str] = {}
        dup_count = 0
        first_dup: tuple[str, str, str] | None = None
        seen_dirs: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen_dirs:  # symlink loop or the same folder linked twice
                dirnames[:] = []
                continue
            seen_dirs.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.startswith(".") or not name.lower().endswith(self.extensions):
                    continue
                full = os.path.join(dirpath, name)
                prev = self._paths.get(name)
                if prev is not None:
                    dup_count += 1
                    if first_dup is None:
                        first_dup = (name, prev, full)
                    continue
                self._paths[name] = full
        if first_dup is not None:
            name, a, b = first_dup
            raise SewerbenchError(f"{self.root}: image {name!r} found in two folders ({a} and {b}); "
                                  f"{dup_count} duplicate filenames in all")
        log.debug("indexed %d images under %s", len(self._paths), self.root)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, filename: object) -> bool:
        return filename in self._paths

    def __getitem__(self, filename: str) -> Path:
        try:
            return Path(self._paths[filename])
        except KeyError:
            raise SewerbenchError(f"{self.root}: no image named {filename!r}") from None

    def path(self, filename: str) -> str:
        """Path of ``filename`` as a string (raises SewerbenchError if absent)."""
        try:
            return self._paths[filename]
        except KeyError:
            raise SewerbenchError(f"{self.root}: no image named {filename!r}") from None

    def paths(self, filenames: Iterable[str]) -> list[str]:
        """Paths of many filenames, in order (raises if any is absent)."""
        filenames = list(filenames)
        missing = self.missing(filenames)
        if missing:
            raise SewerbenchError(f"{self.root}: {len(missing)} images not found "
                                  f"(first: {', '.join(missing[:5])})")
        return [self._paths[f] for f in filenames]

    def missing(self, filenames: Iterable[str]) -> list[str]:
        """Filenames (in input order) that have no image under the root."""
        p = self._paths
        return [f for f in filenames if f not in p]

    @property
    def filenames(self) -> list[str]:
        """All indexed filenames, sorted."""
        return sorted(self._paths)

    def __repr__(self) -> str:
        return f"ImageIndex({str(self.root)!r}, {len(self)} images)"
