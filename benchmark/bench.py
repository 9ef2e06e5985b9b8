"""Performance benchmark of the suite: ``sewerbench bench`` writes ``perf.json`` and ``perf.md``.

What is measured (every timing: warm-up iterations, then several timed repetitions; the
median and the min/max spread are reported, as timm's and mmpretrain's benchmark scripts do):

* **machine**: CPU model (``/proc/cpuinfo``), cores, torch threads, torch / CUDA / numpy
  versions, torch's CPU capability, the GPU name when ``--device cuda``;
* **models**, per method and size (``smoke``: the ``tiny`` builders at 64 px, as the smoke
  profile; ``paper``: the ``reference`` builders at each method's reference resolution):
  parameters, GFLOPs per image (forward, ``torch.utils.flop_counter``, 2 FLOPs per
  multiply-add), training and inference images/s *model-only* (batches already in memory;
  a training step is forward + BCE-with-logits loss + backward + AdamW step with the
  engine's kernels (fused on CPU and CUDA), fp32) and *end
  to end* (through :func:`benchmark.train.data.make_dataset` and a ``DataLoader`` over a
  small prepared set of 704x576 PNG frames that the benchmark renders in a temporary folder:
  the uint8 image cache for ``smoke`` as the smoke profile, the PNGs for ``paper`` as the
  paper profile; each with the training augmentation of the size's profile in params.yaml;
  model-only and end-to-end repetitions interleaved), the row's training loader alone in one
  process (images/s, and the loader cores the model-only step needs), peak RSS during the row
  (sampled) and CUDA max allocated; a bf16 autocast
  row is added on a CPU with native bf16 (AVX512-BF16 / AMX-BF16 in its flags) and on a
  CUDA device that supports bf16;
* **loader**: images/s per core (one thread, main process) of one dataset item -- decode,
  resize, to tensor, normalise; eval and train transform -- from PNG at the real Sewer-ML
  frame size 704x576 and from the uint8 cache (:mod:`benchmark.data.cache`), at each
  resolution the model rows use;
* **metrics**: seconds for all metrics of :func:`benchmark.metrics.evaluate` on 130,046 x 17
  synthetic scores, and in the same run the official implementation (the loop-style
  transcription of the official ``metrics.py`` in ``tests/official_metrics_ref.py``: the
  same per-class Python loop over ``np.argsort(scores)[::-1]`` for AP), with a check that
  the values are identical (same JSON text);
* **bootstrap**: seconds for 1,000 resamples of F2-CIW and F1-Normal
  (:func:`benchmark.bootstrap.bootstrap_ci`) on the same data;
* **synthetic**: images/s of the synthetic renderer (:mod:`benchmark.synth`) at its default
  frame size, one core.

The benchmark asserts nothing about speed: it reports. Nothing here is used by training.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.util
import json
import logging
import os
import platform
import resource
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from benchmark.cpus import cpu_model, cpu_supports_bf16, usable_cpus
from benchmark.errors import SewerbenchError
from benchmark.timing import summary

log = logging.getLogger(__name__)

FORMAT = 1
#: File names written into ``--out``.
PERF_JSON = "perf.json"
PERF_MD = "perf.md"
#: ``--sizes``: builder size and input resolution (None = the method's reference size).
SIZES: dict[str, tuple[str, int | None]] = {"smoke": ("tiny", 64), "paper": ("reference", None)}
#: Smoke-profile resolution overrides (params.yaml profiles.smoke.methods: Inception-v3 needs 299 px).
SMOKE_PX = {"chen2018": 299}
#: Real Sewer-ML frame size (width, height).
FRAME_SIZE = (704, 576)
#: the smoke profile's loader (params.yaml ``profiles.smoke``: batch_size, workers; a test
#: keeps them equal): its end-to-end rows train through the loader the default profile uses
SMOKE_LOADER = {"batch_size": 32, "workers": 0}
PAPER_WORKERS = 8                 # params.yaml profiles.paper.workers (capped at the cores here)
#: Quality of the JPEG shard cache measured beside the raw one (= runtime.cache_quality's default).
CACHE_QUALITY = 95
#: Images a run of each Sewer-ML split reads (train + validation + test): the full split
#: (1,040,129 + 130,046 + 130,026) and the 1/16 one (its 65,008 train images, the full
#: validation set, of which its 8,127 are a part, and the test set).
SEWERML_IMAGES = {"full": 1_300_201, "sub_0.0625": 65_008 + 130_046 + 130_026}
#: Rows of the metric and bootstrap timings (the Sewer-ML validation split has 130,046 images).
METRIC_ROWS = 130_046
RESAMPLES = 1000
#: Keys of every model row in perf.json (documented contract, checked by the tests).
MODEL_KEYS = ("method", "size", "image_size", "precision", "device", "batch", "params",
              "gflops_per_image", "train_model", "train_e2e", "infer_model", "infer_e2e",
              "e2e_source", "e2e_vs_model", "peak_rss_mb", "cuda_max_allocated_mb",
              "loader_train_per_core", "loader_cores_to_feed")
TOP_KEYS = ("format", "created", "command", "quick", "settings", "machine", "models", "loader",
            "metrics", "bootstrap", "synthetic", "reference_steps", "notes")


@dataclass
class Settings:
    device: str = "cpu"
    methods: list[str] = field(default_factory=list)
    sizes: list[str] = field(default_factory=lambda: ["smoke"])
    quick: bool = False
    batch: int | None = None          # None: per device / size default
    warmup: int | None = None
    reps: int | None = None
    workers: int | None = None        # DataLoader workers of the end-to-end rows
    rows: int = METRIC_ROWS
    resamples: int = RESAMPLES
    official: bool = True             # time the official implementation too
    seed: int = 0
    threads: int | None = None        # torch intra-op threads (None: torch's default)
    references: dict[str, Path] = field(default_factory=dict)   # method -> authors' checkout
    params: dict[str, Any] | None = None   # params.yaml: the end-to-end rows train with each profile's augmentation

    def _quick(self, size: str | None) -> bool:
        # --quick shortens the paper-size rows (seconds a step on a CPU); the smoke rows keep
        # the full protocol: their steps take milliseconds, and 2 short repetitions of them
        # measured noise (fp32 rows at a third of the same run's bf16 rows)
        return self.quick and size != "smoke"

    def min_time(self, size: str | None = None) -> float:
        """Seconds one timed repetition lasts at least (more calls per repetition if needed)."""
        return 0.1 if self._quick(size) else 0.5

    def n_warmup(self, size: str | None = None) -> int:
        return self.warmup if self.warmup is not None else (1 if self._quick(size) else 2)

    def n_reps(self, size: str | None = None) -> int:
        return self.reps if self.reps is not None else (2 if self._quick(size) else 5)

    def batch_for(self, size: str) -> int:
        if self.batch is not None:
            return self.batch
        if self._quick(size):
            return 2
        if self.device == "cuda":
            return 64 if size == "smoke" else 32
        return SMOKE_LOADER["batch_size"] if size == "smoke" else 4

    def n_workers(self, size: str) -> int:
        """DataLoader workers of the end-to-end rows: ``--workers``, else the profile's
        (smoke: the main process, as the smoke profile trains; paper: its 8, at most the cores)."""
        if self.workers is not None:
            return self.workers
        if size == "smoke":
            return SMOKE_LOADER["workers"]
        return min(PAPER_WORKERS, usable_cpus())


# ----------------------------------------------------------------------------- timing
def calls_per_rep(fn: Callable[[], Any], min_time: float, sync: Callable[[], None] = lambda: None,
                  cap: int = 1000) -> int:
    """How many calls of ``fn`` make one repetition last at least ``min_time`` seconds
    (from one timed call; ``fn`` is called once)."""
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    t = time.perf_counter() - t0
    return max(1, min(cap, int(np.ceil(min_time / t)) if t > 0 else cap))


def repeat(fn: Callable[[], Any], warmup: int, reps: int, sync: Callable[[], None] = lambda: None,
           calls: int = 1) -> list[float]:
    """Seconds per call of ``fn``: ``reps`` repetitions of ``calls`` calls each, after
    ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        times.append((time.perf_counter() - t0) / calls)
    return times


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 5 ms)."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def current() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            import psutil

            return int(psutil.Process().memory_info().rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.peak = self.current()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self.current())


# ----------------------------------------------------------------------------- machine
def machine(device: str) -> dict[str, Any]:
    import torch

    info = {
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "usable_cpus": usable_cpus(),
        "torch_threads": torch.get_num_threads(), "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "cpu_bf16": cpu_supports_bf16(), "python": platform.python_version(), "numpy": np.__version__,
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": None, "gpu": None,
        "platform": platform.platform(), "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cudnn"] = torch.backends.cudnn.version()
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


# ----------------------------------------------------------------------------- data
def sewerml_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 17) synthetic scores and targets shaped like Sewer-ML: per-class prevalence between
    0.3 % and 10 %, about 40 % normal rows; scores are float32 sigmoid probabilities of a
    moderately good model (as ``predict`` writes them), read back as float64."""
    rng = np.random.default_rng(seed)
    prev = np.array([0.10, 0.06, 0.04, 0.02, 0.08, 0.02, 0.03, 0.06, 0.07, 0.02, 0.04, 0.02,
                     0.01, 0.01, 0.003, 0.03, 0.005])
    y = (rng.random((n, prev.size)) < prev).astype(np.int64)
    logit = 2.5 * (2 * y - 1) + rng.normal(0.0, 1.5, size=y.shape) - 1.0
    s = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32).astype(np.float64)
    return s, y


def _annotation_frame(names: list[str], seed: int):
    import pandas as pd

    from benchmark.classes import CLASS_CODES, CSV_COLUMNS

    rng = np.random.default_rng(seed)
    y = (rng.random((len(names), len(CLASS_CODES))) < 0.1).astype(np.int64)
    defect = y.any(axis=1).astype(np.int64)
    df = pd.DataFrame({"Filename": names, "WaterLevel": 0, "VA": 0,
                       **{c: y[:, k] for k, c in enumerate(CLASS_CODES)},
                       "ND": 1 - defect, "Defect": defect})
    return df[list(CSV_COLUMNS)]


class FrameSet:
    """A temporary folder of rendered Sewer-ML-size PNG frames (and caches built from them)."""

    def __init__(self, root: Path, unique: int, seed: int = 0):
        from PIL import Image

        from benchmark.data.images import ImageIndex
        from benchmark.synth.generate import render_row

        self.root = root
        self.png = root / "images"
        self.png.mkdir(parents=True)
        w, h = FRAME_SIZE
        rng = np.random.default_rng(seed)
        self.names: list[str] = []
        for i in range(unique):
            labels = (rng.random(17) < 0.15).astype(np.int64)
            img, _ = render_row(seed, i + 1, labels, int(rng.choice([0, 10, 30])), w, h, 0.5)
            name = f"{i + 1:08d}.png"
            Image.fromarray(img).save(self.png / name, format="PNG", compress_level=6)
            self.names.append(name)
        self.index = ImageIndex(self.png)
        self._caches: dict[int, Any] = {}

    def frame(self, n: int, seed: int = 0):
        """An annotation frame of ``n`` rows cycling over the unique frames."""
        return _annotation_frame([self.names[i % len(self.names)] for i in range(n)], seed)

    def cache(self, px: int, codec: str = "raw"):
        from benchmark.data.cache import ImageCache

        if (px, codec) not in self._caches:
            self._caches[px, codec] = ImageCache.build(self.root / f"cache_{px}_{codec}", self.names,
                                                       self.index, px, workers=1, codec=codec,
                                                       quality=CACHE_QUALITY)
        return self._caches[px, codec]

    def source(self, kind: str, px: int):
        return self.index if kind == "png" else self.cache(px, "jpeg" if kind == "jpeg" else "raw")


#: The run entry a size's end-to-end rows resolve: each ``--sizes`` name is the params.yaml
#: profile of that name (smoke, paper).
BENCH_RUN = "__bench__"


def profile_run(params: dict[str, Any] | None, name: str, size: str):
    """The resolved configuration (:func:`benchmark.config.resolve_run`: recipe <- profile <-
    per-recipe / per-method entries) of a full-split run of method ``name`` under the profile of
    ``size`` in ``params``: the end-to-end rows read their training augmentation and image
    source from it. None without params, or when ``params`` has no recipe for the method (e.g.
    a test's toy method): the family's default augmentation and the size's default source."""
    from benchmark.config import resolve_run
    from methods.registry import get_spec

    recipes = (params or {}).get("recipes") or {}
    if params is None or not (name in recipes or get_spec(name).family in recipes):
        return None
    runs = {BENCH_RUN: {"method": name, "profile": size, "split": "full"}}
    return resolve_run({**params, "runs": runs}, BENCH_RUN, where="params.yaml")


def profile_aug(params: dict[str, Any] | None, name: str, size: str) -> dict[str, Any] | None:
    """The training augmentation keywords of :func:`profile_run` (None: the family's defaults)."""
    cfg = profile_run(params, name, size)
    return None if cfg is None else cfg.aug.kwargs()


def e2e_source(cfg, spec, size: str) -> str:
    """Where the end-to-end rows read images: ``cache`` (the raw uint8 cache; the JPEG one
    when the profile's codec is jpeg) or ``png`` (decoding the 704x576 frames), as a run of
    the profile does (``use_cache``; a method that reads full-resolution images never caches).
    Without a configuration: the smoke profile's cache, the paper profile's PNGs."""
    if cfg is None:
        return "cache" if size == "smoke" else "png"
    if not cfg.runtime.use_cache or spec.full_resolution:
        return "png"
    return "jpeg" if cfg.runtime.cache_codec == "jpeg" else "cache"


def aug_label(kwargs: dict[str, Any], transform: str) -> str:
    """A short name of the effective training augmentation (e.g. ``flip+jitter``, ``none``)."""
    from benchmark.data.transforms import AUG_DEFAULTS

    a = {**AUG_DEFAULTS[transform], **kwargs}
    parts = [k for k, on in (("randaugment", a.get("randaugment")), ("cutout", a.get("cutout")),
                             ("flip", a.get("flip")), ("jitter", a.get("jitter"))) if on]
    return "+".join(parts) or "none"


def run_cfg(spec, px: int, aug: dict[str, Any] | None = None):
    """The attributes of a run configuration that :func:`make_dataset` reads."""
    kwargs = dict(aug or {})
    return SimpleNamespace(aug=SimpleNamespace(kwargs=lambda: dict(kwargs)), transform=spec.transform,
                           image_size=px, binary=spec.binary)


# ----------------------------------------------------------------------------- models
def _resolution(name: str, size: str) -> int:
    from methods.registry import get_spec

    px = SIZES[size][1]
    if size == "smoke":
        return SMOKE_PX.get(name, px)
    return int(get_spec(name).image_size)


def build_model(name: str, size: str, px: int):
    from methods.registry import build, get_spec

    spec = get_spec(name)
    kwargs: dict[str, Any] = {"size": SIZES[size][0], "num_classes": 1 if spec.binary else 17,
                              "pretrained": False}
    if spec.takes_image_size:
        kwargs["image_size"] = px
    if spec.needs_train_targets:
        kwargs["targets"] = (np.random.default_rng(0).random((512, 17)) < 0.1).astype(np.float32)
    return build(name, **kwargs)


def _logits_loss(out, y, loss_fn):
    if isinstance(out, (tuple, list)):                     # Inception-v3: (logits, aux_logits)
        return loss_fn(out[0], y) + 0.4 * loss_fn(out[1], y)
    return loss_fn(out, y)


def gflops_per_image(model, px: int, device) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    x = torch.randn(1, 3, px, px, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() / 1e9


def _sync(device):
    import torch

    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def bench_model(name: str, size: str, st: Settings, frames: FrameSet,
                precision: str = "fp32") -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from benchmark.seed import worker_init_fn
    from benchmark.train.data import EpochSeeded, make_dataset
    from benchmark.train.optim import build_optimizer, fused_for
    from methods.registry import get_spec

    spec = get_spec(name)
    device = torch.device(st.device)
    px = _resolution(name, size)
    batch = st.batch_for(size)
    warm, reps = st.n_warmup(size), st.n_reps(size)
    sync = _sync(device)
    amp = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if precision == "bf16"
           else contextlib.nullcontext())
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    row: dict[str, Any] = {"method": name, "size": size, "image_size": px, "precision": precision,
                           "device": st.device, "batch": batch}
    with PeakRSS() as mem:
        model = build_model(name, size, px).to(device)
        row["params"] = int(sum(p.numel() for p in model.parameters()))
        row["gflops_per_image"] = gflops_per_image(model, px, device)
        ncls = 1 if spec.binary else 17
        loss_fn = torch.nn.BCEWithLogitsLoss()
        opt = build_optimizer(model, {"name": "adamw", "lr": 1e-4}, batch,
                              fused=fused_for(model, device))   # the engine's kernels
        gen = torch.Generator().manual_seed(st.seed)
        x = torch.randn(batch, 3, px, px, generator=gen).to(device)
        y = (torch.rand(batch, ncls, generator=gen) < 0.2).float().to(device)

        def train_step(xb, yb):
            opt.zero_grad(set_to_none=True)
            with amp:
                loss = _logits_loss(model(xb), yb, loss_fn)
            loss.backward()
            opt.step()

        def infer_step(xb):
            with torch.inference_mode(), amp:
                model(xb)

        # end to end: the real dataset and a DataLoader; the iterator is created once, so the
        # workers' start-up falls into the warm-up. Model-only and end-to-end repetitions
        # alternate (same number of batches each), so drift of a shared machine's speed hits
        # both; e2e_vs_model is the median of the paired ratios
        pcfg = profile_run(st.params, name, size)
        aug = None if pcfg is None else pcfg.aug.kwargs()
        source = e2e_source(pcfg, spec, size)
        where = (f"png {FRAME_SIZE[0]}x{FRAME_SIZE[1]}" if source == "png"
                 else f"{'jpeg q95 ' if source == 'jpeg' else ''}cache {px}px")
        row["e2e_source"] = (f"{where}, train aug {aug_label(aug or {}, spec.transform)}"
                             f"{'' if aug is not None else ' (family default)'}")
        images = frames.source(source, px)
        cfg = run_cfg(spec, px, aug)
        pin = device.type == "cuda"
        workers = st.n_workers(size)

        def feeder(step, train: bool, n_items: int):
            ds = make_dataset(frames.frame(n_items, st.seed), images, cfg, train=train)
            if train:
                ds = EpochSeeded(ds, st.seed)          # the engine's per-item augmentation seeds
            it = iter(DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers,
                                 pin_memory=pin, drop_last=True, worker_init_fn=worker_init_fn))

            def one():
                xb, yb, _ = next(it)
                xb = xb.to(device, non_blocking=pin)
                yb = yb.to(device, non_blocking=pin)
                step(xb, yb)
            return one

        def paired(model_call, step, train: bool):
            for _ in range(warm):
                model_call()
            calls = calls_per_rep(model_call, st.min_time(size), sync)
            one = feeder(step, train, batch * (warm + reps * calls + 1))
            for _ in range(warm):
                one()
            model_times, e2e_times = [], []
            for _ in range(reps):
                model_times += repeat(model_call, 0, 1, sync, calls)
                e2e_times += repeat(one, 0, 1, sync, calls)
            ratios = [m / e for m, e in zip(model_times, e2e_times)]   # e2e rate / model rate
            return summary(model_times, batch), summary(e2e_times, batch), float(np.median(ratios))

        model.train()
        row["train_model"], row["train_e2e"], r_train = paired(lambda: train_step(x, y), train_step, True)
        model.eval()
        row["infer_model"], row["infer_e2e"], r_infer = paired(lambda: infer_step(x),
                                                               lambda xb, yb: infer_step(xb), False)
        row["e2e_vs_model"] = {"train": r_train, "infer": r_infer}
        # the row's own training loader alone (its augmentation and source), in this process:
        # images/s one core gives, and how many such cores the model-only step would need
        fetch = iter(DataLoader(EpochSeeded(make_dataset(frames.frame(batch * (1 + reps), st.seed), images,
                                                         cfg, train=True), st.seed),
                                batch_size=batch, shuffle=False, num_workers=0, drop_last=True))
        row["loader_train_per_core"] = summary(repeat(lambda: next(fetch), 1, reps), batch)
        del fetch
        per_core = row["loader_train_per_core"]["median"]
        row["loader_cores_to_feed"] = row["train_model"]["median"] / per_core
        del model, opt
    row["peak_rss_mb"] = mem.peak / 2**20
    row["cuda_max_allocated_mb"] = (torch.cuda.max_memory_allocated(device) / 2**20
                                    if device.type == "cuda" else None)
    return {k: row.get(k) for k in MODEL_KEYS}


# ----------------------------------------------------------------------------- loader
def bench_loader(frames: FrameSet, resolutions: list[int], st: Settings) -> list[dict[str, Any]]:
    """Images/s per core of one dataset item, from PNG (704x576), from the raw uint8 cache and
    from the JPEG shard cache; a cache row also gives its bytes per image and the size a cache of
    each Sewer-ML split would take at that rate."""
    from benchmark.data.dataset import SewerMLDataset
    from benchmark.data.transforms import build_transform
    from benchmark.train.runtime import intra_op_threads

    n = len(frames.names)
    rows = []
    warm, reps = st.n_warmup(), st.n_reps()
    with intra_op_threads(1):
        for px in resolutions:
            for source in ("png", "cache", "jpeg"):
                images = frames.source(source, px)
                row: dict[str, Any] = {"source": source, "image_size": px,
                                       "frame": f"{FRAME_SIZE[0]}x{FRAME_SIZE[1]}"}
                if source != "png":
                    per = images.nbytes / len(images)
                    row["bytes_per_image"] = per
                    row["sewerml_cache_gb"] = {k: per * v / 1e9 for k, v in SEWERML_IMAGES.items()}
                for which, train in (("eval", False), ("train", True)):
                    # the q2l family's transforms (ImageNet normalisation; train adds RandAugment)
                    ds = SewerMLDataset(frames.frame(n, st.seed), images,
                                        build_transform("imagenet", px, train))

                    def all_items():
                        for i in range(n):
                            ds[i]
                    for _ in range(warm):
                        all_items()
                    calls = calls_per_rep(all_items, st.min_time())
                    row[which] = summary(repeat(all_items, 0, reps, calls=calls), n)
                rows.append(row)
    return rows


# ----------------------------------------------------------------------------- metrics
def _official_module():
    """The loop-style transcription of the official metrics.py (tests/official_metrics_ref.py)."""
    path = Path(__file__).resolve().parent.parent / "tests" / "official_metrics_ref.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_sewerbench_official_metrics_ref", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_metrics(st: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    from benchmark import bootstrap as B
    from benchmark import metrics as M

    s, y = sewerml_like(st.rows, st.seed)
    warm, reps = st.n_warmup(), st.n_reps()
    ours_t = repeat(lambda: M.evaluate(s, y), warm, reps)
    ours = M.evaluate(s, y)
    res: dict[str, Any] = {"rows": st.rows, "classes": int(s.shape[1]), "data": "sewerml_like",
                           "ours": summary(ours_t, rate=False), "official": None,
                           "speedup": None, "identical": None,
                           "official_source": "tests/official_metrics_ref.py"}
    ref = _official_module() if st.official else None
    if ref is not None:
        out: dict[str, Any] = {}

        def official():
            out["r"] = ref.ref_results_dict(s, y)
        # the official loop is slow and has no warm-up effects beyond the first numpy calls
        off_t = repeat(official, 0, 1 if st.quick else min(3, reps))
        res["official"] = summary(off_t, rate=False)
        res["speedup"] = res["official"]["median"] / res["ours"]["median"]
        res["identical"] = json.dumps(ours) == json.dumps(M.to_jsonable(out["r"]))
    elif st.official:
        res["official_source"] = "unavailable (tests/official_metrics_ref.py not found)"
    b_reps = 1 if st.quick else min(3, reps)
    boot_t = repeat(lambda: B.bootstrap_ci(s, y, n=st.resamples, seed=st.seed), 1 if not st.quick else 0,
                    b_reps)
    boot = {"rows": st.rows, "resamples": st.resamples, "metrics": ["F2_CIW", "F1_Normal"],
            "seconds": summary(boot_t, rate=False)}
    return res, boot


def bench_synthetic(st: Settings) -> dict[str, Any]:
    from benchmark.synth.generate import SynthConfig, render_row
    from benchmark.train.runtime import intra_op_threads

    cfg = SynthConfig()
    n = 4 if st.quick else 16
    rng = np.random.default_rng(st.seed)
    labels = (rng.random((n, 17)) < 0.15).astype(np.int64)

    def render_all():
        for i in range(n):
            render_row(st.seed, i + 1, labels[i], 0, cfg.width, cfg.height, float(cfg.difficulty))
    with intra_op_threads(1):
        t = repeat(render_all, min(1, st.n_warmup()), st.n_reps())
    return {"width": cfg.width, "height": cfg.height, "images": n, "rate": summary(t, n)}


# ----------------------------------------------------------------------------- driver
def check_settings(st: Settings) -> None:
    from methods.registry import REGISTRY

    if st.device not in ("cpu", "cuda"):
        raise SewerbenchError(f"--device: choose cpu or cuda, got {st.device!r}")
    if st.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SewerbenchError("--device cuda: no CUDA device is available")
    for size in st.sizes:
        if size not in SIZES:
            raise SewerbenchError(f"--sizes: unknown size {size!r} (choose from {', '.join(SIZES)})")
    if not st.sizes:
        raise SewerbenchError("--sizes: give at least one size")
    for m in st.methods:
        if m not in REGISTRY:
            raise SewerbenchError(f"--methods: unknown method {m!r} (see `sewerbench methods`)")
        if REGISTRY[m].kind != "torch":
            raise SewerbenchError(f"--methods: {m} is a {REGISTRY[m].kind} pipeline, not a torch "
                                  "model; the benchmark times torch models only")
    for name, v, lo in (("--batch", st.batch, 1), ("--warmup", st.warmup, 0), ("--reps", st.reps, 1),
                        ("--workers", st.workers, 0), ("--rows", st.rows, 2), ("--resamples", st.resamples, 1),
                        ("--threads", st.threads, 1)):
        if v is not None and v < lo:
            raise SewerbenchError(f"{name}: must be >= {lo}, got {v}")


def default_methods() -> list[str]:
    """Every torch method of the registry except the self-check's toy ``tiny_cnn`` (family
    ``tiny``, not a published method; ``--methods tiny_cnn`` still measures it)."""
    from methods.registry import REGISTRY

    return [n for n, s in REGISTRY.items() if s.kind == "torch" and s.family != "tiny"]


def run_benchmark(st: Settings, command: list[str] | None = None) -> dict[str, Any]:
    """Run every measurement; return the perf.json object."""
    import torch

    if not st.methods:
        st.methods = default_methods()
    check_settings(st)
    if st.threads is not None:
        torch.set_num_threads(st.threads)
    started = _dt.datetime.now(_dt.timezone.utc)
    report: dict[str, Any] = {
        "format": FORMAT, "created": started.isoformat(timespec="seconds"),
        "command": command, "quick": st.quick,
        "settings": {"device": st.device, "methods": st.methods, "sizes": st.sizes,
                     "warmup": {z: st.n_warmup(z) for z in st.sizes}, "reps": {z: st.n_reps(z) for z in st.sizes},
                     "workers": {s: st.n_workers(s) for s in st.sizes},
                     "threads": torch.get_num_threads(), "min_rep_seconds": {z: st.min_time(z) for z in st.sizes},
                     "batch": {s: st.batch_for(s) for s in st.sizes}, "rows": st.rows,
                     "resamples": st.resamples, "seed": st.seed,
                     "references": {k: str(v) for k, v in st.references.items()}},
        "machine": machine(st.device), "notes": [],
    }
    if st.device == "cpu" and not cpu_supports_bf16():
        report["notes"].append(f"no bf16 rows: this CPU has no native bf16 (no AVX512-BF16 / AMX-BF16 in its "
                               f"flags; ATen capability {report['machine']['cpu_capability']}): bf16 would be "
                               "emulated, and the smoke profile trains in fp32 here (amp_native_only)")
    bf16 = (cpu_supports_bf16() if st.device == "cpu" else torch.cuda.is_bf16_supported())
    torch.manual_seed(st.seed)
    tmp = Path(tempfile.mkdtemp(prefix="sewerbench-bench-"))
    try:
        log.info("bench: rendering %dx%d frames", *FRAME_SIZE)
        frames = FrameSet(tmp, unique=2 if st.quick else 8, seed=st.seed)
        resolutions = sorted({_resolution(m, s) for m in st.methods for s in st.sizes})
        log.info("bench: loader at %s px", ", ".join(map(str, resolutions)))
        loader_rows = bench_loader(frames, resolutions, st)
        report["loader"] = loader_rows
        models = []
        for size in st.sizes:
            for m in st.methods:
                for precision in (("fp32", "bf16") if bf16 else ("fp32",)):
                    log.info("bench: %s %s %s", m, size, precision)
                    models.append(bench_model(m, size, st, frames, precision))
        report["models"] = models
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("bench: metrics on %d x 17", st.rows)
    report["metrics"], report["bootstrap"] = bench_metrics(st)
    log.info("bench: synthetic renderer")
    report["synthetic"] = bench_synthetic(st)
    report["reference_steps"] = []
    for name, root in st.references.items():
        from benchmark.refstep import bench_reference

        log.info("bench: %s training step against the authors' code in %s", name, root)
        report["reference_steps"].append(
            bench_reference(name, root, st.n_warmup(), max(st.n_reps(), 3), seed=st.seed))
    report["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["machine"]["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["seconds"] = (_dt.datetime.now(_dt.timezone.utc) - started).total_seconds()
    return {k: report.get(k) for k in (*TOP_KEYS, "seconds")}


# ----------------------------------------------------------------------------- markdown
def _rate(d: dict | None, digits: int = 1) -> str:
    if not d:
        return "-"
    if d["reps"] == 1:
        return f"{d['median']:.{digits}f}"
    return f"{d['median']:.{digits}f} ({d['min']:.{digits}f}-{d['max']:.{digits}f})"


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _size_settings(st: dict[str, Any], size: str) -> str:
    def get(key):
        v = st[key]
        return v.get(size) if isinstance(v, dict) else v      # perf.json of format 1 kept scalars
    return (f"{size}: {get('warmup')} warm-up + {get('reps')} timed repetitions of >= {get('min_rep_seconds')} s, "
            f"batch {get('batch')}, {get('workers')} loader workers end to end")


def to_markdown(rep: dict[str, Any]) -> str:
    m = rep["machine"]
    st = rep["settings"]
    lines = [f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs, {m['torch_threads']} torch threads "
             f"(capability {m['cpu_capability']}, native bf16 {'yes' if m.get('cpu_bf16') else 'no'}); torch {m['torch']}, CUDA {m['cuda'] or 'none'}"
             + (f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU used")
             + f"; numpy {m['numpy']}; load average at start {', '.join(f'{x:.1f}' for x in (m['load_average'] or []))}.",
             f"Settings: device {st['device']}" + (", --quick" if rep["quick"] else "")
             + "".join(f"; {_size_settings(st, z)}" for z in st.get("sizes") or [])
             + "; cells: median (min-max).", ""]
    lines += ["| method | size | px | prec | batch | params (M) | GFLOPs/img | train img/s model | "
              "train img/s e2e | infer img/s model | infer img/s e2e | e2e source | e2e/model train | "
              "peak RSS MB | CUDA MB | train loader img/s/core | loader cores to feed |",
              "|" + "---|" * 17]
    for r in rep["models"]:
        lines.append(
            f"| {r['method']} | {r['size']} | {r['image_size']} | {r['precision']} | {r['batch']} | "
            f"{r['params'] / 1e6:.3g} | {r['gflops_per_image']:.3g} | {_rate(r['train_model'], 2)} | "
            f"{_rate(r['train_e2e'], 2)} | {_rate(r['infer_model'], 2)} | {_rate(r['infer_e2e'], 2)} | "
            f"{r['e2e_source']} | {r['e2e_vs_model']['train']:.2f} | {r['peak_rss_mb']:.0f} | "
            f"{_num(r['cuda_max_allocated_mb'], '.0f')} | {_rate(r['loader_train_per_core'], 1)} | "
            f"{_num(r['loader_cores_to_feed'], '.2f')} |")
    lines += ["", "Loader, images/s per core (one thread; decode + resize + to tensor + normalise; "
              "train adds the reference RandAugment, whatever the profile):", "",
              "| source | px | eval img/s/core | train img/s/core | KB/image | Sewer-ML cache, full / 1/16 split (GB) |",
              "|---|---|---|---|---|---|"]
    names = {"png": lambda r: f"PNG {r['frame']}", "cache": lambda r: f"raw uint8 cache ({r['image_size']} px)",
             "jpeg": lambda r: f"JPEG q{CACHE_QUALITY} shard cache ({r['image_size']} px)"}
    for r in rep["loader"]:
        size = "-"
        if r.get("sewerml_cache_gb"):
            g = r["sewerml_cache_gb"]
            size = f"{g['full']:.4g} / {g['sub_0.0625']:.4g}"
        kb = f"{r['bytes_per_image'] / 1024:.1f}" if r.get("bytes_per_image") else "-"
        lines.append(f"| {names[r['source']](r)} | {r['image_size']} | {_rate(r['eval'])} | "
                     f"{_rate(r['train'])} | {kb} | {size} |")
    me, bo, sy = rep["metrics"], rep["bootstrap"], rep["synthetic"]
    off = me.get("official")
    lines += ["", "| task | ours | official | speedup | identical |", "|---|---|---|---|---|",
              f"| all metrics, {me['rows']:,} x {me['classes']} | {_rate(me['ours'], 3)} s | "
              f"{(_rate(off, 3) + ' s') if off else '-'} | "
              f"{(format(me['speedup'], '.1f') + 'x') if me.get('speedup') else '-'} | "
              f"{'-' if me.get('identical') is None else ('yes' if me['identical'] else 'NO')} |",
              f"| {bo['resamples']:,} bootstrap resamples of F2-CIW and F1-Normal, {bo['rows']:,} rows | "
              f"{_rate(bo['seconds'], 3)} s | - | - | - |",
              f"| synthetic renderer, {sy['width']}x{sy['height']}, one core | "
              f"{_rate(sy['rate'])} img/s | - | - | - |"]
    refs = rep.get("reference_steps") or []
    if refs:
        lines += ["", "Training step against the authors' code (forward + BCE + backward + the recipe's "
                  "optimiser step; ResNet-101, hidden 2048, fp32; the same weights in both; interleaved "
                  "repetitions):", "",
                  "| method | authors' code | px | batch | ours img/s | theirs img/s | speedup | "
                  "optimiser, ours / theirs | max abs logit difference |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in refs:
            lines.append(f"| {r['method']} | {r['reference']} | {r['image_size']} | {r['batch']} | "
                         f"{_rate(r['ours'], 3)} | {_rate(r['theirs'], 3)} | {r['speedup']:.2f}x | "
                         f"{r['optimizer']['ours']} / {r['optimizer']['theirs']} | "
                         f"{r['max_abs_logit_diff']:.2g} |")
    for note in rep.get("notes") or []:
        lines += ["", f"Note: {note}."]
    return "\n".join(lines) + "\n"


def check_out(out: str | os.PathLike) -> tuple[Path, Path]:
    """The two output paths; refuses an ``--out`` that is a file or lies under one."""
    from benchmark.io import check_output_file

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SewerbenchError(f"{out}: --out must be a folder, not a file")
    return (check_output_file(out / PERF_JSON, "--out"), check_output_file(out / PERF_MD, "--out"))


def write_report(rep: dict[str, Any], out: str | os.PathLike) -> tuple[Path, Path]:
    """Write perf.json and perf.md into ``out``, each atomically (both texts are built first)."""
    from benchmark.io import atomic_write_json, atomic_write_text

    pj, pm = check_out(out)
    md = to_markdown(rep)
    text = json.dumps(rep, indent=2, allow_nan=True)
    json.loads(text)
    atomic_write_json(pj, rep)
    atomic_write_text(pm, md)
    return pj, pm
