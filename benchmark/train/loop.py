"""The training loop of every neural method: setup, one epoch, validation, checkpoints.

Reproducibility: data order depends only on (seed, epoch) (DistributedSampler seeded with
the run seed, ``set_epoch``); each training sample's augmentation only on (seed, epoch,
index) (:class:`EpochSeeded`), so neither depends on DataLoader workers or DDP processes;
global generators (dropout) are re-seeded at every epoch start from (seed, epoch, rank); the
checkpoint holds model, optimiser, scheduler, EMA, scaler, RNG states and the selection /
early-stopping state, so a resumed run retraces an uninterrupted one exactly on CPU.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from benchmark import quirks
from benchmark import seed as seeding
from benchmark.config import RunConfig
from benchmark.cpus import cpu_supports_bf16
from benchmark.errors import SewerbenchError
from benchmark.io import atomic_write_json, claim_dir
import benchmark.train.checkpointing as ck
from benchmark.train.data import EpochSeeded, image_source, make_dataset, targets_of, train_val_frames
from benchmark.train.ema import ModelEma
from benchmark.train.inference import predict_splits
from benchmark.train.optim import (PER_EPOCH, PER_ITERATION, build_optimizer, build_scheduler, current_lr,
                                   effective_lr, fused_for)
from benchmark.train.runtime import (amp_dtype, autocast, build_criterion, build_model, infer, main_logits,
                                     native_precision, to_input)
from benchmark.train.selection import Selector, eval_metrics, metric_key
from benchmark.train.summary import config_diff, make_summary
from benchmark.train.tracking import Tracker

log = logging.getLogger("benchmark.train.engine")
#: The warning of a run asking for bf16 autocast on a CPU that only emulates it.
EMULATED_BF16 = ("run %s: bf16 autocast on a CPU without native bf16 (AVX512-BF16 / AMX) is emulated and "
                 "slower than fp32 (1.7-2.4x for the tiny models); --set amp=false or amp_native_only=true "
                 "trains in fp32")


def epoch_stats(ctx, loss_sum: float, seen: int, seconds: float) -> dict:
    """One epoch's training loss, images and seconds over all ranks: the loss per image and the
    images of every rank, over the ranks' mean epoch time (images/s of the whole job)."""
    loss_sum, seen, seconds_sum = ctx.all_reduce_sum([loss_sum, float(seen), seconds])
    return {"train_loss": loss_sum / max(seen, 1.0), "images": int(seen),
            "seconds": seconds_sum / ctx.world_size}


class Trainer:
    def __init__(self, cfg: RunConfig, out_dir: Path, ctx, resume: bool,
                 callback: Callable[[int, dict], None] | None):
        self.cfg, self.out, self.ctx = native_precision(cfg, ctx.device), Path(out_dir), ctx
        if self.cfg is not cfg and ctx.is_main:
            log.info("run %s: this CPU has no native bf16 (amp_native_only): training and scoring in fp32",
                     cfg.run)
        self.resume, self.callback = resume, callback
        self.device = ctx.device
        self.main = ctx.is_main

    # ------------------------------------------------------------------ setup
    def _check_resume(self) -> dict | None:
        ck_path = self.out / ck.CHECKPOINT
        if not (self.resume and ck_path.is_file()):
            return None
        state = ck.load(ck_path)
        diff = config_diff(state.get("config", {}), self.cfg.to_dict())
        if diff:
            raise SewerbenchError(f"{ck_path}: cannot resume: the configuration changed "
                                  f"({', '.join(diff[:8])}); use a new --out or drop --resume")
        return state

    def setup(self) -> None:
        cfg, ctx, rt = self.cfg, self.ctx, self.cfg.runtime
        seeding.seed_everything(cfg.seed, rt.deterministic)
        gb = cfg.batch_size
        if gb % ctx.world_size:
            raise SewerbenchError(f"run {cfg.run}: batch_size {gb} is not divisible by the "
                                  f"{ctx.world_size} processes")
        if (ctx.world_size > 1 and quirks.active(cfg, "maq2l_ddp_batch")
                and gb // ctx.world_size != quirks.MAQ2L_TRAIN_BATCH):
            raise SewerbenchError(
                f"run {cfg.run}: MA-Q2L's reference mask tiling mixes the maps of the samples of one "
                f"per-GPU batch; the published numbers come from one GPU at batch {quirks.MAQ2L_TRAIN_BATCH}, "
                f"but {ctx.world_size} processes at batch_size {gb} give {gb // ctx.world_size} per GPU. "
                f"Use --set batch_size={quirks.MAQ2L_TRAIN_BATCH * ctx.world_size} (global batch "
                f"{quirks.MAQ2L_TRAIN_BATCH * ctx.world_size}, lr unchanged), one process, or protocol=corrected")
        if ctx.world_size > 1 and self.main and quirks.active(cfg, "maq2l_ddp_batch"):
            log.info("MA-Q2L on %d processes: %d per GPU (the reference tiling), global batch %d, lr %g",
                     ctx.world_size, quirks.MAQ2L_TRAIN_BATCH, gb, cfg.optimizer.lr)
        # ---- data
        self.images = image_source(cfg, ctx)
        train_df, val_df = train_val_frames(cfg)
        self.train_ds = EpochSeeded(make_dataset(train_df, self.images, cfg, train=True), cfg.seed)
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
                                          shuffle=True, seed=cfg.seed, drop_last=True)
        self.per_rank_batch = per_rank
        self.steps_per_epoch = (len(self.sampler) // per_rank if self.drop_last
                                else math.ceil(len(self.sampler) / per_rank))
        if rt.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, max(1, int(rt.max_steps_per_epoch)))
        if self.steps_per_epoch < 1:
            raise SewerbenchError(f"run {cfg.run}: no training batches (train set {len(self.train_ds)})")

        # ---- model
        seeding.seed_everything(cfg.seed, rt.deterministic)
        model = build_model(cfg, full_targets)
        if not isinstance(model, nn.Module):
            raise SewerbenchError(f"run {cfg.run}: {cfg.method} did not build a torch model")
        self.n_params = sum(p.numel() for p in model.parameters())
        self.n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        model.to(self.device)
        if rt.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.ema = ModelEma(model, cfg.ema.decay) if cfg.ema.enabled else None
        self.criterion = build_criterion(cfg, self.train_targets, self.device)
        opt_cfg = cfg.optimizer.__dict__
        self.optimizer = build_optimizer(model, opt_cfg, gb, fused=fused_for(model, self.device))
        self.lr = effective_lr(opt_cfg, gb)
        self.scheduler, self.sched_when = build_scheduler(self.optimizer, cfg.schedule.__dict__, cfg.epochs,
                                                          self.steps_per_epoch, self.lr)
        use_scaler = rt.amp and amp_dtype(cfg) == torch.float16  # fp16 needs loss scaling
        if (rt.amp and self.main and self.device.type == "cpu" and amp_dtype(cfg) == torch.bfloat16
                and not cpu_supports_bf16()):
            log.warning(EMULATED_BF16, cfg.run)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        net: nn.Module = model
        if ctx.distributed:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if rt.compile:
            net = torch.compile(net)
        self.net = net
        # every input is valid: the run folder is written from here on
        if self.main:
            claim_dir(self.out, "train", run=cfg.run)
            atomic_write_json(self.out / "config.json", cfg.to_dict())

    # ------------------------------------------------------------------ state
    def state(self, epoch: int, finished: bool) -> dict:
        return {
            "format": 1, "epoch": epoch, "finished": finished, "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict(),
            "rng": seeding.rng_state(),
            "selection": dict(self.selector.state),
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
        self.selector = Selector(self.cfg, st["selection"])
        self.tracker_rows = list(st["history"])
        self.train_seconds = float(st.get("train_seconds", 0.0))
        self.train_images = int(st.get("train_images", 0))

    # ------------------------------------------------------------------ epoch
    def _loss(self, out, y):
        if isinstance(out, (tuple, list)) and len(out) == 2 and torch.is_tensor(out[1]):
            main, aux = out
            return self.criterion(main.float(), y) + self.cfg.aux_loss_weight * self.criterion(aux.float(), y)
        return self.criterion(main_logits(out).float(), y)

    def train_epoch(self, epoch: int) -> dict:
        from tqdm.auto import tqdm

        cfg, ctx, rt = self.cfg, self.ctx, self.cfg.runtime
        seeding.seed_step(cfg.seed, "epoch", epoch, ctx.rank)
        self.sampler.set_epoch(epoch)
        self.train_ds.set_epoch(epoch)
        gen = torch.Generator().manual_seed(seeding.derive_seed(cfg.seed, "loader", epoch, ctx.rank))
        loader = DataLoader(self.train_ds, batch_size=self.per_rank_batch, sampler=self.sampler,
                            num_workers=rt.workers, drop_last=self.drop_last,
                            pin_memory=self.device.type == "cuda", worker_init_fn=seeding.worker_init_fn,
                            generator=gen, persistent_workers=False)
        self.net.train()
        clip = cfg.grad_clip
        show = self.main and rt.progress
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                   disable=None if show else True)
        loss_sum, seen = 0.0, 0
        t0 = time.perf_counter()
        for step, (x, y, _) in enumerate(bar):
            if step >= self.steps_per_epoch:   # runtime.max_steps_per_epoch
                break
            x = to_input(x, self.device, rt.channels_last)
            y = y.to(self.device, non_blocking=True).float()
            self.optimizer.zero_grad(set_to_none=True)
            with autocast(self.device, cfg):
                out = self.net(x)
            loss = self._loss(out, y)
            if not torch.isfinite(loss):
                raise SewerbenchError(f"run {cfg.run}: training diverged: loss {float(loss)} at "
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
        return epoch_stats(ctx, loss_sum, seen, dt)

    def validate(self, epoch: int) -> dict:
        out: dict[str, float] = {}
        models = [("", self.model)]
        if self.ema is not None:
            models.append(("ema_", self.ema.module))
        for prefix, m in models:
            res = infer(m, self.val_ds, self.cfg, self.device, self.ctx, self.criterion,
                        batch_size=self.cfg.batch_size if quirks.active(self.cfg, "maq2l_val_batch") else None,
                        desc=f"val{' ema' if prefix else ''}")
            out[f"{prefix}val_loss"] = float(res["loss"])
            for k, v in eval_metrics(res["probs"], res["targets"], self.cfg.binary).items():
                out[f"{prefix}val_{k}"] = v
        return out

    def _save_best(self, which: str, epoch: int) -> None:
        saved = "plain" if quirks.active(self.cfg, "asl_saves_plain") else which
        src = self.ema.module if saved == "ema" else self.model
        ck.save({"state_dict": src.state_dict(), "epoch": epoch + 1, "which": saved, "selected": which,
                 "selection": self.cfg.selection, "score": self.selector.state["best"]},
                self.out / ck.BEST)

    # ------------------------------------------------------------------ main
    def run(self) -> dict:
        cfg, ctx = self.cfg, self.ctx
        t_start = time.perf_counter()
        st = self._check_resume()
        self.setup()
        self.selector = Selector(cfg)
        self.tracker_rows: list[dict] = []
        self.train_seconds, self.train_images = 0.0, 0
        start_epoch, finished = 0, False
        if st is not None:
            self.load_state(st)
            start_epoch, finished = int(st["epoch"]) + 1, bool(st.get("finished"))
            log.info("resuming %s after epoch %d", cfg.run, st["epoch"] + 1)
        tracker = Tracker(self.out, self.main, cfg.to_dict(), self.tracker_rows)
        self.tracker_rows = tracker.rows
        stop_reason = None
        key = cfg.selection
        try:
            for epoch in range(start_epoch, 0 if finished else cfg.epochs):
                t_ep = time.perf_counter()
                tr = self.train_epoch(epoch)
                self.train_seconds += tr["seconds"]
                self.train_images += tr["images"]
                metrics = self.validate(epoch)
                is_best, which = self.selector.select(epoch, metrics)
                row = {"epoch": epoch + 1, "lr": current_lr(self.optimizer), "train_loss": tr["train_loss"],
                       **metrics, "selected": self.selector.state["best"],
                       "images_per_s": tr["images"] / max(tr["seconds"], 1e-9),
                       "epoch_seconds": time.perf_counter() - t_ep}
                tracker.log_epoch(row)
                if self.main:
                    log.info("epoch %d/%d: train_loss %.4f, val %s %.4f%s%s", epoch + 1, cfg.epochs,
                             tr["train_loss"], key, metrics[metric_key(key)],
                             f" (ema {metrics[metric_key(key, 'ema_')]:.4f})" if self.ema else "",
                             " *best*" if is_best else "")
                if is_best and self.main:
                    self._save_best(which, epoch)
                stop_reason = self.selector.should_stop(epoch)
                last = stop_reason is not None or epoch + 1 == cfg.epochs
                if self.main:
                    ck.save(self.state(epoch, finished=last), self.out / ck.CHECKPOINT)
                ctx.barrier()
                if self.callback is not None:
                    self.callback(epoch, row)
                if stop_reason:
                    log.info("%s", stop_reason)
                    break
        finally:
            tracker.close()
        return self.finish(t_start, stop_reason)

    def finish(self, t_start: float, stop_reason: str | None) -> dict:
        cfg, ctx = self.cfg, self.ctx
        ctx.barrier()
        if not (self.out / ck.BEST).is_file():  # every score was nan: keep the last weights
            log.warning("no epoch had a finite %s: using the last weights", cfg.selection)
            if self.main:
                ck.save({"state_dict": self.model.state_dict(), "epoch": len(self.tracker_rows),
                         "which": "plain", "selection": cfg.selection, "score": float("nan")},
                        self.out / ck.BEST)
            ctx.barrier()
        best = ck.load(self.out / ck.BEST)
        self.model.load_state_dict(best["state_dict"])
        preds = predict_splits(cfg, self.model, self.images, self.device, ctx, self.out)
        summary = make_summary(
            cfg, best_epoch=int(best["epoch"]), selected_model=best.get("selected", best["which"]),
            selection_score=float(best["score"]), epochs_run=len(self.tracker_rows),
            stop_reason=stop_reason or "epochs completed", wall_seconds=time.perf_counter() - t_start,
            train_seconds=self.train_seconds, train_images_seen=self.train_images, device=self.device,
            world_size=ctx.world_size, params=int(self.n_params), trainable_params=int(self.n_trainable),
            reference_num_params=getattr(self.model, "reference_num_params", None),
            train_images=len(self.train_ds), val_images=len(self.val_ds),
            final=self.tracker_rows[-1] if self.tracker_rows else {}, scores=preds)
        if self.main:
            atomic_write_json(self.out / "train_summary.json", summary)
        ctx.barrier()
        return summary
