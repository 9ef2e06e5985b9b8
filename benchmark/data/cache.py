"""Decode-once image cache: every image resized to the training resolution, stored as uint8.

Layout of a cache folder::

    images.npy      uint8 array (N, H, W, 3), opened as a read-only memmap
    filenames.txt   one filename per row of images.npy
    meta.json       resolution, source, counts, skipped (corrupt) files, fingerprint

The folder is built beside its target and renamed into place, so a cache is either complete
or absent. Re-opening an existing cache reads only meta.json and filenames.txt (instant).
:meth:`ImageCache.build` reuses an existing cache when its parameters (resolution, resample
filter, the filename list and the size/mtime of every source file) match and rebuilds it
otherwise.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from benchmark.data.images import ImageIndex, to_rgb
from benchmark.errors import SewerbenchError
from benchmark.io import atomic_write_json, atomic_write_text, recover_dir, replace_dir, sha256_file

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
RESAMPLE = "bilinear"
_CHUNK = 64
SHOW = 5
#: images.npy files up to this size are checksummed whenever a cache is reused
#: (env ``SEWERBENCH_CACHE_VERIFY_BYTES``); larger ones get the header and size checks only.
VERIFY_LIMIT = int(os.environ.get("SEWERBENCH_CACHE_VERIFY_BYTES", str(4 << 30)))


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return (image_size, image_size)
    h, w = (int(s) for s in image_size)
    return (h, w)


def load_rgb(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file to an HxWx3 uint8 array, optionally resized to ``size`` = (h, w)
    with PIL's antialiased bilinear filter. Any mode is converted to 8-bit RGB by
    :func:`benchmark.data.images.to_rgb` (16-bit grey scaled, grey/palette/RGBA converted) or
    refused naming the file; raises whatever PIL raises on a corrupt file."""
    with Image.open(path) as im:
        im = to_rgb(im, path)
        if size is not None and (im.height, im.width) != tuple(size):
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.array(im, dtype=np.uint8)  # writable copy


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _fingerprint(filenames: Sequence[str], paths: Sequence[str], size: tuple[int, int]) -> str:
    """Hash of the cache parameters and of every source file's name, size and mtime."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT_VERSION, "size": list(size), "resample": RESAMPLE}).encode())
    for name, p in zip(filenames, paths):
        try:
            st = os.stat(p)
            h.update(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{name}\t-\n".encode())
    return h.hexdigest()


class ImageCache:
    """A read-only view of a built cache folder. Picklable: workers reopen the memmap."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.is_file():
            raise SewerbenchError(f"{self.directory}: not an image cache (no meta.json); build it first")
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
            names = (self.directory / "filenames.txt").read_text(encoding="utf-8").split("\n")
        except (OSError, ValueError) as exc:
            raise SewerbenchError(f"{self.directory}: unreadable image cache ({exc})") from None
        if self.meta.get("format") != FORMAT_VERSION:
            raise SewerbenchError(f"{self.directory}: image cache format {self.meta.get('format')} "
                                  f"!= {FORMAT_VERSION}; rebuild it")
        names = [n for n in names if n]
        self._check_array_file(len(names))
        skipped = set(self.meta.get("skipped", []))
        self._rows: dict[str, int] = {n: i for i, n in enumerate(names) if n not in skipped}
        self._all_rows = len(names)
        self.image_size: tuple[int, int] = tuple(self.meta["image_size"])  # type: ignore[assignment]
        self._array: np.ndarray | None = None

    def _check_array_file(self, rows: int) -> None:
        """images.npy must exist with the header and byte size its meta.json promises (a
        truncated or foreign file is named here instead of failing inside a worker)."""
        npy = self.directory / "images.npy"
        shape = self.meta.get("shape")
        try:
            size = npy.stat().st_size
            with open(npy, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    h_shape, _, h_dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    h_shape, _, h_dtype = np.lib.format.read_array_header_2_0(fh)
                offset = fh.tell()
        except FileNotFoundError:
            raise SewerbenchError(f"{npy}: image cache array missing; delete {self.directory} "
                                  "to rebuild it") from None
        except (OSError, ValueError) as exc:
            raise SewerbenchError(f"{npy}: corrupt image cache array header ({exc}); delete "
                                  f"{self.directory} to rebuild it") from None
        expected = offset + int(np.prod(h_shape)) * np.dtype(h_dtype).itemsize
        if h_dtype != np.uint8 or list(h_shape) != list(shape or h_shape) or h_shape[0] != rows:
            raise SewerbenchError(f"{npy}: image cache array is {h_dtype} {tuple(h_shape)}, "
                                  f"meta.json says uint8 {shape} for {rows} files; delete "
                                  f"{self.directory} to rebuild it")
        if size != expected or ("npy_bytes" in self.meta and size != self.meta["npy_bytes"]):
            raise SewerbenchError(f"{npy}: truncated or corrupt image cache array ({size} bytes, "
                                  f"expected {expected}); delete {self.directory} to rebuild it")

    def verify(self, limit: int | None = None) -> bool:
        """Recompute the SHA-256 of images.npy and compare with meta.json (False on mismatch or
        when the cache has no checksum). Arrays above ``limit`` bytes are not read (True)."""
        expected = self.meta.get("sha256")
        if not isinstance(expected, str):
            return False
        npy = self.directory / "images.npy"
        if limit is not None and npy.stat().st_size > limit:
            log.info("image cache %s: %d bytes, checksum not verified (limit %d)",
                     self.directory, npy.stat().st_size, limit)
            return True
        return sha256_file(npy) == expected

    # -- pickling: never send the memmap itself -------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_array"] = None
        return state

    @property
    def array(self) -> np.ndarray:
        """The (N, H, W, 3) uint8 memmap (opened lazily, read-only)."""
        if self._array is None:
            self._array = np.load(self.directory / "images.npy", mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, filename: object) -> bool:
        return filename in self._rows

    @property
    def filenames(self) -> list[str]:
        """Cached (readable) filenames in row order."""
        return list(self._rows)

    @property
    def skipped(self) -> list[str]:
        """Filenames that were unreadable and skipped at build time."""
        return list(self.meta.get("skipped", []))

    def missing(self, filenames: Iterable[str]) -> list[str]:
        return [f for f in filenames if f not in self._rows]

    def row(self, filename: str) -> int:
        try:
            return self._rows[filename]
        except KeyError:
            why = " (skipped as unreadable at build time)" if filename in set(self.skipped) else ""
            raise SewerbenchError(f"{self.directory}: image {filename!r} is not in the cache{why}") from None

    def get(self, filename: str) -> np.ndarray:
        """The HxWx3 uint8 image (a read-only view into the memmap)."""
        return self.array[self.row(filename)]

    def __repr__(self) -> str:
        return f"ImageCache({str(self.directory)!r}, {len(self)} images at {self.image_size})"

    # -- building ----------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | os.PathLike) -> "ImageCache":
        """Open an existing cache (instant)."""
        return cls(directory)

    @classmethod
    def build(cls, directory: str | os.PathLike, filenames: Iterable[str],
              images: ImageIndex | str | os.PathLike, image_size: int | Sequence[int], *,
              workers: int | None = None, skip_corrupt: bool = False,
              force: bool = False) -> "ImageCache":
        """Build (or reuse) the cache of ``filenames`` found in ``images`` at ``image_size``.

        Unreadable or corrupt images raise :class:`SewerbenchError` naming them, unless
        ``skip_corrupt`` (then they are skipped, listed and counted in meta.json). Decoding
        runs on ``workers`` threads (default: all available cores; PIL releases the GIL).
        """
        directory = Path(directory)
        size = _size(image_size)
        if min(size) <= 0:
            raise SewerbenchError(f"{directory}: image_size must be positive, got {image_size!r}")
        index = images if isinstance(images, ImageIndex) else ImageIndex(images)
        names = list(dict.fromkeys(filenames))  # unique, order kept
        if not names:
            raise SewerbenchError(f"{directory}: no filenames to cache")
        missing = index.missing(names)
        if missing:
            raise SewerbenchError(f"{directory}: {len(missing)} images not found under {index.root} "
                                  f"(first: {', '.join(missing[:SHOW])})")
        paths = [index.path(n) for n in names]
        fp = _fingerprint(names, paths, size)

        recover_dir(directory)  # what a build killed part-way left beside the cache
        if not force and (directory / "meta.json").is_file():
            why = "is stale or built for other parameters"
            try:
                old = cls(directory)
                if (old.meta.get("fingerprint") == fp
                        and bool(old.meta.get("skip_corrupt")) == bool(skip_corrupt)):
                    if old.verify(limit=VERIFY_LIMIT):
                        log.info("image cache %s is up to date (%d images at %dx%d)",
                                 directory, len(old), size[0], size[1])
                        return old
                    why = ("has no checksum" if "sha256" not in old.meta else
                           "failed its checksum (corrupt images.npy)")
            except SewerbenchError as exc:
                why = f"is unusable ({exc})"
            except (KeyError, TypeError, ValueError):
                why = "has an unreadable meta.json"
            log.warning("image cache %s %s: rebuilding", directory, why)

        if directory.exists() and (not directory.is_dir() or (
                any(directory.iterdir()) and not (directory / "meta.json").is_file())):
            raise SewerbenchError(f"{directory}: exists and is not an image cache; refusing to replace it")
        tmp = directory.parent / f".{directory.name}.{os.getpid()}.tmp-build"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        try:
            skipped = cls._fill(tmp, names, paths, size, workers or _default_workers(), skip_corrupt)
            atomic_write_text(tmp / "filenames.txt", "\n".join(names) + "\n")
            meta = {
                "format": FORMAT_VERSION,
                "image_size": list(size),
                "resample": RESAMPLE,
                "source": str(Path(index.root).resolve()),
                "count": len(names) - len(skipped),
                "total": len(names),
                "skipped_count": len(skipped),
                "skipped": skipped,
                "skip_corrupt": bool(skip_corrupt),
                "fingerprint": fp,
                "dtype": "uint8",
                "shape": [len(names), size[0], size[1], 3],
                "npy_bytes": (tmp / "images.npy").stat().st_size,
                "sha256": sha256_file(tmp / "images.npy"),
            }
            atomic_write_json(tmp / "meta.json", meta)  # written last: marks the cache complete
            replace_dir(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(directory)

    @staticmethod
    def _fill(tmp: Path, names: list[str], paths: list[str], size: tuple[int, int],
              workers: int, skip_corrupt: bool) -> list[str]:
        from tqdm.auto import tqdm

        n = len(names)
        arr = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                        shape=(n, size[0], size[1], 3))
        failures: list[tuple[int, str]] = []

        def work(i: int) -> tuple[int, str] | None:
            try:
                arr[i] = load_rgb(paths[i], size)
                return None
            except Exception as exc:  # noqa: BLE001 - any decode failure is a corrupt image
                return (i, f"{type(exc).__name__}: {' '.join(str(exc).split())}")

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool, \
                tqdm(total=n, unit="img", desc="caching images", disable=None) as bar:
            for lo in range(0, n, _CHUNK * workers):
                idx = range(lo, min(n, lo + _CHUNK * workers))
                for res in pool.map(work, idx):
                    if res is not None:
                        failures.append(res)
                bar.update(len(idx))
                if failures and not skip_corrupt:
                    break
        arr.flush()
        del arr
        elapsed = time.perf_counter() - start
        if failures and not skip_corrupt:
            shown = "; ".join(f"{names[i]} ({why})" for i, why in failures[:SHOW])
            raise SewerbenchError(f"{len(failures)} unreadable or corrupt images (first: {shown}); "
                                  "fix, replace or delete those image files (train has no --skip-corrupt "
                                  "option; from Python, ImageCache.build(skip_corrupt=True) skips them)")
        skipped = [names[i] for i, _ in sorted(failures)]
        for i, why in failures[:SHOW]:
            log.warning("skipping unreadable image %s: %s", paths[i], why)
        if skipped:
            log.warning("skipped %d unreadable images in all", len(skipped))
        log.info("cached %d images at %dx%d in %.1f s (%.0f images/s, %d threads)",
                 n - len(skipped), size[0], size[1], elapsed, n / max(elapsed, 1e-9), workers)
        return skipped
