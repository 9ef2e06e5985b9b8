"""Paper dry run: the whole DVC pipeline under the ``paper`` profile on a mini Sewer-ML.

``sewerbench dryrun --out DIR`` (:func:`run_dryrun`) checks on a CPU, in minutes to an hour,
that the ``paper`` profile runs from ``prepare`` to ``plots``: reference model sizes and
recipes, real-data code paths (no ``meta.json``, official CSVs, PNG frames of real sizes in
several folders), local pretrained-weight files. What it changes, and only in its own copy
of params.yaml: CPU runtime (device, workers, no AMP), one epoch of ``--steps`` optimiser
steps per run (``max_steps_per_epoch``; the schedule follows), a small batch, a tiny synth
stage, and the 1/16 subset by the systematic rule (``data.subset_rule: systematic``: the
mini folder cannot hold the published subset files' 65,008 filenames). Its numbers mean
nothing; that every stage runs and writes every table is what it shows.

Layout of DIR:

- ``sewerml/``: ``SewerML_Train.csv`` / ``SewerML_Val.csv`` (official header, real label rows
  drawn without replacement from the published 1/16 subset files, their real filenames),
  ``SewerML_Test.csv`` (Filename only, as the public file), frames under
  ``images/Train00 ...`` (:func:`build_mini_sewerml`).
- ``weights/``: random-valued ImageNet-layout weight files for the runs whose recipe loads
  pretrained weights (torchvision ResNet-101 for MA-Q2L / Q2L, timm TResNet-L for ASL ...),
  BatchNorm statistics measured on noise so activations keep a sane scale
  (:func:`write_pretrained_weights`).
- ``project/``: params.yaml (:func:`dryrun_params`), dvc.yaml rendered from it, the code and
  ``data/splits`` the stages depend on; ``dvc init --no-scm`` with a hardlink cache (the
  multi-GB checkpoints are not stored twice) and ``dvc repro`` run there.
- ``dryrun.log`` (the DVC output), ``dryrun_state.json`` (setup and per-stage wall times,
  updated as stages finish, so ``--resume`` can continue an interrupted run), ``dryrun.json``
  (the summary: stage wall times, parameter counts, outputs checked).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from benchmark.classes import CLASS_CODES, CSV_COLUMNS
from benchmark.errors import SewerbenchError
from benchmark.repro import dvc_command, dvc_env

log = logging.getLogger(__name__)

NAME = "dryrun"
#: Official file names of the mini folder (benchmark.data.splits.SOURCE_FILES without test_gt).
CSV_FILES = {"train": "SewerML_Train.csv", "val": "SewerML_Val.csv", "test": "SewerML_Test.csv"}
#: Frame sizes (width, height) of real Sewer-ML videos (the range is 350x284 to 768x576).
FRAME_SIZES = ((704, 576), (720, 576), (352, 288), (768, 576), (350, 284))
#: Sub-folders per split the frames are spread over (round robin).
FOLDERS_PER_SPLIT = 3
IMAGE_DIR = "images"
DEFAULT_IMAGES = 48          # train frames; val = images // 2, test = images // 3
MIN_IMAGES = 6
DEFAULT_STEPS = 2
DEFAULT_BATCH = 4
#: Seeds kept per run with ``seeds:`` (the first ones): two exercise the train_seed /
#: evaluate_seed stages and the seed-aware tables at one extra training per such run.
DEFAULT_MAX_SEEDS = 2
#: Method -> (layout, architecture) of the ImageNet file its builder accepts as ``pretrained``
#: (the dry run writes one for each method whose resolved run would load hub weights).
WEIGHT_LAYOUTS: dict[str, tuple[str, str]] = {
    "maq2l": ("torchvision", "resnet101"),
    "q2l": ("torchvision", "resnet101"),
    "asl_resnet101": ("torchvision", "resnet101"),
    "resnet101": ("torchvision", "resnet101"),
    "kssnet": ("torchvision", "resnet101"),
    "asl_tresnet_l": ("timm", "tresnet_l"),
    "tresnet_m": ("timm", "tresnet_m"),
    "tresnet_l": ("timm", "tresnet_l"),
    "tresnet_xl": ("timm", "tresnet_xl"),
}
#: Stage outputs that the pipeline writes (not copied into the project).
_GENERATED = ("data/prepared", "data/synthetic", "data/pretrained", "runs", "results")
_STAGE_LINE = re.compile(r"Running stage '([^']+)'")


# ----------------------------------------------------------------------------- sizes
def split_sizes(images: int) -> dict[str, int]:
    """Frames per split for ``--images N`` train frames."""
    n = int(images)
    if n < MIN_IMAGES:
        raise SewerbenchError(f"--images: at least {MIN_IMAGES} train frames, got {n}")
    return {"train": n, "val": max(2, n // 2), "test": max(2, n // 3)}


# ----------------------------------------------------------------------------- mini Sewer-ML
def _subset_rows(label_source) -> dict[str, pd.DataFrame]:
    from benchmark.synth.labels import read_source, resolve_source

    return {k: read_source(resolve_source(label_source, k)) for k in ("train", "val")}


def _draw(source: pd.DataFrame, n: int, rng: np.random.Generator, cover: bool,
          exclude: Iterable[str] = ()) -> pd.DataFrame:
    """``n`` distinct rows of ``source`` (seeded), none with a filename in ``exclude``.
    ``cover``: up to two thirds of the rows first give one positive to each class (in random
    order), so class weights and label graphs see every class; at least one normal and one
    defective row; the rest at random. Rows keep the file's order (sorted filenames)."""
    pool = np.flatnonzero(~source["Filename"].isin(set(exclude)).to_numpy())
    if len(pool) < n:
        raise SewerbenchError(f"dryrun: the subset file has {len(pool)} usable rows, {n} needed")
    y = source[list(CLASS_CODES)].to_numpy() == 1
    chosen: list[int] = []

    def take(cands: np.ndarray) -> None:
        cands = np.setdiff1d(cands, chosen)
        if len(cands):
            chosen.append(int(rng.choice(cands)))

    if cover:
        n_cover = n - max(1, n // 3)
        for k in rng.permutation(len(CLASS_CODES)):
            if len(chosen) >= n_cover:
                break
            if not (chosen and y[chosen, k].any()):
                take(pool[y[pool, k]])
    defective = y[pool].any(axis=1)
    if len(chosen) < n and not (~y[chosen].any(axis=1)).any():
        take(pool[~defective])
    if len(chosen) < n and not y[chosen].any():
        take(pool[defective])
    rest = np.setdiff1d(pool, chosen)
    chosen += [int(i) for i in rng.choice(rest, size=n - len(chosen), replace=False)]
    return source.iloc[sorted(chosen)].reset_index(drop=True)[list(CSV_COLUMNS)]


def make_frame(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A pipe-like RGB frame (H, W, 3) uint8: a shaded tunnel with joints and mild noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx = width / 2 + rng.normal(0, 0.05 * width)
    cy = height / 2 + rng.normal(0, 0.05 * height)
    r = np.hypot((xx - cx) / width, (yy - cy) / height)
    base = rng.uniform(30, 90, 3).astype(np.float32)
    wall = rng.uniform(80, 160, 3).astype(np.float32)
    joints = 18.0 * np.cos(r * rng.uniform(25, 45) + rng.uniform(0, np.pi))
    img = base + np.clip(r / 0.7, 0, 1)[..., None] * wall + joints[..., None]
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def build_mini_sewerml(root: str | os.PathLike, images: int = DEFAULT_IMAGES, seed: int = 0,
                       label_source: str | os.PathLike | None = None) -> dict:
    """Write a paper-shaped mini Sewer-ML folder at ``root`` (must not exist or be empty).

    Official CSV names and header (the test CSV holds Filename only, as the public one);
    label rows drawn without replacement from the published 1/16 subset files (train from
    the Train file, val and test disjointly from the Val file) with their real filenames;
    PNG frames of real Sewer-ML sizes spread over ``images/<Split>NN`` sub-folders; no
    ``meta.json``, so ``prepare`` treats the folder as real data. Returns a summary.
    """
    from PIL import Image

    root = Path(root)
    sizes = split_sizes(images)
    src = _subset_rows(label_source)
    rng = np.random.default_rng([int(seed), 1601])
    frames = {"train": _draw(src["train"], sizes["train"], rng, cover=True),
              "val": _draw(src["val"], sizes["val"], rng, cover=True)}
    frames["test"] = _draw(src["val"], sizes["test"], rng, cover=False, exclude=frames["val"]["Filename"])
    root.mkdir(parents=True, exist_ok=True)
    folders: dict[str, list[str]] = {}
    shapes: dict[str, int] = {}
    for split, df in frames.items():
        out_csv = root / CSV_FILES[split]
        (df[["Filename"]] if split == "test" else df).to_csv(out_csv, index=False)
        n_folders = min(FOLDERS_PER_SPLIT, len(df))
        names = [f"{split.capitalize()}{k:02d}" for k in range(n_folders)]
        folders[split] = names
        for j, fname in enumerate(df["Filename"]):
            w, h = FRAME_SIZES[j % len(FRAME_SIZES)]
            d = root / IMAGE_DIR / names[j % n_folders]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(make_frame(w, h, rng)).save(d / fname, format="PNG", compress_level=1)
            shapes[f"{w}x{h}"] = shapes.get(f"{w}x{h}", 0) + 1
    positives = {split: {c: int(df[c].sum()) for c in CLASS_CODES}
                 for split, df in frames.items() if split != "test"}
    return {"root": str(root), "rows": {k: len(v) for k, v in frames.items()},
            "defective": {k: int(v["Defect"].sum()) for k, v in frames.items()},
            "folders": folders, "frame_sizes": shapes, "positives": positives}


# ----------------------------------------------------------------------------- weights
def _calibrate_bn(model, seed: int, batches: int = 2, batch: int = 4, size: int = 128) -> None:
    """Replace the BatchNorm running statistics by those of noise inputs (cumulative mean)."""
    import torch
    from torch import nn

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch, 3, size, size, generator=gen))
    for m in bns:
        m.momentum = 0.1
    model.eval()


def random_weights(layout: str, arch: str, seed: int = 0) -> dict:
    """A random-valued ImageNet state dict of ``arch`` in ``layout`` ("torchvision": the
    torchvision ResNet keys; "timm": timm's TResNet keys), 1000-class head included."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if layout == "torchvision":
            import torchvision

            model = getattr(torchvision.models, arch)(weights=None)
        elif layout == "timm":
            import timm

            model = timm.create_model(arch, pretrained=False, num_classes=1000)
        else:
            raise SewerbenchError(f"dryrun: unknown weight layout {layout!r}")
        _calibrate_bn(model, seed)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_pretrained_weights(out_dir: str | os.PathLike, methods: Iterable[str], seed: int = 0
                             ) -> dict[str, str]:
    """One weight file per (layout, architecture) the ``methods`` need; method -> path."""
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[tuple[str, str], Path] = {}
    result = {}
    for method in methods:
        if method not in WEIGHT_LAYOUTS:
            raise SewerbenchError(f"dryrun: method {method} loads pretrained weights but the dry run "
                                  f"knows no weight layout for it (known: {', '.join(WEIGHT_LAYOUTS)})")
        key = WEIGHT_LAYOUTS[method]
        if key not in paths:
            path = out / f"{key[1]}_{key[0]}_random.pth"
            torch.save(random_weights(*key, seed=seed), path)
            paths[key] = path
            log.info("wrote random %s %s weights to %s", key[0], key[1], path)
        result[method] = str(paths[key].resolve())
    return result


# ----------------------------------------------------------------------------- params
def select_runs(params: Mapping[str, Any], names: Sequence[str] | None
                ) -> tuple[dict[str, dict], dict[str, dict]]:
    """(runs, combos) kept for ``names`` (runs or combos; a combo brings its two stages);
    every combo whose two stages are kept is kept. ``None``: everything."""
    from benchmark.matrix import combos, find_run, runs

    all_runs, all_combos = runs(params), combos(params)
    if not names:
        return all_runs, all_combos
    keep: list[str] = []
    for n in names:
        if n in all_runs:
            keep.append(n)
        elif n in all_combos:
            keep += [all_combos[n]["stage1"], all_combos[n]["stage2"]]
        elif find_run(params, n) is not None:
            base = find_run(params, n).base
            raise SewerbenchError(f"--runs: {n} is a seed run of {base} (runs.{base}.seeds); "
                                  f"name {base}, which keeps all its seeds")
        else:
            from benchmark.config.schema import did_you_mean
            raise SewerbenchError(f"--runs: no run or combo named {n!r}"
                                  f"{did_you_mean(n, list(all_runs) + list(all_combos))}")
    for n in keep:
        if n not in all_runs:
            raise SewerbenchError(f"params.yaml: combos: stage {n!r} is not a run")
    kept = {n: all_runs[n] for n in all_runs if n in keep}
    kept_combos = {n: c for n, c in all_combos.items() if c["stage1"] in kept and c["stage2"] in kept}
    from benchmark.matrix import ABLATION_METHOD, ablation_cells
    if not ablation_cells(kept):
        raise SewerbenchError(f"--runs: keep at least one {ABLATION_METHOD} run: the tables stage writes "
                              "results/ablation.* (declared in dvc.yaml) from the MA x LC cells")
    return kept, kept_combos


def _restrict_outputs(params: dict) -> None:
    """tables / plots references to runs that are not kept are dropped (or re-pointed)."""
    from benchmark.matrix import PLOT_CAM_RUNS_KEY, PLOT_SCORE_RUN_KEYS, run_names

    runs, combos = params.get("runs") or {}, params.get("combos") or {}
    trained = set(run_names(params))              # the kept entries and their seed runs
    known = trained | set(combos)
    tables = params.setdefault("tables", {}) or {}
    ref = dict(tables.get("ablation_reference") or {})
    tables["ablation_reference"] = {s: r for s, r in ref.items() if r in runs}
    plots = params.setdefault("plots", {}) or {}
    plots["f2_runs"] = [r for r in plots.get("f2_runs") or [] if r in known]
    multilabel = [r for r, spec in runs.items() if spec.get("target") != "binary"
                  and not str(spec.get("method", "")).endswith("_binary")]
    for key in PLOT_SCORE_RUN_KEYS:
        if plots.get(key) not in trained:
            plots[key] = multilabel[0] if multilabel else None
    plots[PLOT_CAM_RUNS_KEY] = [r for r in plots.get(PLOT_CAM_RUNS_KEY) or [] if r in trained]


def dryrun_params(params: Mapping[str, Any], *, sewerml_root: str | os.PathLike,
                  runs: Sequence[str] | None = None, steps: int = DEFAULT_STEPS,
                  batch_size: int = DEFAULT_BATCH, eval_batch_size: int | None = None,
                  pretrained: Mapping[str, str] | None = None, synth_images: int = 16,
                  max_seeds: int = DEFAULT_MAX_SEEDS) -> dict:
    """The dry run's copy of ``params`` (params.yaml's content): ``profile: paper`` on the mini
    folder with the CPU runtime, one epoch of ``steps`` optimiser steps, batch
    ``batch_size``, the systematic 1/16 rule, ``runs:`` / ``combos:`` restricted to ``runs``
    (:func:`select_runs`), every ``seeds:`` list cut to its first ``max_seeds`` (0: all),
    local ``pretrained`` files per method (``profiles.paper.methods.<method>.pretrained``)
    and a tiny synth stage. Recipes, model sizes and everything else stay as they are."""
    if int(steps) < 1:
        raise SewerbenchError(f"--steps: must be >= 1, got {steps}")
    if int(max_seeds) < 0:
        raise SewerbenchError(f"--max-seeds: must be >= 0 (0 = all), got {max_seeds}")
    if int(batch_size) < 1:
        raise SewerbenchError(f"--batch-size: must be >= 1, got {batch_size}")
    p = copy.deepcopy(dict(params))
    kept_runs, kept_combos = select_runs(p, runs)
    if int(max_seeds):
        for spec in kept_runs.values():
            if isinstance(spec.get("seeds"), list):
                spec["seeds"] = spec["seeds"][:int(max_seeds)]
    p["runs"], p["combos"] = kept_runs, kept_combos
    p["profile"] = "paper"
    data = p.setdefault("data", {})
    data["sewerml_root"] = str(Path(sewerml_root).resolve())
    data["subset_rule"] = "systematic"     # the mini folder cannot hold the published subset rows
    data["check_images"] = True
    data["fractions"] = []
    paper = data.setdefault("paper", {}) or {}
    paper["source"] = "sewerml_root"
    data["paper"] = paper
    prof = p.setdefault("profiles", {}).setdefault("paper", {})
    prof.update({"device": "cpu", "workers": 0, "amp": False, "compile": False, "progress": False,
                 "epochs": 1, "batch_size": int(batch_size),
                 "eval_batch_size": int(eval_batch_size or batch_size),
                 "max_steps_per_epoch": int(steps), "use_cache": False})
    methods = dict(prof.get("methods") or {})
    for method, path in (pretrained or {}).items():
        methods[method] = {**(methods.get(method) or {}), "pretrained": str(path)}
    if methods:
        prof["methods"] = methods
    synth = p.setdefault("synth", {})
    n = max(4, int(synth_images))
    synth.update({"n_train": n, "n_val": max(2, n // 2), "n_test": max(2, n // 2),
                  "folder_size": max(1, n // 2), "workers": 1})
    _restrict_outputs(p)
    return p


def pretrained_methods(params: Mapping[str, Any]) -> list[str]:
    """Methods among ``params``' runs whose resolved config loads hub weights (True)."""
    from benchmark.config import resolve_run

    out = []
    for name in params.get("runs") or {}:
        cfg = resolve_run(params, name)
        if cfg.pretrained is True and cfg.method not in out:
            out.append(cfg.method)
    return out


def check_resolved(params: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Resolve every run of ``params``: config errors surface before DVC starts.
    Returns run -> a short description."""
    from benchmark.config import resolve_run

    from benchmark.matrix import run_names

    desc = {}
    for name in run_names(params):
        cfg = resolve_run(params, name, where=where)
        if cfg.pretrained is True:
            raise SewerbenchError(f"{where}: run {name}: would download pretrained weights")
        desc[name] = {"method": cfg.method, "size": cfg.size, "image_size": cfg.image_size,
                      "batch_size": cfg.batch_size, "epochs": cfg.epochs,
                      "pretrained": cfg.pretrained, "device": cfg.runtime.device,
                      "max_steps_per_epoch": cfg.runtime.max_steps_per_epoch}
    return desc


# ----------------------------------------------------------------------------- project
def _source_tree() -> dict[str, Path]:
    """The code folders of the installed packages (what the stages' code deps name)."""
    import benchmark
    import methods

    return {"benchmark": Path(benchmark.__file__).resolve().parent,
            "methods": Path(methods.__file__).resolve().parent}


def _code_deps(dvc_text: str) -> list[str]:
    """Dependency paths of the rendered dvc.yaml that no stage writes (code and data/splits)."""
    import yaml

    doc = yaml.safe_load(dvc_text)
    deps = set()
    for st in (doc.get("stages") or {}).values():
        body = st.get("do", st)
        for d in body.get("deps") or []:
            d = str(d)
            if "${" in d or any(d == g or d.startswith(g + "/") for g in _GENERATED):
                continue
            deps.add(d)
    return sorted(deps)


def write_project(project: str | os.PathLike, params: Mapping[str, Any], label_source: Path) -> list[str]:
    """params.yaml, dvc.yaml and the stages' code / data dependencies under ``project``."""
    import yaml

    from benchmark.config.resolve import check_params
    from benchmark.dvcgen import render_dvc_yaml

    project = Path(project)
    project.mkdir(parents=True, exist_ok=True)
    check_params(params, "dry-run params.yaml")
    text = ("# sewerbench paper dry run (`sewerbench dryrun`): params.yaml switched to the paper\n"
            "# profile on a mini Sewer-ML; generated, do not edit.\n"
            + yaml.safe_dump(dict(params), sort_keys=False, default_flow_style=False, width=110))
    (project / "params.yaml").write_text(text, encoding="utf-8")
    dvc_text = render_dvc_yaml(params)
    (project / "dvc.yaml").write_text(dvc_text, encoding="utf-8")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name, src in _source_tree().items():
        shutil.copytree(src, project / name, ignore=ignore, dirs_exist_ok=True)
    splits = project / "data" / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    for f in ("SewerML_Train_sub_0.0625.csv", "SewerML_Val_sub_0.0625.csv"):
        shutil.copy2(label_source / f, splits / f)
    deps = _code_deps(dvc_text)
    missing = [d for d in deps if not (project / d).exists()]
    if missing:
        raise SewerbenchError(f"{project}: dvc.yaml depends on {', '.join(missing)}, which the dry "
                              f"run did not provide")
    return deps


def expected_stages(params: Mapping[str, Any]) -> list[str]:
    """DVC stage names (foreach items as ``stage@key``) the pipeline of ``params`` runs
    (seed runs of ``seeds:`` entries in ``train_seed`` / ``evaluate_seed``)."""
    from benchmark.matrix import expand_runs

    runs = list(params.get("runs") or {})
    combos = list(params.get("combos") or {})
    seeds = [r.name for r in expand_runs(params.get("runs"), combos) if r.name != r.base]
    return (["synth", "prepare", "pretrain"] + [f"train@{r}" for r in runs] + [f"train_seed@{r}" for r in seeds]
            + [f"combine@{c}" for c in combos] + [f"evaluate@{r}" for r in runs]
            + [f"evaluate_seed@{r}" for r in seeds] + [f"evaluate_combo@{c}" for c in combos]
            + ["tables", "plots"])


def expected_outputs(params: Mapping[str, Any]) -> list[str]:
    """Files the finished pipeline must hold (relative to the project)."""
    from benchmark.dvcgen import TABLES_OUTS

    from benchmark.matrix import run_names

    out = list(TABLES_OUTS)
    for r in run_names(params):
        out += [f"runs/{r}/scores_val.csv", f"runs/{r}/scores_test.csv", f"results/metrics/{r}"]
    for c in params.get("combos") or {}:
        out += [f"runs/{c}/scores_val.csv", f"runs/{c}/scores_test.csv", f"results/metrics/{c}"]
    return out


def init_project(project: Path) -> None:
    """``dvc init --no-scm`` and a hardlink cache: outputs are committed without a second copy
    of the multi-GB checkpoints, and a second ``dvc repro`` skips the finished stages."""
    dvc, env = dvc_command(), dvc_env()
    for cmd in (["init", "--no-scm", "-q"], ["config", "cache.type", "hardlink"]):
        done = subprocess.run([*dvc, *cmd], cwd=project, env=env, capture_output=True, text=True)
        if done.returncode:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            raise SewerbenchError(f"{project}: dvc {cmd[0]} failed: {last[0]}")


def run_pipeline(project: Path, log_path: Path, echo: Callable[[str], None] | None = print,
                 on_stage: Callable[[str, float], None] | None = None) -> dict[str, float]:
    """``dvc repro`` in ``project``: DVC's output is appended to ``log_path``, each stage's
    start line (timestamped) also goes to ``echo``; ``on_stage(stage, seconds)`` runs when a
    stage has finished. Returns stage -> wall seconds of the stages run; a one-line error on
    failure."""
    dvc, env = dvc_command(), dvc_env()
    times: dict[str, float] = {}
    current, t_stage = None, time.perf_counter()

    def done(now: float) -> None:
        if current is not None:
            times[current] = now - t_stage
            if on_stage is not None:
                on_stage(current, times[current])

    with open(log_path, "a", encoding="utf-8") as fh:
        fh.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] $ dvc repro   (in {project})\n")
        proc = subprocess.Popen([*dvc, "repro"], cwd=project, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.perf_counter()
            m = _STAGE_LINE.search(line)
            if m:
                done(now)
                current, t_stage = m.group(1), now
                line = f"[{time.strftime('%H:%M:%S')}] {line}"
                if echo is not None:
                    echo(line.rstrip("\n"))
            fh.write(line)
            fh.flush()
        rc = proc.wait()
        if rc == 0:
            done(time.perf_counter())
    if rc:
        raise SewerbenchError(f"{log_path}: dvc repro failed (exit {rc}) in stage {current or '?'}; "
                              "the log holds the stage's output (--resume continues from there)")
    return times


def check_outputs(project: Path, params: Mapping[str, Any], times: Mapping[str, float]) -> dict:
    """Every expected stage ran (in DVC's log and dvc.lock) and every output exists."""
    import yaml

    stages = expected_stages(params)
    lock = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8")) if (project / "dvc.lock").is_file() else {}
    locked = set((lock or {}).get("stages") or {})
    not_run = [s for s in stages if s not in times]
    not_locked = [s for s in stages if s not in locked]
    if not_run or not_locked:
        raise SewerbenchError(f"{project}: stages that did not run: {', '.join(not_run) or '-'}; "
                              f"missing from dvc.lock: {', '.join(not_locked) or '-'}")
    missing = [o for o in expected_outputs(params) if not (project / o).exists()
               or ((project / o).is_dir() and not any((project / o).iterdir()))]
    plots = sorted(p.name for p in (project / "results" / "plots").glob("*.png"))
    if not plots:
        missing.append("results/plots/*.png")
    if missing:
        raise SewerbenchError(f"{project}: missing outputs after dvc repro: {', '.join(missing[:8])}"
                              f"{' ...' if len(missing) > 8 else ''}")
    from benchmark.matrix import run_names

    trained = {}
    for r in run_names(params):
        f = project / "runs" / r / "train_summary.json"
        if f.is_file():
            t = json.loads(f.read_text(encoding="utf-8"))
            seen = t.get("train_images_per_s", 0.0) * t.get("train_seconds", 0.0)
            trained[r] = {"params": t.get("params"), "reference_num_params": t.get("reference_num_params"),
                          "train_images_seen": int(round(seen)), "wall_seconds": t.get("wall_seconds")}
    return {"stages": stages, "trained": trained, "tables": sorted(o for o in expected_outputs(params) if o.startswith("results/")
                                               and not o.startswith("results/metrics")),
            "plots": plots}


# ----------------------------------------------------------------------------- entry point
STATE_FILE = "dryrun_state.json"


def _clear(out: Path) -> None:
    for name in ("sewerml", "weights", "project", "dryrun.log", "dryrun.json", STATE_FILE):
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _setup(out: Path, params_path, runs, images: int, steps: int, batch_size: int,
           label_source, force: bool, max_seeds: int = DEFAULT_MAX_SEEDS) -> dict:
    """Steps 1-3: mini Sewer-ML, weight files, project; returns the state to resume from."""
    from benchmark.config import load_params
    from benchmark.io import check_replaceable_dir, claim_dir
    from benchmark.synth.labels import resolve_source

    split_sizes(images)
    if int(max_seeds) < 0:
        raise SewerbenchError(f"--max-seeds: must be >= 0 (0 = all), got {max_seeds}")
    base = load_params(params_path)
    select_runs(base, runs)                      # unknown names before anything is written
    source_dir = resolve_source(label_source, "train").parent
    check_replaceable_dir(out, NAME, force=force)
    claim_dir(out, NAME)
    _clear(out)
    seed = int(base.get("seed", 0))
    t = time.perf_counter()
    mini = build_mini_sewerml(out / "sewerml", images, seed=seed, label_source=source_dir)
    t_data = time.perf_counter() - t
    probe = dryrun_params(base, sewerml_root=out / "sewerml", runs=runs, steps=steps,
                          batch_size=batch_size, max_seeds=max_seeds)
    t = time.perf_counter()
    weights = write_pretrained_weights(out / "weights", pretrained_methods(probe), seed=seed)
    t_weights = time.perf_counter() - t
    params = dryrun_params(base, sewerml_root=out / "sewerml", runs=runs, steps=steps,
                           batch_size=batch_size, pretrained=weights, max_seeds=max_seeds)
    project = out / "project"
    resolved = check_resolved(params, str(project / "params.yaml"))
    t = time.perf_counter()
    write_project(project, params, source_dir)
    init_project(project)
    return {"format": 1, "out": str(out), "images": mini["rows"], "frame_sizes": mini["frame_sizes"],
            "folders": mini["folders"], "steps": int(steps), "batch_size": int(batch_size),
            "runs": resolved, "combos": list(params["combos"]), "pretrained": weights,
            "setup_seconds": {"mini_sewerml": round(t_data, 1), "weights": round(t_weights, 1),
                              "project": round(time.perf_counter() - t, 1)},
            "stage_seconds": {}}


def run_dryrun(out: str | os.PathLike, params_path: str | os.PathLike = "params.yaml",
               runs: Sequence[str] | None = None, images: int = DEFAULT_IMAGES,
               steps: int = DEFAULT_STEPS, batch_size: int = DEFAULT_BATCH, force: bool = False,
               label_source: str | os.PathLike | None = None, resume: bool = False,
               echo: Callable[[str], None] | None = print,
               max_seeds: int = DEFAULT_MAX_SEEDS) -> dict:
    """The whole paper dry run (module docstring); returns (and writes) ``dryrun.json``.

    ``resume``: continue an interrupted dry run in ``out`` (its project and params as they
    are; the other options are ignored): ``dvc repro`` skips the finished stages, whose wall
    times come from ``dryrun_state.json``.
    """
    from benchmark.config import load_params
    from benchmark.io import atomic_write_json, read_owner

    t0 = time.perf_counter()
    out = Path(out)
    state_path = out / STATE_FILE
    if resume:
        owner = read_owner(out) if out.is_dir() else None
        if not (owner and owner.get("command") == NAME and state_path.is_file()
                and (out / "project" / "dvc.yaml").is_file()):
            raise SewerbenchError(f"{out}: --resume: no interrupted `sewerbench dryrun` here "
                                  f"(no {STATE_FILE} or project/dvc.yaml)")
        state = json.loads(state_path.read_text(encoding="utf-8"))
    else:
        state = _setup(out, params_path, runs, images, steps, batch_size, label_source, force,
                       max_seeds)
        atomic_write_json(state_path, state)
    project = out / "project"
    params = load_params(project / "params.yaml")
    if echo is not None:
        echo(f"dryrun: mini Sewer-ML {state['images']} at {out / 'sewerml'}; {len(params['runs'])} runs, "
             f"{len(params['combos'])} combos; dvc repro in {project} (log {out / 'dryrun.log'})")

    def record(stage: str, seconds: float) -> None:
        state["stage_seconds"][stage] = round(seconds, 1)
        atomic_write_json(state_path, state)

    run_pipeline(project, out / "dryrun.log", echo=echo, on_stage=record)
    checked = check_outputs(project, params, state["stage_seconds"])
    seconds = {**state["setup_seconds"], **state["stage_seconds"]}
    summary = {k: v for k, v in state.items() if k not in ("setup_seconds", "stage_seconds")}
    summary.update({"seconds": {**seconds, "total": round(sum(seconds.values()), 1)},
                    "wall_seconds_this_invocation": round(time.perf_counter() - t0, 1),
                    "resumed": bool(resume), **checked})
    atomic_write_json(out / "dryrun.json", summary)
    return summary


def format_summary(summary: Mapping[str, Any]) -> str:
    sec = dict(summary["seconds"])
    total = sec.pop("total")
    width = max(len(k) for k in sec)
    lines = [f"paper dry run: {len(summary['runs'])} runs, {len(summary['combos'])} combos, "
             f"images {summary['images']}, {summary['steps']} steps of batch {summary['batch_size']}",
             "wall seconds per stage:"]
    lines += [f"  {k:<{width}}  {v:8.1f}" for k, v in sec.items()]
    lines += [f"  {'total':<{width}}  {total:8.1f}  ({total / 60:.1f} min)"]
    if summary.get("resumed"):
        lines.append(f"  (resumed: this invocation {summary['wall_seconds_this_invocation']:.1f} s; the "
                     "total adds the stages of earlier ones)")
    lines += [
              f"tables: {len(summary['tables'])} outputs present; plots: {', '.join(summary['plots'])}",
              f"details: {Path(summary['out']) / 'dryrun.json'}"]
    return "\n".join(lines)
