"""The training loop shared by every neural method (and the scikit-learn path of Myrans2018).

``train_run(cfg, out_dir)`` trains one resolved run (see :mod:`benchmark.config`) and writes
the run folder::

    config.json  checkpoint.pt (latest, atomic)  best.pt  history.csv  dvclive/
    scores_val.csv  [scores_val_sub.csv]  scores_test.csv  train_summary.json

Reproducibility: data order depends only on (seed, epoch) (DistributedSampler seeded with
the run seed, ``set_epoch``); each training sample's augmentation only on (seed, epoch,
index) (:class:`EpochSeeded`), so neither depends on DataLoader workers or DDP processes;
global generators (dropout) are re-seeded at every epoch start from (seed, epoch, rank); the
checkpoint holds model, optimiser, scheduler, EMA, scaler, RNG states and the selection /
early-stopping state, so a resumed run retraces an uninterrupted one exactly on CPU.
"""
from __future__ import annotations

import filecmp
import json
import logging
import math
import os
import pickle
import platform
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from benchmark import seed as seeding
from benchmark.errors import SewerbenchError
from benchmark.io import atomic_path, atomic_write_json
from benchmark.train import checkpointing as ck
from benchmark.train import distributed
from benchmark.train.data import (EpochSeeded, image_source, make_dataset, pos_weight, read_frame, targets_of,
                                  train_val_frames)
from benchmark.train.ema import ModelEma
from benchmark.train.optim import (PER_EPOCH, PER_ITERATION, build_optimizer, build_scheduler,
                                   current_lr, effective_lr)
from benchmark.train.predict import (AMP_DTYPES, autocast, build_model, infer, main_logits, to_input,
                                     write_scores)
from benchmark.train.tracking import Tracker

log = logging.getLogger(__name__)

#: Config keys that may change between a run and its resumption.
RESUME_FREE_KEYS = {"progress", "workers", "device", "eval_batch_size", "cache_workers", "data",
                    "compile", "stop_after_epoch"}


# ----------------------------------------------------------------------------- helpers
def _better(a: float, b: float | None, mode: str) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return False
    if b is None:
        return True
    return a > b if mode == "max" else a < b


def metric_key(selection: str, prefix: str = "") -> str:
    """History column of a selection metric: val_loss, val_mAP, ema_val_F2_CIW, ..."""
    return f"{prefix}{selection}" if selection == "val_loss" else f"{prefix}val_{selection}"


def eval_metrics(probs: np.ndarray, targets: np.ndarray, binary: bool) -> dict[str, float]:
    """Selection metrics: mAP, F2_CIW, F1_Normal (official) for 17 classes; for a binary
    run mAP = AP of Defect, F2_CIW = F2 of Defect, F1_Normal = F1 of Normal (score < 0.5)."""
    from benchmark import metrics as M

    if not binary:
        m = M.evaluate(probs, targets)
        return {"mAP": float(m["Main"]["mAP"]), "F2_CIW": float(m["New"]["F2"]),
                "F1_Normal": float(m["New"]["F1_Normal"])}
    s = np.asarray(probs, dtype=np.float64).reshape(-1)
    t = np.asarray(targets).reshape(-1) >= 1
    pred = s >= 0.5

    def fbeta(pos_t, pos_p, beta):
        nc = float(np.sum(pos_t & pos_p))
        npred = max(float(np.sum(pos_p)), 1.0)
        ng = float(np.sum(pos_t))
        p = nc / npred
        r = nc / ng if ng else 0.0
        den = beta * beta * p + r
        return (1 + beta * beta) * p * r / den if den > 0 else 0.0

    return {"mAP": float(M.average_precision(s, t.astype(np.int64))),
            "F2_CIW": fbeta(t, pred, 2.0), "F1_Normal": fbeta(~t, ~pred, 1.0),
            "accuracy": float(np.mean(pred == t)) if len(t) else float("nan")}


def build_criterion(cfg: dict, train_targets: np.ndarray, device: torch.device):
    """Loss of the recipe via ``methods.losses.build_loss``; ``pos_weight: auto`` = Sewer-ML
    class weights (N - N_c) / N_c from the training labels."""
    loss_cfg = dict(cfg.get("loss") or {"name": "bce"})
    name = loss_cfg.pop("name", "bce")
    if isinstance(loss_cfg.get("pos_weight"), str) and loss_cfg["pos_weight"] == "auto":
        loss_cfg["pos_weight"] = pos_weight(train_targets)
    elif loss_cfg.get("pos_weight") is not None:
        loss_cfg["pos_weight"] = torch.as_tensor(loss_cfg["pos_weight"], dtype=torch.float32)
    try:
        from methods.losses import build_loss
    except ImportError:
        build_loss = None
    if build_loss is not None:
        try:
            crit = build_loss(name, **loss_cfg)
        except TypeError as exc:
            raise SewerbenchError(f"run {cfg.get('run')}: loss {name}: {exc}") from None
    elif name == "bce":
        crit = nn.BCEWithLogitsLoss(pos_weight=loss_cfg.get("pos_weight"))
    else:
        raise SewerbenchError(f"loss {name!r} needs methods.losses, which is not available")
    return crit.to(device) if isinstance(crit, nn.Module) else crit


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        if not prefix and k in RESUME_FREE_KEYS:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


def _jsonable(cfg: dict) -> dict:
    return json.loads(json.dumps(cfg, default=str))


class _StopAfter(Exception):
    pass


# ----------------------------------------------------------------------------- public API
def train_run(cfg: dict, out_dir: str | os.PathLike, resume: bool = False,
              callback: Callable[[int, dict], None] | None = None,
              stop_after_epoch: int | None = None) -> dict:
    """Train run ``cfg`` into ``out_dir``; returns the train summary dict.

    ``resume``: continue from ``out_dir/checkpoint.pt`` when it exists (else start fresh).
    ``callback(epoch, metrics)`` runs after every epoch's checkpoint (may raise, e.g.
    optuna.TrialPruned). ``stop_after_epoch=k`` returns right after epoch k's checkpoint
    (simulates a killed run in tests); the summary then has ``"stopped_after": k``.
    """
    out_dir = Path(out_dir)
    cfg = _jsonable(cfg)
    if cfg.get("kind") == "sklearn":
        return _train_sklearn(cfg, out_dir)
    ctx = distributed.init(cfg.get("device", "auto"))
    try:
        return _Trainer(cfg, out_dir, ctx, resume, callback, stop_after_epoch).run()
    finally:
        ctx.close()


class _Trainer:
    def __init__(self, cfg, out_dir, ctx, resume, callback, stop_after_epoch):
        self.cfg, self.out, self.ctx = cfg, Path(out_dir), ctx
        self.resume, self.callback, self.stop_after = resume, callback, stop_after_epoch
        self.device = ctx.device
        self.main = ctx.is_main

    # ------------------------------------------------------------------ setup
    def _check_resume(self) -> dict | None:
        ck_path = self.out / ck.CHECKPOINT
        if not (self.resume and ck_path.is_file()):
            return None
        state = ck.load(ck_path)
        diff = _config_diff(state.get("config", {}), self.cfg)
        if diff:
            raise SewerbenchError(f"{ck_path}: cannot resume: the configuration changed "
                                  f"({', '.join(diff[:8])}); use a new --out or drop --resume")
        return state

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        seeding.seed_everything(cfg["seed"], bool(cfg.get("deterministic", True)))
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out / "config.json", cfg)
        gb = int(cfg["batch_size"])
        if gb % ctx.world_size:
            raise SewerbenchError(f"run {cfg['run']}: batch_size {gb} is not divisible by the "
                                  f"{ctx.world_size} processes")
        # ---- data
        self.images = image_source(cfg, ctx)
        train_df, val_df = train_val_frames(cfg)
        self.train_ds = EpochSeeded(make_dataset(train_df, self.images, cfg, train=True), cfg["seed"])
        self.val_ds = make_dataset(val_df, self.images, cfg, train=False)
        self.train_targets = np.asarray(self.train_ds.targets)
        full_targets = targets_of(train_df, False)  # 17-class labels (label graphs need them)
        per_rank = gb // ctx.world_size
        n_rank = len(self.train_ds) // ctx.world_size
        self.drop_last = n_rank >= per_rank
        if not self.drop_last:
            log.warning("training set (%d images) smaller than one global batch (%d): keeping the "
                        "partial batch", len(self.train_ds), gb)
        self.sampler = DistributedSampler(self.train_ds, num_replicas=ctx.world_size, rank=ctx.rank,
                                          shuffle=True, seed=int(cfg["seed"]), drop_last=True)
        self.per_rank_batch = per_rank
        self.steps_per_epoch = (len(self.sampler) // per_rank if self.drop_last
                                else math.ceil(len(self.sampler) / per_rank))
        if self.steps_per_epoch < 1:
            raise SewerbenchError(f"run {cfg['run']}: no training batches (train set {len(self.train_ds)})")

        # ---- model
        seeding.seed_everything(cfg["seed"], bool(cfg.get("deterministic", True)))
        model = build_model(cfg, full_targets)
        if not isinstance(model, nn.Module):
            raise SewerbenchError(f"run {cfg['run']}: {cfg['method']} did not build a torch model")
        self.n_params = sum(p.numel() for p in model.parameters())
        self.n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        model.to(self.device)
        if cfg.get("channels_last"):
            model.to(memory_format=torch.channels_last)
        self.model = model
        ema_cfg = cfg.get("ema") or {}
        self.ema = ModelEma(model, float(ema_cfg.get("decay", 0.9997))) if ema_cfg.get("enabled") else None
        self.criterion = build_criterion(cfg, self.train_targets, self.device)
        self.optimizer = build_optimizer(model, cfg["optimizer"], gb)
        self.lr = effective_lr(cfg["optimizer"], gb)
        self.scheduler, self.sched_when = build_scheduler(self.optimizer, cfg.get("schedule"), cfg["epochs"],
                                                          self.steps_per_epoch, self.lr)
        amp_dtype = AMP_DTYPES.get(str(cfg.get("amp_dtype", "float16")).lower(), torch.float16)
        use_scaler = bool(cfg.get("amp")) and amp_dtype == torch.float16  # fp16 needs loss scaling
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        net: nn.Module = model
        if ctx.distributed:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.get("compile"):
            net = torch.compile(net)
        self.net = net

    # ------------------------------------------------------------------ state
    def state(self, epoch: int, finished: bool) -> dict:
        return {
            "format": 1, "epoch": epoch, "finished": finished, "config": self.cfg,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict(),
            "rng": seeding.rng_state(),
            "selection": dict(self.sel),
            "history": list(self.tracker_rows),
            "train_seconds": self.train_seconds, "train_images": self.train_images,
        }

    def load_state(self, st: dict) -> None:
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        if self.scheduler is not None and st.get("scheduler") is not None:
            self.scheduler.load_state_dict(st["scheduler"])
        if self.ema is not None and st.get("ema") is not None:
            self.ema.module.load_state_dict(st["ema"])
        self.scaler.load_state_dict(st["scaler"])
        seeding.set_rng_state(st["rng"])
        self.sel = dict(st["selection"])
        self.tracker_rows = list(st["history"])
        self.train_seconds = float(st.get("train_seconds", 0.0))
        self.train_images = int(st.get("train_images", 0))

    # ------------------------------------------------------------------ epoch
    def _loss(self, out, y):
        if isinstance(out, (tuple, list)) and len(out) == 2 and torch.is_tensor(out[1]):
            main, aux = out
            return (self.criterion(main.float(), y)
                    + float(self.cfg.get("aux_loss_weight", 0.4)) * self.criterion(aux.float(), y))
        return self.criterion(main_logits(out).float(), y)

    def train_epoch(self, epoch: int) -> dict:
        from tqdm.auto import tqdm

        cfg, ctx = self.cfg, self.ctx
        seeding.seed_step(cfg["seed"], "epoch", epoch, ctx.rank)
        self.sampler.set_epoch(epoch)
        self.train_ds.set_epoch(epoch)
        gen = torch.Generator().manual_seed(seeding.derive_seed(cfg["seed"], "loader", epoch, ctx.rank))
        loader = DataLoader(self.train_ds, batch_size=self.per_rank_batch, sampler=self.sampler,
                            num_workers=int(cfg.get("workers", 0)), drop_last=self.drop_last,
                            pin_memory=self.device.type == "cuda", worker_init_fn=seeding.worker_init_fn,
                            generator=gen, persistent_workers=False)
        self.net.train()
        clip = cfg.get("grad_clip")
        show = self.main and cfg.get("progress", True)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg['epochs']}", unit="batch", leave=False,
                   disable=None if show else True)
        loss_sum, seen = 0.0, 0
        t0 = time.perf_counter()
        for step, (x, y, _) in enumerate(bar):
            x = to_input(x, self.device, cfg.get("channels_last", False))
            y = y.to(self.device, non_blocking=True).float()
            self.optimizer.zero_grad(set_to_none=True)
            with autocast(self.device, cfg):
                out = self.net(x)
            loss = self._loss(out, y)
            if not torch.isfinite(loss):
                raise SewerbenchError(f"run {cfg['run']}: training diverged: loss {float(loss)} at "
                                      f"epoch {epoch + 1}, step {step + 1} (lower the lr or enable grad_clip)")
            self.scaler.scale(loss).backward()
            if clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.sched_when == PER_ITERATION:
                with warnings.catch_warnings():  # a step skipped by the fp16 scaler is expected
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                    self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)
            n = x.shape[0]
            loss_sum += float(loss.detach()) * n
            seen += n
            if show and (step % 5 == 0 or step + 1 == len(loader)):
                dt = max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{seen * ctx.world_size / dt:.1f}")
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        if self.sched_when == PER_EPOCH:
            self.scheduler.step()
        loss_sum, seen, dt_max = ctx.all_reduce_sum([loss_sum, float(seen), dt])
        return {"train_loss": loss_sum / max(seen, 1.0), "images": int(seen), "seconds": dt / ctx.world_size}

    def validate(self, epoch: int) -> dict:
        out: dict[str, float] = {}
        models = [("", self.model)]
        if self.ema is not None:
            models.append(("ema_", self.ema.module))
        for prefix, m in models:
            res = infer(m, self.val_ds, self.cfg, self.device, self.ctx, self.criterion,
                        desc=f"val{' ema' if prefix else ''}")
            out[f"{prefix}val_loss"] = float(res["loss"])
            for k, v in eval_metrics(res["probs"], res["targets"], self.cfg["binary"]).items():
                out[f"{prefix}val_{k}"] = v
        return out

    def select(self, epoch: int, metrics: dict) -> tuple[bool, str]:
        """Reference model selection: the better of plain and EMA competes with the best so far."""
        key, mode = self.cfg["selection"], self.cfg["selection_mode"]
        plain = metrics[metric_key(key)]
        ema = metrics.get(metric_key(key, "ema_"))
        which, score = "plain", plain
        if ema is not None and _better(ema, plain, mode):
            which, score = "ema", ema
        s = self.sel
        if _better(plain, s.get("best_plain"), mode):
            s["best_plain"], s["best_plain_epoch"] = plain, epoch
        if ema is not None and _better(ema, s.get("best_ema"), mode):
            s["best_ema"], s["best_ema_epoch"] = ema, epoch
        s["last_ema"] = ema
        is_best = _better(score, s.get("best"), mode)
        if is_best:
            s.update(best=score, best_epoch=epoch, best_which=which)
        return is_best, which

    def should_stop(self, epoch: int) -> str | None:
        cfg, s = self.cfg, self.sel
        es = cfg.get("early_stop") or {}
        patience = es.get("patience") if isinstance(es, dict) else es
        if patience is not None and s.get("best_epoch", -1) >= 0:
            last_best = max(s["best_epoch"], s.get("best_plain_epoch", -1))
            # the reference also requires the EMA score to be below its best
            ema_stalled = s.get("last_ema") is None or s["last_ema"] != s.get("best_ema")
            if epoch - last_best > int(patience) and ema_stalled:
                return f"early stop: no improvement for {epoch - last_best} epochs"
        if cfg.get("stop_epoch") is not None and epoch >= int(cfg["stop_epoch"]):
            return f"stop_epoch {cfg['stop_epoch']} reached"
        return None

    # ------------------------------------------------------------------ main
    def run(self) -> dict:
        cfg, ctx = self.cfg, self.ctx
        t_start = time.perf_counter()
        st = self._check_resume()
        self.setup()
        self.sel: dict[str, Any] = {"best": None, "best_epoch": -1}
        self.tracker_rows: list[dict] = []
        self.train_seconds, self.train_images = 0.0, 0
        start_epoch, finished = 0, False
        if st is not None:
            self.load_state(st)
            start_epoch, finished = int(st["epoch"]) + 1, bool(st.get("finished"))
            log.info("resuming %s after epoch %d", cfg["run"], st["epoch"] + 1)
        tracker = Tracker(self.out, self.main, cfg, self.tracker_rows)
        self.tracker_rows = tracker.rows
        stop_reason = None
        epoch = start_epoch - 1
        try:
            for epoch in range(start_epoch, 0 if finished else cfg["epochs"]):
                t_ep = time.perf_counter()
                tr = self.train_epoch(epoch)
                self.train_seconds += tr["seconds"]
                self.train_images += tr["images"]
                metrics = self.validate(epoch)
                is_best, which = self.select(epoch, metrics)
                row = {"epoch": epoch + 1, "lr": current_lr(self.optimizer), "train_loss": tr["train_loss"],
                       **metrics, "selected": self.sel["best"],
                       "images_per_s": tr["images"] / max(tr["seconds"], 1e-9),
                       "epoch_seconds": time.perf_counter() - t_ep}
                tracker.log_epoch(row)
                if self.main:
                    log.info("epoch %d/%d: train_loss %.4f, val %s %.4f%s%s", epoch + 1, cfg["epochs"],
                             tr["train_loss"], cfg["selection"], metrics[metric_key(cfg["selection"])],
                             f" (ema {metrics[metric_key(cfg['selection'], 'ema_')]:.4f})" if self.ema else "",
                             " *best*" if is_best else "")
                if is_best and self.main:
                    src = self.ema.module if which == "ema" else self.model
                    ck.save({"state_dict": src.state_dict(), "epoch": epoch + 1, "which": which,
                             "selection": cfg["selection"], "score": self.sel["best"]},
                            self.out / ck.BEST)
                stop_reason = self.should_stop(epoch)
                last = stop_reason is not None or epoch + 1 == cfg["epochs"]
                if self.main:
                    ck.save(self.state(epoch, finished=last), self.out / ck.CHECKPOINT)
                ctx.barrier()
                if self.callback is not None:
                    self.callback(epoch, row)
                if self.stop_after is not None and epoch >= int(self.stop_after) and not last:
                    raise _StopAfter()
                if stop_reason:
                    log.info("%s", stop_reason)
                    break
        except _StopAfter:
            tracker.close()
            return {"stopped_after": epoch, "history": list(self.tracker_rows)}
        tracker.close()
        return self.finish(t_start, stop_reason)

    def finish(self, t_start: float, stop_reason: str | None) -> dict:
        cfg, ctx = self.cfg, self.ctx
        ctx.barrier()
        if not (self.out / ck.BEST).is_file():  # every score was nan: keep the last weights
            log.warning("no epoch had a finite %s: using the last weights", cfg["selection"])
            if self.main:
                ck.save({"state_dict": self.model.state_dict(), "epoch": len(self.tracker_rows),
                         "which": "plain", "selection": cfg["selection"], "score": float("nan")},
                        self.out / ck.BEST)
            ctx.barrier()
        best = ck.load(self.out / ck.BEST)
        self.model.load_state_dict(best["state_dict"])
        preds = predict_splits(cfg, self.model, self.images, self.device, ctx, self.out)
        summary = {
            "run": cfg["run"], "method": cfg["method"], "recipe": cfg["recipe"], "profile": cfg["profile"],
            "split": cfg.get("split"), "target": cfg["target"], "train_on": cfg["train_on"],
            "seed": cfg["seed"],
            "best_epoch": int(best["epoch"]), "selected_model": best["which"],
            "selection_metric": cfg["selection"], "selection_score": float(best["score"]),
            "epochs_run": len(self.tracker_rows), "epochs_planned": cfg["epochs"],
            "stop_reason": stop_reason or "epochs completed",
            "wall_seconds": time.perf_counter() - t_start,
            "train_seconds": self.train_seconds,
            "train_images_per_s": self.train_images / max(self.train_seconds, 1e-9),
            "device": describe_device(self.device), "world_size": ctx.world_size,
            "amp": bool(cfg.get("amp")), "amp_dtype": cfg.get("amp_dtype") if cfg.get("amp") else None,
            "params": int(self.n_params), "trainable_params": int(self.n_trainable),
            "reference_num_params": getattr(self.model, "reference_num_params", None),
            "train_images": len(self.train_ds), "val_images": len(self.val_ds),
            "final": self.tracker_rows[-1] if self.tracker_rows else {},
            "scores": preds,
        }
        if self.main:
            atomic_write_json(self.out / "train_summary.json", _jsonable(summary))
        ctx.barrier()
        return summary


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def eval_sets(cfg: dict) -> dict[str, str]:
    """Which CSV each scores file comes from: val (full val), val_sub (the split's own val
    set, subset-trained runs only), test."""
    d = cfg["data"]
    sets = {"val": d["full_val_csv"]}
    if (os.path.normpath(d["val_csv"]) != os.path.normpath(d["full_val_csv"])
            and not filecmp.cmp(d["val_csv"], d["full_val_csv"], shallow=False)):
        sets["val_sub"] = d["val_csv"]  # subset-trained runs: the paper's starred rows
    if d.get("test_csv") and Path(d["test_csv"]).is_file():
        sets["test"] = d["test_csv"]
    elif d.get("test_csv"):
        log.warning("%s not found: no scores_test.csv", d["test_csv"])
    return sets


def predict_splits(cfg: dict, model, images, device, ctx, out_dir: Path) -> dict:
    """Write scores_<set>.csv for every evaluation set; returns {set: file name}."""
    written = {}
    for name, csv in eval_sets(cfg).items():
        df = read_frame(csv, require_labels=False)
        ds = make_dataset(df, images, cfg, train=False)
        res = infer(model, ds, cfg, device, ctx, desc=f"predict {name}")
        if ctx is None or ctx.is_main:
            write_scores(out_dir / f"scores_{name}.csv", res["filenames"], res["probs"], cfg["binary"])
        written[name] = f"scores_{name}.csv"
    return written


# ----------------------------------------------------------------------------- scikit-learn
SK_CHUNK = 2048


def _sk_chunks(df, images, cfg: dict, chunk: int = SK_CHUNK):
    """Yield ((n, H, W, 3) uint8 images at the run's resolution, filenames) in order."""
    from benchmark.data.dataset import SewerMLDataset
    from benchmark.data.transforms import build_transform

    size = int(cfg["image_size"])
    ds = SewerMLDataset(df, images, None)
    need_resize = getattr(images, "image_size", None) != (size, size)
    tf = build_transform("none", size, False) if need_resize else None
    for lo in range(0, len(ds), chunk):
        arrs = []
        for i in range(lo, min(len(ds), lo + chunk)):
            img = ds.load(i)
            if tf is not None:
                img = (tf(img).permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
            arrs.append(img)
        yield np.stack(arrs), ds.filenames[lo:lo + chunk]


def sklearn_inputs(df, images, cfg: dict, model=None) -> tuple[np.ndarray, list[str]]:
    """Model inputs of a frame and their filenames: the model's features computed chunk by
    chunk when it has ``features`` (GIST: 512 floats per image instead of the image), else
    the (N, H, W, 3) uint8 images."""
    xs, names = [], []
    use_features = model is not None and hasattr(model, "features") and hasattr(model, "fit_features")
    for x, n in _sk_chunks(df, images, cfg):
        xs.append(model.features(x) if use_features else x)
        names += list(n)
    if not xs:
        size = int(cfg["image_size"])
        return np.zeros((0, size, size, 3), np.uint8), []
    return np.concatenate(xs), names


def sklearn_predict(model, df, images, cfg: dict) -> tuple[list[str], np.ndarray]:
    x, names = sklearn_inputs(df, images, cfg, model)
    if hasattr(model, "predict_proba_features") and hasattr(model, "features"):
        probs = model.predict_proba_features(x)
    else:
        probs = model.predict_proba(x)
    return names, np.asarray(probs, dtype=np.float64).reshape(len(names), -1)


def _train_sklearn(cfg: dict, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    seeding.seed_everything(cfg["seed"])
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "config.json", cfg)
    images = image_source(cfg)
    train_df, val_df = train_val_frames(cfg)
    model = build_model({**cfg, "model": {**(cfg.get("model") or {}), **(cfg.get("sklearn") or {})}})
    t_fit = time.perf_counter()
    x, _ = sklearn_inputs(train_df, images, cfg, model)
    y = targets_of(train_df, cfg["binary"])
    y = (y[:, 0] if cfg["binary"] else y).astype(np.int64)
    if hasattr(model, "fit_features") and hasattr(model, "features"):
        model.fit_features(x, y)
    else:
        model.fit(x, y)
    fit_s = time.perf_counter() - t_fit
    with atomic_path(out_dir / "model.pkl") as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)

    _, pv = sklearn_predict(model, val_df, images, cfg)
    yv = targets_of(val_df, cfg["binary"])
    metrics = {f"val_{k}": v for k, v in eval_metrics(pv, yv, cfg["binary"]).items()}
    row = {"epoch": 1, "train_seconds": fit_s, "images_per_s": len(x) / max(fit_s, 1e-9), **metrics}
    tracker = Tracker(out_dir, True, cfg)
    tracker.log_epoch(row)
    tracker.close()
    written = {}
    for name, csv in eval_sets(cfg).items():
        names, probs = sklearn_predict(model, read_frame(csv, require_labels=False), images, cfg)
        write_scores(out_dir / f"scores_{name}.csv", names, probs, cfg["binary"])
        written[name] = f"scores_{name}.csv"
    summary = {
        "run": cfg["run"], "method": cfg["method"], "recipe": cfg["recipe"], "profile": cfg["profile"],
        "split": cfg.get("split"), "target": cfg["target"], "train_on": cfg["train_on"], "seed": cfg["seed"],
        "best_epoch": 1, "selected_model": "plain", "selection_metric": cfg["selection"],
        "selection_score": metrics.get(metric_key(cfg["selection"])),
        "epochs_run": 1, "stop_reason": "fitted",
        "wall_seconds": time.perf_counter() - t0, "train_seconds": fit_s,
        "train_images_per_s": len(x) / max(fit_s, 1e-9), "device": describe_device(torch.device("cpu")),
        "world_size": 1, "params": None, "train_images": int(len(x)), "val_images": int(len(pv)),
        "final": row, "scores": written,
    }
    atomic_write_json(out_dir / "train_summary.json", _jsonable(summary))
    return summary
