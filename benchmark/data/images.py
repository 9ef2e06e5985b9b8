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


#: PIL modes that :func:`to_rgb` converts with PIL's own ``convert("RGB")`` (8-bit per channel
#: data, palettes, alpha dropped; 16-bit RGB/RGBA/LA PNGs are opened by PIL at 8 bits already).
_CONVERTIBLE = frozenset({"1", "L", "LA", "La", "P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
#: 16-bit single-channel modes: scaled to 8 bits by the high byte (as PIL reads 16-bit RGB).
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def to_rgb(im, path: str | os.PathLike = "image"):
    """A PIL image of any supported mode as an 8-bit RGB PIL image.

    RGB is returned as it is (the 8-bit RGB decode is unchanged); grey, grey+alpha, palette,
    RGBA, CMYK and YCbCr go through PIL's conversion (alpha is dropped); 16-bit grey
    (``I;16*``, and ``I`` from a PNG, which PIL uses for 16-bit grey) is scaled to 8 bits by
    keeping the high byte, the same scaling PIL applies to 16-bit RGB. Float, 32-bit integer and
    other modes raise :class:`SewerbenchError` naming the file.
    """
    import numpy as np
    from PIL import Image

    mode = im.mode
    if mode == "RGB":
        return im
    if mode in _CONVERTIBLE:
        return im.convert("RGB")
    if mode in _SIXTEEN_BIT or (mode == "I" and getattr(im, "format", None) == "PNG"):
        a = np.asarray(im)
        if a.dtype.kind not in "iu" or a.ndim != 2:
            raise SewerbenchError(f"{path}: unsupported {mode} image layout {a.dtype} {a.shape}")
        a = a.astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise SewerbenchError(f"{path}: {mode} image values outside 0..65535")
        grey = (a >> 8).astype(np.uint8)
        return Image.fromarray(np.stack([grey] * 3, axis=-1), mode="RGB")
    raise SewerbenchError(f"{path}: unsupported image mode {mode!r} (expected 8-bit RGB, grey, "
                          "palette or RGBA, or 16-bit grey/RGB)")
