"""Decode-once image cache: the images a run uses, resized to its resolution, in shards.

Layout of a cache folder (format 2)::

    meta.json           resolution, codec, shards (rows, bytes, SHA-256), skipped files, fingerprint
    filenames.txt       one filename per row, in row order
    shards/00000.npy    codec ``raw``: uint8 (rows, H, W, 3), opened as a read-only memmap
    shards/00000.pack   codecs ``jpeg`` / ``webp`` / ``png``: the encoded images back to back ...
    shards/00000.idx.npy  ... and their int64 byte offsets (rows + 1)

``raw`` decodes at memory speed and suits small resolutions (the default profile: 16k images
at 64 px are 197 MB); ``jpeg`` (quality 95 by default) is ~10-20x smaller and decodes at
hundreds of images/s per core at 448 px, for Sewer-ML-scale caches (README "Image cache").

Building: decoding runs on threads (PIL releases the GIL), shard by shard, into
``.<name>.partial`` beside the target; each finished shard is recorded (``<shard>.done.json``:
its filenames' fingerprint, bytes, SHA-256), so a build killed part-way resumes where it
stopped. ``meta.json`` is written last and the folder renamed into place, so a cache is either
complete or absent. A rebuild reuses every shard whose source files did not change (from the
partial build or the previous cache, hard-linked) and rebuilds only stale, missing or corrupt
shards. Re-opening a cache reads meta.json and filenames.txt and checks each shard's size
(instant); the SHA-256 of every shard is verified whenever a cache is reused up to
``SEWERBENCH_CACHE_VERIFY_BYTES`` bytes in all (default 4 GiB).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
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

from benchmark.cpus import usable_cpus
from benchmark.data.images import ImageIndex, to_rgb
from benchmark.errors import SewerbenchError
from benchmark.io import atomic_write_json, atomic_write_text, recover_dir, replace_dir, sha256_file

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
RESAMPLE = "bilinear"
#: Codecs of the shards: raw uint8 or encoded image files (PIL writers).
CODECS = ("raw", "jpeg", "webp", "png")
_PIL_FORMAT = {"jpeg": "JPEG", "webp": "WEBP", "png": "PNG"}
#: Codecs with a quality setting.
LOSSY = ("jpeg", "webp")
DEFAULT_SHARD_IMAGES = 2048
SHOW = 5
#: Caches up to this many bytes (all shards) are checksummed whenever they are reused
#: (env ``SEWERBENCH_CACHE_VERIFY_BYTES``); larger ones get the header and size checks only.
VERIFY_LIMIT = int(os.environ.get("SEWERBENCH_CACHE_VERIFY_BYTES", str(4 << 30)))
_PARTIAL = ".partial"


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


def _params(size: tuple[int, int], codec: str, quality: int, shard_images: int) -> dict:
    """What a shard's bytes depend on besides its source files."""
    return {"format": FORMAT_VERSION, "size": list(size), "resample": RESAMPLE, "codec": codec,
            "quality": int(quality) if codec in LOSSY else None,
            "shard_images": int(shard_images)}


def _fingerprint(params: dict, filenames: Sequence[str], paths: Sequence[str]) -> str:
    """Hash of the parameters and of every source file's name, size and mtime."""
    h = hashlib.sha256()
    h.update(json.dumps(params, sort_keys=True).encode())
    for name, p in zip(filenames, paths):
        try:
            st = os.stat(p)
            h.update(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{name}\t-\n".encode())
    return h.hexdigest()


def _shard_files(codec: str, stem: str) -> tuple[str, ...]:
    return (f"{stem}.npy",) if codec == "raw" else (f"{stem}.pack", f"{stem}.idx.npy")


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        return tuple(shape), np.dtype(dtype)


def encode_image(img: np.ndarray, codec: str, quality: int) -> bytes:
    """The bytes of an HxWx3 uint8 image in ``codec`` (jpeg/webp: lossy at ``quality``)."""
    buf = io.BytesIO()
    kw = {"quality": int(quality)} if codec in LOSSY else {"compress_level": 1}
    Image.fromarray(img).save(buf, format=_PIL_FORMAT[codec], **kw)
    return buf.getvalue()


def decode_image(data: bytes | memoryview) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.array(im.convert("RGB"), dtype=np.uint8)


class ShardReader:
    """Reads rows of a built cache by global row number. Small and picklable (DataLoader
    workers get the folder, the codec and the shard row counts; files open lazily per process)."""

    def __init__(self, directory: Path, codec: str, shard_rows: Sequence[int], stems: Sequence[str],
                 image_size: tuple[int, int]):
        self.directory = Path(directory)
        self.codec = codec
        self.stems = list(stems)
        self.starts = np.concatenate([[0], np.cumsum(np.asarray(shard_rows, dtype=np.int64))])
        self.image_size = tuple(image_size)
        self._open: dict[int, tuple] = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_open"] = {}
        return state

    def _shard(self, k: int) -> tuple:
        if k not in self._open:
            base = self.directory / "shards" / self.stems[k]
            try:
                if self.codec == "raw":
                    self._open[k] = (np.load(f"{base}.npy", mmap_mode="r"),)
                else:
                    self._open[k] = (np.memmap(f"{base}.pack", dtype=np.uint8, mode="r")
                                     if os.path.getsize(f"{base}.pack") else np.zeros(0, np.uint8),
                                     np.load(f"{base}.idx.npy", allow_pickle=False))
            except (OSError, ValueError) as exc:  # truncated or replaced under a running job
                raise SewerbenchError(f"{base}: unreadable image cache shard "
                                      f"({' '.join(str(exc).split())}); delete {self.directory} "
                                      "to rebuild it") from None
        return self._open[k]

    def read(self, row: int) -> np.ndarray:
        """The HxWx3 uint8 image of global ``row`` (a writable copy)."""
        k = int(np.searchsorted(self.starts, row, side="right")) - 1
        if not 0 <= k < len(self.stems):
            raise SewerbenchError(f"{self.directory}: row {row} outside the cache")
        local = int(row - self.starts[k])
        files = self._shard(k)
        if self.codec == "raw":
            return np.array(files[0][local])
        lo, hi = int(files[1][local]), int(files[1][local + 1])
        try:
            return decode_image(files[0][lo:hi].tobytes())
        except Exception as exc:  # noqa: BLE001 - a corrupt entry
            raise SewerbenchError(f"{self.directory / 'shards' / self.stems[k]}.pack: corrupt image "
                                  f"at row {local} ({type(exc).__name__}); delete {self.directory} "
                                  "to rebuild it") from None


class ImageCache:
    """A read-only view of a built cache folder. Picklable: workers reopen the shards."""

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
        if not isinstance(self.meta, dict) or self.meta.get("format") != FORMAT_VERSION:
            fmt = self.meta.get("format") if isinstance(self.meta, dict) else None
            raise SewerbenchError(f"{self.directory}: image cache format {fmt} != {FORMAT_VERSION}; "
                                  "delete it to rebuild it")
        names = [n for n in names if n]
        try:
            self.codec: str = self.meta["codec"]
            self.image_size: tuple[int, int] = tuple(self.meta["image_size"])  # type: ignore[assignment]
            self.shards: list[dict] = list(self.meta["shards"])
            rows = [int(sh["rows"]) for sh in self.shards]
        except (KeyError, TypeError, ValueError):
            raise SewerbenchError(f"{meta_path}: incomplete image cache description; delete "
                                  f"{self.directory} to rebuild it") from None
        if sum(rows) != len(names):
            raise SewerbenchError(f"{self.directory}: filenames.txt lists {len(names)} images, the "
                                  f"shards hold {sum(rows)}; delete it to rebuild it")
        for sh in self.shards:
            self._check_shard(sh)
        skipped = set(self.meta.get("skipped", []))
        self._rows: dict[str, int] = {n: i for i, n in enumerate(names) if n not in skipped}
        self._reader = ShardReader(self.directory, self.codec, rows, [sh["stem"] for sh in self.shards],
                                   self.image_size)

    def _check_shard(self, sh: dict) -> None:
        """Every file of a shard must exist with the byte size meta.json promises (a truncated
        or foreign file is named here instead of failing inside a worker)."""
        for fname, want in zip(_shard_files(self.codec, sh["stem"]), sh["bytes"]):
            path = self.directory / "shards" / fname
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise SewerbenchError(f"{path}: image cache shard missing; delete {self.directory} "
                                      "to rebuild it") from None
            if size != want:
                raise SewerbenchError(f"{path}: truncated or corrupt image cache shard ({size} bytes, "
                                      f"expected {want}); delete {self.directory} to rebuild it")
            if fname.endswith(".npy"):
                try:
                    shape, dtype = _npy_header(path)
                except (OSError, ValueError) as exc:
                    raise SewerbenchError(f"{path}: corrupt image cache shard header ({exc}); delete "
                                          f"{self.directory} to rebuild it") from None
                want_shape = ((sh["rows"], *self.image_size, 3) if self.codec == "raw"
                              else (sh["rows"] + 1,))
                want_dtype = np.uint8 if self.codec == "raw" else np.int64
                if dtype != want_dtype or shape != tuple(want_shape):
                    raise SewerbenchError(f"{path}: image cache shard is {dtype} {shape}, meta.json "
                                          f"says {np.dtype(want_dtype)} {tuple(want_shape)}; delete "
                                          f"{self.directory} to rebuild it")

    @property
    def nbytes(self) -> int:
        """Bytes of all shards."""
        return int(sum(sum(sh["bytes"]) for sh in self.shards))

    def bad_shards(self, limit: int | None = None) -> list[str] | None:
        """Stems of the shards whose SHA-256 differs from meta.json; None when the cache is over
        ``limit`` bytes (not read)."""
        if limit is not None and self.nbytes > limit:
            log.info("image cache %s: %d bytes, checksums not verified (limit %d)",
                     self.directory, self.nbytes, limit)
            return None
        return [sh["stem"] for sh in self.shards
                if _shard_sha(self.directory / "shards", self.codec, sh["stem"]) != sh.get("sha256")]

    def verify(self, limit: int | None = None) -> bool:
        """Recompute every shard's SHA-256 and compare with meta.json (True when the cache is
        over ``limit`` bytes: not read)."""
        return not self.bad_shards(limit)

    def reader(self) -> ShardReader:
        return self._reader

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
        """The HxWx3 uint8 image (a copy)."""
        return self._reader.read(self.row(filename))

    def stack(self, filenames: Sequence[str] | None = None) -> np.ndarray:
        """(N, H, W, 3) uint8 of ``filenames`` (default: every cached image, in row order)."""
        names = self.filenames if filenames is None else list(filenames)
        out = np.empty((len(names), *self.image_size, 3), dtype=np.uint8)
        for i, n in enumerate(names):
            out[i] = self.get(n)
        return out

    def __repr__(self) -> str:
        return (f"ImageCache({str(self.directory)!r}, {len(self)} images at {self.image_size}, "
                f"{self.codec}, {len(self.shards)} shards)")

    # -- building ----------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | os.PathLike) -> "ImageCache":
        """Open an existing cache (instant)."""
        return cls(directory)

    @classmethod
    def build(cls, directory: str | os.PathLike, filenames: Iterable[str],
              images: ImageIndex | str | os.PathLike, image_size: int | Sequence[int], *,
              workers: int | None = None, skip_corrupt: bool = False, force: bool = False,
              codec: str = "raw", quality: int = 95,
              shard_images: int = DEFAULT_SHARD_IMAGES) -> "ImageCache":
        """Build (or reuse, or resume, or repair) the cache of ``filenames`` found in ``images``.

        Unreadable or corrupt images raise :class:`SewerbenchError` naming them, unless
        ``skip_corrupt`` (then they are skipped, listed and counted in meta.json). Decoding
        runs on ``workers`` threads (default: all available cores; PIL releases the GIL).
        Concurrent builders of the same cache wait for each other (a lock on its folder).
        """
        directory = Path(directory)
        size = _size(image_size)
        if min(size) <= 0:
            raise SewerbenchError(f"{directory}: image_size must be positive, got {image_size!r}")
        if codec not in CODECS:
            raise SewerbenchError(f"{directory}: unknown cache codec {codec!r}; expected one of {', '.join(CODECS)}")
        if not 1 <= int(quality) <= 100:
            raise SewerbenchError(f"{directory}: cache quality must be 1..100, got {quality!r}")
        if int(shard_images) < 1:
            raise SewerbenchError(f"{directory}: shard_images must be >= 1, got {shard_images!r}")
        index = images if isinstance(images, ImageIndex) else ImageIndex(images)
        names = list(dict.fromkeys(filenames))  # unique, order kept
        if not names:
            raise SewerbenchError(f"{directory}: no filenames to cache")
        missing = index.missing(names)
        if missing:
            raise SewerbenchError(f"{directory}: {len(missing)} images not found under {index.root} "
                                  f"(first: {', '.join(missing[:SHOW])})")
        paths = [index.path(n) for n in names]
        params = _params(size, codec, quality, shard_images)
        n_per = int(shard_images)
        plan = []
        for k, lo in enumerate(range(0, len(names), n_per)):
            sl = slice(lo, lo + n_per)
            plan.append((f"{k:05d}", names[sl], paths[sl], _fingerprint(params, names[sl], paths[sl])))
        fp = hashlib.sha256(json.dumps([params] + [p[3] for p in plan]).encode()).hexdigest()

        directory.parent.mkdir(parents=True, exist_ok=True)
        with _build_lock(directory.parent):
            recover_dir(directory)  # what a replace killed part-way left beside the cache
            old = None
            if (directory / "meta.json").is_file():
                why = "is stale or built for other parameters"
                try:
                    old = cls(directory)
                    if (not force and old.meta.get("fingerprint") == fp
                            and (skip_corrupt or not old.skipped)):
                        bad = old.bad_shards(limit=VERIFY_LIMIT)
                        if not bad:
                            log.info("image cache %s is up to date (%d images at %dx%d, %s)",
                                     directory, len(old), size[0], size[1], codec)
                            return old
                        why = f"failed the checksum of shard(s) {', '.join(bad[:SHOW])}"
                        old.shards = [sh for sh in old.shards if sh["stem"] not in bad]
                except SewerbenchError as exc:
                    why, old = f"is unusable ({exc})", None
                except (KeyError, TypeError, ValueError):
                    why, old = "has an unreadable meta.json", None
                log.warning("image cache %s %s: rebuilding%s", directory, why,
                            " (unchanged shards are kept)" if old is not None and not force else "")
                if force:
                    old = None
            elif directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
                raise SewerbenchError(f"{directory}: exists and is not an image cache; refusing to replace it")
            partial = _open_partial(directory, params)
            # on corrupt images (SewerbenchError) the finished shards stay in the partial build
            skipped = cls._fill(partial, plan, params, old, workers or usable_cpus(), skip_corrupt)
            shards = [json.loads((partial / "shards" / f"{stem}.done.json").read_text(encoding="utf-8"))
                      for stem, *_ in plan]
            atomic_write_text(partial / "filenames.txt", "\n".join(names) + "\n")
            keep = {f for sh in shards for f in _shard_files(codec, sh["stem"])}
            for f in (partial / "shards").iterdir():   # done records, killed writers' temporaries
                if f.name not in keep:
                    f.unlink()
            (partial / "build.json").unlink()
            meta = {
                "format": FORMAT_VERSION,
                "image_size": list(size),
                "resample": RESAMPLE,
                "codec": codec,
                "quality": params["quality"],
                "shard_images": n_per,
                "source": str(Path(index.root).resolve()),
                "count": len(names) - len(skipped),
                "total": len(names),
                "skipped_count": len(skipped),
                "skipped": skipped,
                "fingerprint": fp,
                "shards": shards,   # stem, rows, bytes per file, sha256, source fingerprint, skipped
            }
            atomic_write_json(partial / "meta.json", meta)  # written last: marks the cache complete
            replace_dir(partial, directory)
        return cls(directory)

    @staticmethod
    def _fill(partial: Path, plan: list, params: dict, old: "ImageCache | None", workers: int,
              skip_corrupt: bool) -> list[str]:
        """Make every shard of ``plan`` done in ``partial``: kept when already done there with
        the same fingerprint, hard-linked from ``old`` when its shard has the same fingerprint
        (and passed its checksum), decoded otherwise. Returns the skipped filenames."""
        from tqdm.auto import tqdm

        sdir = partial / "shards"
        codec, size = params["codec"], tuple(params["size"])
        old_by_fp = {sh.get("fingerprint"): sh for sh in old.shards} if old is not None else {}
        skipped: list[str] = []
        todo = []
        reused = linked = 0
        for stem, names, paths, sfp in plan:
            done = _read_done(sdir, stem)
            if (done is not None and done["fingerprint"] == sfp and (skip_corrupt or not done["skipped"])
                    and _files_ok(sdir, codec, done)):
                skipped += done["skipped"]
                reused += 1
                continue
            src = old_by_fp.get(sfp)
            if src is not None and (skip_corrupt or not src["skipped"]) and _link_shard(old.directory / "shards", src, sdir, codec, stem):
                src = dict(src, stem=stem)
                atomic_write_json(sdir / f"{stem}.done.json", src)
                skipped += src["skipped"]
                linked += 1
                continue
            todo.append((stem, names, paths, sfp))
        if reused or linked:
            log.info("image cache: %d shards resumed from the partial build, %d kept from the previous "
                     "cache, %d to build", reused, linked, len(todo))
        total = sum(len(t[1]) for t in todo)
        if not todo:
            return sorted(skipped)
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool, \
                tqdm(total=total, unit="img", desc="caching images", disable=None) as bar:
            for stem, names, paths, sfp in todo:
                def work(i: int, paths=paths):
                    try:
                        img = load_rgb(paths[i], size)
                    except Exception as exc:  # noqa: BLE001 - any decode failure is a corrupt image
                        return None, f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                    return (img if codec == "raw" else encode_image(img, codec, params["quality"])), None

                results = list(pool.map(work, range(len(names))))
                failures = [(i, why) for i, (_, why) in enumerate(results) if why is not None]
                bar.update(len(names))
                if failures and not skip_corrupt:
                    shown = "; ".join(f"{names[i]} ({why})" for i, why in failures[:SHOW])
                    raise SewerbenchError(
                        f"{len(failures)} unreadable or corrupt images (first: {shown}); fix, replace or "
                        "delete those image files (train has no --skip-corrupt option; from Python, "
                        "ImageCache.build(skip_corrupt=True) skips them)")
                for i, why in failures[:SHOW]:
                    log.warning("skipping unreadable image %s: %s", paths[i], why)
                bad = [names[i] for i, _ in failures]
                _write_shard(sdir, codec, stem, size, [r for r, _ in results], sfp, bad)
                skipped += bad
        elapsed = time.perf_counter() - start
        if skipped:
            log.warning("skipped %d unreadable images in all", len(skipped))
        log.info("cached %d images at %dx%d (%s) in %.1f s (%.0f images/s, %d threads)",
                 total, size[0], size[1], codec, elapsed, total / max(elapsed, 1e-9), workers)
        return sorted(skipped)


# ----------------------------------------------------------------------------- build helpers
@contextlib.contextmanager
def _build_lock(folder: Path):
    """An exclusive lock on the cache's parent folder (no lock file is left behind)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _open_partial(directory: Path, params: dict) -> Path:
    """The stable partial-build folder ``.<name>.partial``: resumed when it was started with the
    same parameters, cleared when with others, refused when it is not a partial cache build."""
    partial = directory.parent / f".{directory.name}{_PARTIAL}"
    marker = partial / "build.json"
    if partial.exists():
        try:
            started = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise SewerbenchError(f"{partial}: exists and is not a partial image cache build; "
                                  "refusing to replace it") from None
        if started.get("params") == params:
            log.info("image cache %s: resuming the partial build in %s", directory, partial)
            return partial
        shutil.rmtree(partial)
    (partial / "shards").mkdir(parents=True)
    atomic_write_json(marker, {"params": params})
    return partial


def _read_done(sdir: Path, stem: str) -> dict | None:
    try:
        return json.loads((sdir / f"{stem}.done.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _shard_sha(sdir: Path, codec: str, stem: str) -> str:
    h = hashlib.sha256()
    for fname in _shard_files(codec, stem):
        h.update(sha256_file(sdir / fname).encode())
    return h.hexdigest()


def _files_ok(sdir: Path, codec: str, done: dict) -> bool:
    """A finished shard's files have their recorded sizes and checksum."""
    try:
        sizes = [(sdir / f).stat().st_size for f in _shard_files(codec, done["stem"])]
    except OSError:
        return False
    return sizes == done["bytes"] and _shard_sha(sdir, codec, done["stem"]) == done["sha256"]


def _link_shard(src_dir: Path, src: dict, sdir: Path, codec: str, stem: str) -> bool:
    """Hard-link (or copy) a previous cache's shard files under the partial build's names."""
    try:
        for a, b in zip(_shard_files(codec, src["stem"]), _shard_files(codec, stem)):
            target = sdir / b
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            try:
                os.link(src_dir / a, target)
            except OSError:
                shutil.copy2(src_dir / a, target)
        return True
    except OSError:
        return False


def _write_shard(sdir: Path, codec: str, stem: str, size: tuple[int, int], items: list,
                 fingerprint: str, skipped: list[str]) -> None:
    """Write one shard's files (each via a temporary name) and then its done record."""
    files = _shard_files(codec, stem)
    tmp = [sdir / f".{f}.{os.getpid()}.tmp" for f in files]
    try:
        if codec == "raw":
            arr = np.zeros((len(items), size[0], size[1], 3), dtype=np.uint8)
            for i, img in enumerate(items):
                if img is not None:
                    arr[i] = img
            with open(tmp[0], "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
        else:
            blobs = [b if b is not None else b"" for b in items]
            offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum([len(b) for b in blobs])
            with open(tmp[0], "wb") as fh:
                for b in blobs:
                    fh.write(b)
            with open(tmp[1], "wb") as fh:
                np.save(fh, offsets, allow_pickle=False)
        for t, f in zip(tmp, files):
            os.replace(t, sdir / f)
    except BaseException:
        for t in tmp:
            with contextlib.suppress(FileNotFoundError):
                t.unlink()
        raise
    atomic_write_json(sdir / f"{stem}.done.json", {
        "stem": stem, "rows": len(items), "fingerprint": fingerprint, "skipped": skipped,
        "bytes": [(sdir / f).stat().st_size for f in files], "sha256": _shard_sha(sdir, codec, stem)})
