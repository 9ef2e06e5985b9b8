"""A stand-in for ImageNet pretraining on the synthetic default (``sewerbench pretrain``).

Query2Label, MA-Q2L and ASL fine-tune ImageNet weights; ImageNet cannot be downloaded here, and
a transformer head on a randomly initialised backbone learns nothing in a CPU budget. So each
backbone that the paper profile loads pretrained (the tiny ResNet-101 trunk of Q2L/MA-Q2L and
the tiny TResNet-L of ASL) is trained once on a **disjoint** synthetic pretraining set:

* its own images: rendered here from their own seed and random stream (never written to the
  dataset folder, never one of the train/val/test frames), with label rows drawn from the
  training label distribution so that the frames look like Sewer-ML frames, defects included;
* a pretext task that does not use the 17 defect labels: regress the renderer's scene
  parameters (water level, focal length, principal point, roll, camera offset, joint spacing,
  phase and width; :data:`benchmark.synth.render.SCENE_PARAMETERS`) and classify the texture
  family (5 materials).

So the stand-in gives generic pipe features (geometry, texture, lighting), as ImageNet gives
generic features, and not the answer: no defect label or mask is ever a target. It is not
ImageNet: it is far smaller, of the same domain as the benchmark's images, and it does not
teach object categories. The weights are written as weights-only state dicts in the layout the
method builders load (``pretrained: <file>``), with trainable BatchNorm statistics that the
references' FrozenBatchNorm then holds fixed.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import SewerbenchError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: Random stream of the pretraining frames (the dataset's frames use 104729, see synth.generate).
IMAGE_STREAM = 611953
#: Label-row stream (synth.labels uses 1, 2, 3 for train, val, test).
LABEL_STREAM = 4

#: Stand-in backbones: name -> the input normalisation of the methods that load it (the
#: methods name their stand-in in the registry, ``MethodSpec.standin_backbone``).
BACKBONES: dict[str, str] = {
    "resnet101_trunk": "imagenet",   # the trunk of Q2L / MA-Q2L (methods.backbones.ResNetBody)
    "tresnet_l": "none",             # ASL's TResNet-L (inputs in [0, 1])
}


@dataclass(frozen=True)
class PretrainConfig:
    """The ``pretrain:`` section of params.yaml."""
    seed: int = 1000                 # != synth.seed: other frames than the dataset's
    n_images: int = 4000
    holdout: float = 0.1             # fraction kept out to report the pretext fit
    image_size: int = 96
    epochs: int = 6
    batch_size: int = 64
    lr: float = 2.0e-3
    weight_decay: float = 1.0e-4
    workers: int = 2                 # rendering processes
    threads: int | None = None       # torch threads (None: torch's default)
    backbones: tuple[str, ...] = ("resnet101_trunk", "tresnet_l")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "PretrainConfig":
        import difflib

        d = dict(d or {})
        names = list(cls.__dataclass_fields__)
        for key in d:
            if key not in names:
                hint = difflib.get_close_matches(str(key), names, n=1)
                raise SewerbenchError(f"params.yaml: pretrain.{key}: unknown key"
                                      f"{f' (did you mean {hint[0]}?)' if hint else ''}")
        types = {"seed": int, "n_images": int, "image_size": int, "epochs": int, "batch_size": int,
                 "workers": int, "holdout": float, "lr": float, "weight_decay": float}
        for key, typ in types.items():
            if key in d:
                v = d[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or (
                        typ is int and not float(v).is_integer()):
                    raise SewerbenchError(f"params.yaml: pretrain.{key}: expected {typ.__name__}, got {v!r}")
                d[key] = typ(v)
        if "threads" in d and d["threads"] is not None and (
                isinstance(d["threads"], bool) or not isinstance(d["threads"], int) or d["threads"] < 1):
            raise SewerbenchError(f"params.yaml: pretrain.threads: expected a positive integer or null, "
                                  f"got {d['threads']!r}")
        if "backbones" in d:
            b = d["backbones"]
            if not isinstance(b, (list, tuple)) or not b or any(x not in BACKBONES for x in b):
                raise SewerbenchError(f"params.yaml: pretrain.backbones: expected a list of "
                                      f"{', '.join(BACKBONES)}, got {b!r}")
            d["backbones"] = tuple(b)
        cfg = cls(**d)
        for key in ("n_images", "image_size", "epochs", "batch_size", "workers"):
            if getattr(cfg, key) < 1:
                raise SewerbenchError(f"params.yaml: pretrain.{key}: must be >= 1")
        if not 0.0 < cfg.holdout < 0.5:
            raise SewerbenchError("params.yaml: pretrain.holdout: must be in (0, 0.5)")
        if cfg.lr <= 0:
            raise SewerbenchError("params.yaml: pretrain.lr: must be > 0")
        if cfg.image_size % 32:
            raise SewerbenchError(f"params.yaml: pretrain.image_size: {cfg.image_size} is not a multiple "
                                  "of 32 (the backbones' stride)")
        return cfg


def weights_path(out: str | os.PathLike, backbone: str) -> Path:
    """Where the stand-in weights of ``backbone`` live."""
    return Path(out) / f"{backbone}.pt"


def methods_using(backbone: str) -> list[str]:
    """The registered methods that load stand-in ``backbone``."""
    from methods.registry import REGISTRY

    return [name for name, spec in REGISTRY.items() if spec.standin_backbone == backbone]


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """``{"state_dict": ...}`` with the integrity digest of our checkpoints (loads weights-only)."""
    from methods.checkpoint import INTEGRITY_KEY, digest

    payload = {"state_dict": state}
    payload[INTEGRITY_KEY] = {"format": 1, "sha256": digest(payload)}
    torch.save(payload, path)


# ----------------------------------------------------------------------------- the pretext set
def _render_chunk(job):
    from benchmark.synth.render import render_scene, scene_parameters

    seed, width, height, difficulty, size, rows = job
    from PIL import Image

    imgs, regs, mats = [], [], []
    for index, labels, wl in rows:
        rng = np.random.default_rng([int(seed), int(index), IMAGE_STREAM])
        img, _masks, scene = render_scene(labels, wl, rng, width, height, difficulty)
        im = Image.fromarray(img)
        if im.size != (size, size):  # the image cache's resize (benchmark.data.cache.load_rgb)
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        imgs.append(np.asarray(im, np.uint8))
        reg, mat = scene_parameters(scene, wl)
        regs.append(reg)
        mats.append(mat)
    return np.stack(imgs), np.stack(regs), np.asarray(mats, np.int64)


def render_pretext_set(cfg: PretrainConfig, width: int, height: int, difficulty: float,
                       label_source: str | None, progress: bool | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 (N, S, S, 3), scene parameters (N, P), texture family (N,))."""
    from tqdm import tqdm

    from benchmark.classes import CLASS_CODES
    from benchmark.synth.labels import read_source, resolve_source, sample_rows

    rows_df = sample_rows(read_source(resolve_source(label_source, "train")), cfg.n_images,
                          cfg.seed, LABEL_STREAM)
    lab = rows_df[list(CLASS_CODES)].to_numpy(np.int64)
    wl = rows_df["WaterLevel"].to_numpy(np.int64)
    rows = [(i + 1, lab[i], int(wl[i])) for i in range(cfg.n_images)]
    chunk = 50
    jobs = [(cfg.seed, width, height, float(difficulty), cfg.image_size, rows[i:i + chunk])
            for i in range(0, len(rows), chunk)]
    bar = tqdm(total=len(rows), desc="pretext frames", unit="img",
               disable=None if progress is None else not progress)
    parts = []
    if cfg.workers > 1 and len(jobs) > 1:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(cfg.workers) as pool:
            for part in pool.imap(_render_chunk, jobs):  # ordered: the set does not depend on timing
                parts.append(part)
                bar.update(len(part[2]))
    else:
        for job in jobs:
            parts.append(_render_chunk(job))
            bar.update(len(parts[-1][2]))
    bar.close()
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))


# ----------------------------------------------------------------------------- models
class _TrunkWithHead(nn.Module):
    """ResNet trunk + global average pooling + linear pretext head."""

    def __init__(self, trunk: nn.Module, channels: int, outputs: int):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(channels, outputs)

    def forward(self, x):
        return self.head(self.trunk(x).mean((2, 3)))


def build_pretext_model(backbone: str, outputs: int) -> tuple[nn.Module, "callable"]:
    """The tiny backbone (as the method builders make it, trainable BatchNorm) with a pretext
    head, and a function giving the state dict to save (the layout its builder loads)."""
    if backbone == "resnet101_trunk":
        from methods.backbones import _CONFIGS, ResNetBody

        trunk = ResNetBody(*_CONFIGS["tiny"], norm="batch")
        model = _TrunkWithHead(trunk, trunk.num_channels, outputs)
        return model, lambda: {k: v.detach().clone() for k, v in trunk.state_dict().items()}
    if backbone == "tresnet_l":
        from methods.tresnet import build_tresnet_l

        model = build_tresnet_l(size="tiny", num_classes=outputs)
        return model, lambda: {k: v.detach().clone() for k, v in model.state_dict().items()
                               if not k.startswith("head.fc.")}
    raise SewerbenchError(f"pretrain: unknown backbone {backbone!r}; known: {', '.join(BACKBONES)}")


def _normalise(x: torch.Tensor, kind: str) -> torch.Tensor:
    from benchmark.data.transforms import NORMALIZATION

    x = x.permute(0, 3, 1, 2).float().div_(255)
    norm = NORMALIZATION[kind]
    if norm is None:
        return x
    mean = torch.tensor(norm[0]).view(1, 3, 1, 1)
    std = torch.tensor(norm[1]).view(1, 3, 1, 1)
    return (x - mean) / std


def _pretext_loss(out: torch.Tensor, reg: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
    p = reg.shape[1]
    return F.mse_loss(out[:, :p], reg) + 0.5 * F.cross_entropy(out[:, p:], mat)


def _pretext_scores(model, x, reg, mat, kind: str, batch: int = 256) -> dict[str, Any]:
    from benchmark.synth.render import SCENE_PARAMETERS

    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(model(_normalise(x[i:i + batch], kind)))
    out = torch.cat(outs)
    p = reg.shape[1]
    pred = out[:, :p].numpy().astype(np.float64)
    truth = reg.numpy().astype(np.float64)
    ss_res = ((pred - truth) ** 2).sum(0)
    ss_tot = ((truth - truth.mean(0)) ** 2).sum(0)
    r2 = 1 - ss_res / np.maximum(ss_tot, 1e-12)
    acc = float((out[:, p:].argmax(1) == mat).float().mean())
    return {"loss": float(_pretext_loss(out, reg, mat)),
            "r2": {k: round(float(v), 4) for k, v in zip(SCENE_PARAMETERS, r2)},
            "r2_mean": round(float(r2.mean()), 4), "texture_accuracy": round(acc, 4)}


def train_backbone(backbone: str, cfg: PretrainConfig, images: np.ndarray, regs: np.ndarray,
                   mats: np.ndarray, progress: bool | None = None) -> tuple[dict, dict]:
    """Train one stand-in backbone; returns (state dict to save, report)."""
    from tqdm import tqdm

    from benchmark.seed import seed_everything
    from benchmark.synth.render import NUM_MATERIALS

    seed_everything(cfg.seed)
    kind = BACKBONES[backbone]
    n_hold = max(1, int(round(len(images) * cfg.holdout)))
    x = torch.from_numpy(images)
    reg = torch.from_numpy(regs)
    mat = torch.from_numpy(mats)
    xt, rt, mt = x[n_hold:], reg[n_hold:], mat[n_hold:]
    xh, rh, mh = x[:n_hold], reg[:n_hold], mat[:n_hold]
    model, state_fn = build_pretext_model(backbone, regs.shape[1] + NUM_MATERIALS)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    steps_per_epoch = max(1, len(xt) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.2)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc=f"pretrain {backbone}", unit="batch",
               disable=None if progress is None else not progress)
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for s in range(steps_per_epoch):
            b = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            loss = _pretext_loss(model(_normalise(xt[b], kind)), rt[b], mt[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach().item()
            bar.update(1)
        held = _pretext_scores(model, xh, rh, mh, kind)
        history.append({"epoch": epoch + 1, "train_loss": round(total / steps_per_epoch, 5),
                        "holdout_loss": round(held["loss"], 5), "holdout_r2_mean": held["r2_mean"],
                        "holdout_texture_accuracy": held["texture_accuracy"]})
        log.info("pretrain %s: epoch %d/%d: train loss %.4f, held-out loss %.4f, R^2 %.3f, "
                 "texture accuracy %.3f", backbone, epoch + 1, cfg.epochs, total / steps_per_epoch,
                 held["loss"], held["r2_mean"], held["texture_accuracy"])
    bar.close()
    log.info("pretrain %s: %.1f s", backbone, time.perf_counter() - t0)
    report = {"backbone": backbone, "methods": methods_using(backbone), "normalisation": kind,
              "train_images": int(len(xt)), "holdout_images": int(n_hold),
              "history": history,
              "holdout": _pretext_scores(model, xh, rh, mh, kind),
              "parameters": int(sum(p.numel() for p in model.parameters()))}
    return state_fn(), report


def check_output(out: str | os.PathLike, force: bool = False) -> Path:
    """Refuse an output folder that ``sewerbench pretrain`` did not make (unless ``force``)."""
    from benchmark.io import check_replaceable_dir, recover_dir

    out = Path(out)
    recover_dir(out)
    return check_replaceable_dir(out, "pretrain", force=force)


def _write(out: Path, files: "callable") -> None:
    """Write a new ``out`` beside it (``files(tmp)``) and swap it in: never a partial folder."""
    import shutil

    from benchmark.io import claim_dir, replace_dir

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.tmp-", dir=out.parent))
    try:
        files(tmp)
        claim_dir(tmp, "pretrain")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_unused(out: str | os.PathLike, profile: str, force: bool = False) -> dict:
    """For a profile without stand-in weights (the paper profile loads ImageNet weights): a
    folder holding only meta.json that says so (keeps the DVC stage cheap)."""
    from benchmark.io import atomic_write_json

    out = check_output(out, force)
    meta = {"format": FORMAT_VERSION, "profile": profile, "backbones": {},
            "what": f"profile {profile!r} has no standin_weights: its runs load ImageNet weights "
                    "(or none); no stand-in was trained"}
    _write(out, lambda tmp: atomic_write_json(tmp / "meta.json", meta))
    return meta


def pretrain(cfg: PretrainConfig, out: str | os.PathLike, *, width: int, height: int,
             difficulty: float, label_source: str | None, progress: bool | None = None,
             force: bool = False) -> dict:
    """Render the pretext set, train every backbone of ``cfg.backbones`` and write
    ``out/<backbone>.pt`` + ``out/meta.json`` (the folder is replaced atomically)."""
    from benchmark.io import atomic_write_json
    from benchmark.synth.render import SCENE_PARAMETERS

    out = check_output(out, force)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    t0 = time.perf_counter()
    images, regs, mats = render_pretext_set(cfg, width, height, difficulty, label_source, progress)
    render_s = time.perf_counter() - t0
    log.info("pretrain: rendered %d pretext frames at %dx%d -> %d px in %.1f s", len(images), width,
             height, cfg.image_size, render_s)
    trained = {}
    for backbone in cfg.backbones:
        trained[backbone] = train_backbone(backbone, cfg, images, regs, mats, progress)
    meta = {"format": FORMAT_VERSION, "what": "synthetic stand-in for ImageNet pretraining "
                "(pretext: scene parameters + texture family; no defect label is a target)",
                "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
                "frames": {"width": width, "height": height, "difficulty": difficulty,
                           "image_stream": IMAGE_STREAM, "label_stream": LABEL_STREAM},
                "pretext_targets": list(SCENE_PARAMETERS) + ["texture_family"],
                "backbones": {b: report for b, (_state, report) in trained.items()}}

    def files(tmp: Path) -> None:
        for backbone, (state, _report) in trained.items():
            save_weights(state, weights_path(tmp, backbone))
        atomic_write_json(tmp / "meta.json", meta)

    _write(out, files)
    return meta
