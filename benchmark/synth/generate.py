"""Write a synthetic Sewer-ML dataset in the official layout, atomically and in parallel."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from benchmark.classes import CLASS_CODES, CSV_COLUMNS, NUM_CLASSES
from benchmark.errors import SewerbenchError
from benchmark.synth.labels import sample_split_labels
from benchmark.synth.render import render

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1.1"         # 1.1: masks bundled per 100 images, content digest in meta.json
#: Images per mask file ``masks/<chunk>.npz`` (one key per image stem): a few hundred files
#: instead of one per image, so DVC's check of the dataset folder stats half as many files.
MASKS_PER_FILE = 100
SPLITS = ("train", "val", "test")
_SPLIT_CSV = {"train": "SewerML_Train.csv", "val": "SewerML_Val.csv", "test": "SewerML_Test_gt.csv"}


@dataclass
class SynthConfig:
    """Everything that determines a synthetic dataset (the ``synth:`` section of params.yaml)."""
    out: str = "data/synthetic"
    seed: int = 0
    n_train: int = 3000
    n_val: int = 800
    n_test: int = 800
    width: int = 128
    height: int = 96
    difficulty: float = 0.5
    folder_size: int = 1000
    workers: int = 2
    label_source: str | None = "data/splits"
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict | None) -> "SynthConfig":
        d = dict(d or {})
        known = {k: d.pop(k) for k in list(d) if k in cls.__dataclass_fields__ and k != "extra"}
        types = {"seed": int, "n_train": int, "n_val": int, "n_test": int, "width": int, "height": int,
                 "difficulty": float, "folder_size": int, "workers": int, "out": str}
        for key, typ in types.items():
            if key in known:
                try:
                    if isinstance(known[key], bool) or known[key] is None:
                        raise ValueError
                    if typ is str and not isinstance(known[key], str):
                        raise ValueError
                    if typ is int and isinstance(known[key], float) and not known[key].is_integer():
                        raise ValueError
                    known[key] = typ(known[key])
                except (TypeError, ValueError, OverflowError):
                    raise SewerbenchError(f"params.yaml: synth.{key}: expected {typ.__name__}, "
                                          f"got {known[key]!r}") from None
        if "label_source" in known and not (known["label_source"] is None
                                            or isinstance(known["label_source"], str)):
            raise SewerbenchError(f"params.yaml: synth.label_source: expected a folder name, "
                                  f"got {known['label_source']!r}")
        unknown = sorted(str(k) for k in d if k != "calibrate")
        if unknown:
            import difflib
            hint = difflib.get_close_matches(unknown[0], [*cls.__dataclass_fields__, "calibrate"], n=1)
            raise SewerbenchError(f"params.yaml: synth.{unknown[0]}: unknown key"
                                  f"{f' (did you mean {hint[0]}?)' if hint else ''}")
        if "calibrate" in d:
            _check_calibrate(d["calibrate"])
        cfg = cls(**known, extra=d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name in ("n_train", "n_val", "n_test"):
            if int(getattr(self, name)) < 0:
                raise SewerbenchError(f"params.yaml: synth.{name}: must be >= 0")
        if self.width < 16 or self.height < 16:
            raise SewerbenchError("params.yaml: synth.width/height: must be >= 16")
        if not 0.0 <= float(self.difficulty) <= 1.0:
            raise SewerbenchError("params.yaml: synth.difficulty: must be in [0, 1]")
        if int(self.folder_size) < 1:
            raise SewerbenchError("params.yaml: synth.folder_size: must be >= 1")

    def counts(self) -> dict[str, int]:
        return {"train": int(self.n_train), "val": int(self.n_val), "test": int(self.n_test)}


def _check_calibrate(section) -> None:
    """The ``synth.calibrate`` keys must be options of :func:`benchmark.synth.calibrate.calibrate`."""
    import difflib
    import inspect

    if section is None:
        return
    if not isinstance(section, dict):
        raise SewerbenchError("params.yaml: synth.calibrate: must be a mapping")
    from benchmark.synth.calibrate import calibrate

    params = inspect.signature(calibrate).parameters
    known = [k for k, p in params.items() if p.kind == p.KEYWORD_ONLY or
             (p.kind == p.POSITIONAL_OR_KEYWORD and k not in ("root", "seed"))]
    for key, value in section.items():
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            raise SewerbenchError(f"params.yaml: synth.calibrate.{key}: unknown key"
                                  f"{f' (did you mean {hint[0]}?)' if hint else ''}")
        default = params[key].default
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SewerbenchError(f"params.yaml: synth.calibrate.{key}: expected a number, got {value!r}")


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of image ``index`` (global 1-based number): order-independent."""
    return np.random.default_rng([int(seed), int(index), 104729])


def render_row(seed: int, index: int, labels: np.ndarray, water_level: int, width: int, height: int,
               difficulty: float):
    """Render image ``index`` of a dataset with the given seed."""
    return render(labels, water_level, image_rng(seed, index), width, height, difficulty)


def mask_location(filename: str) -> tuple[str, str]:
    """(file under ``masks/``, key) of the masks of the synthetic image ``filename``
    (``<8-digit index>.png``): images 1-100 are in ``00000.npz``, 101-200 in ``00001.npz`` ..."""
    stem = Path(filename).stem
    if not (len(stem) == 8 and stem.isdigit() and int(stem) >= 1):
        raise SewerbenchError(f"{filename}: not a synthetic image name (<8-digit index>.png)")
    return f"{(int(stem) - 1) // MASKS_PER_FILE:05d}.npz", stem


def save_masks(path: Path, masks: dict[str, np.ndarray]) -> bytes:
    """One mask file: key per image stem, bool (17, H, W) (compressed); returns the bytes."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: m.astype(bool) for k, m in masks.items()})
    data = buf.getvalue()
    path.write_bytes(data)
    return data


def load_masks(mask_dir: str | os.PathLike, filename: str) -> np.ndarray | None:
    """The bool (17, H, W) masks of the synthetic image ``filename`` from ``mask_dir``
    (a dataset's ``masks/``), or None when the dataset has none for it."""
    name, key = mask_location(filename)
    path = Path(mask_dir) / name
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        if key not in z.files:
            return None
        return z[key].astype(bool)


def _work(job):
    """Render a chunk of images (one mask file); return [(filename, sha256 of the PNG)] and
    (mask file, its sha256)."""
    seed, width, height, difficulty, mask_path, rows = job
    out, masks = [], {}
    for index, img_path, labels, wl in rows:
        img, m = render_row(seed, index, labels, wl, width, height, difficulty)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=3)
        png = buf.getvalue()
        Path(img_path).write_bytes(png)
        out.append((Path(img_path).name, hashlib.sha256(png).hexdigest()))
        masks[Path(img_path).stem] = m
    data = save_masks(Path(mask_path), masks)
    return out, (Path(mask_path).name, hashlib.sha256(data).hexdigest())


def content_digest(images: list[tuple[str, str]], mask_files: list[tuple[str, str]]) -> str:
    """SHA-256 over every image's and mask file's (name, SHA-256), in name order."""
    h = hashlib.sha256()
    for kind, items in (("image", images), ("masks", mask_files)):
        for name, sha in sorted(items):
            h.update(f"{kind} {name} {sha}\n".encode())
    return h.hexdigest()


def plan(cfg: SynthConfig) -> dict[str, pd.DataFrame]:
    """Label rows and filenames of every split (no rendering)."""
    frames = {}
    start = 1
    for split in SPLITS:
        n = cfg.counts()[split]
        df = sample_split_labels(split, n, cfg.seed, cfg.label_source)
        idx = np.arange(start, start + n)
        df["Filename"] = [f"{i:08d}.png" for i in idx]
        df["image_index"] = idx
        df["folder"] = [f"{split}{j // cfg.folder_size:02d}" for j in range(n)]
        frames[split] = df
        start += n
    return frames


def is_synthetic_dataset(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a dataset written by :func:`generate` (its meta.json says so)."""
    meta = Path(path) / "meta.json"
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("synthetic") is True and info.get("generator") == "sewerbench.synth"


def check_output(cfg: SynthConfig, out: str | os.PathLike | None = None, force: bool = False,
                 inputs: tuple[tuple[str, object], ...] = ()) -> Path:
    """Refuse an output folder that generating into would lose data (see :func:`generate`)."""
    from benchmark.io import check_disjoint_from_inputs, check_replaceable_dir

    out = Path(out if out is not None else cfg.out)
    if str(cfg.out).strip() == "" and out == Path(cfg.out):
        raise SewerbenchError("synth.out: empty output folder name")
    check_disjoint_from_inputs(out, (("synth.label_source", cfg.label_source), *inputs))
    check_replaceable_dir(out, "synth", force=force, recognise=is_synthetic_dataset)
    return out


def generate(cfg: SynthConfig, out: str | os.PathLike | None = None, progress: bool | None = None,
             force: bool = False) -> dict:
    """Generate the dataset into ``out`` (replaced atomically). Returns the meta dict.

    ``out`` may be missing, empty or an earlier synthetic dataset; any other folder is refused
    unless ``force`` (a file always), as is an ``out`` that is or holds an input. Nothing is
    written before the labels are planned (the label source validated)."""
    from benchmark.io import recover_dir

    cfg.validate()
    recover_dir(Path(out if out is not None else cfg.out))  # what a killed earlier run left
    out = check_output(cfg, out, force)
    frames = plan(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.tmp-", dir=out.parent))
    t0 = time.perf_counter()
    try:
        (tmp / "masks").mkdir()
        rows = []
        for split in SPLITS:
            df = frames[split]
            for folder in sorted(set(df["folder"])):
                (tmp / folder).mkdir()
            lab = df[list(CLASS_CODES)].to_numpy(np.int64)
            for i, (fn, ix, folder, wl) in enumerate(zip(df["Filename"], df["image_index"], df["folder"],
                                                         df["WaterLevel"])):
                rows.append((int(ix), str(tmp / folder / fn), lab[i], int(wl)))
        # one job per mask file: the images whose masks it holds (indices are 1 .. total)
        by_file: dict[str, list] = {}
        for r in rows:
            by_file.setdefault(mask_location(Path(r[1]).name)[0], []).append(r)
        jobs = [(cfg.seed, cfg.width, cfg.height, float(cfg.difficulty), str(tmp / "masks" / name), rs)
                for name, rs in sorted(by_file.items())]
        workers = max(1, int(cfg.workers))
        bar = tqdm(total=len(rows), desc="synth", unit="img", disable=None if progress is None else not progress)
        image_shas: list[tuple[str, str]] = []
        mask_shas: list[tuple[str, str]] = []
        with contextlib.ExitStack() as stack:
            if workers > 1 and len(jobs) > 1:
                ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
                pool = stack.enter_context(ctx.Pool(workers))
                it = pool.imap_unordered(_work, jobs)
            else:
                it = map(_work, jobs)
            for shas, mask_sha in it:
                image_shas += shas
                mask_shas.append(mask_sha)
                bar.update(len(shas))
        bar.close()
        elapsed = time.perf_counter() - t0
        for split in SPLITS:
            df = frames[split][list(CSV_COLUMNS)]
            df.to_csv(tmp / _SPLIT_CSV[split], index=False)
        frames["test"][["Filename"]].to_csv(tmp / "SewerML_Test.csv", index=False)
        total = len(rows)
        meta = {
            "synthetic": True,
            "generator": "sewerbench.synth",
            "generator_version": GENERATOR_VERSION,
            "seed": int(cfg.seed),
            "counts": cfg.counts(),
            "resolution": {"width": int(cfg.width), "height": int(cfg.height)},
            "difficulty": float(cfg.difficulty),
            "folder_size": int(cfg.folder_size),
            "label_source": {"train": "SewerML_Train_sub_0.0625.csv", "val": "SewerML_Val_sub_0.0625.csv",
                             "test": "SewerML_Val_sub_0.0625.csv"},
            "mask_format": (f"masks/<NNNNN>.npz holds images {MASKS_PER_FILE} * NNNNN + 1 .. "
                            f"{MASKS_PER_FILE} * (NNNNN + 1), key <stem>: bool ({NUM_CLASSES}, H, W), "
                            "class order CLASS_CODES"),
            "classes": list(CLASS_CODES),
            # what DVC's stages read instead of the folder's files (prepare, plots: README
            # "A dvc repro with nothing to do"): any change of an image or mask changes it
            "content": {"images": total, "mask_files": len(mask_shas),
                        "sha256": content_digest(image_shas, mask_shas)},
        }
        speed = round(total / elapsed, 1) if elapsed > 0 else 0.0
        meta_text = json.dumps(meta, indent=2) + "\n"
        (tmp / "meta.json").write_text(meta_text, encoding="utf-8")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %d synthetic images to %s (%.1f img/s, %d workers)", total, out, speed, workers)
    return {**meta, "images_per_second": speed, "workers": workers}


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` onto ``out``; an older ``out`` is removed only afterwards."""
    from benchmark.io import replace_dir

    replace_dir(tmp, out)
