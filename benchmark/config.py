"""Resolve one training run's configuration from ``params.yaml``.

Merge order (later wins): engine defaults <- recipe <- profile <- the profile's
``recipes: {<recipe>: {...}}`` entry <- the profile's ``methods: {<method>: {...}}`` entry
<- run entry <- ``--set``. The profile's ``recipes:`` entries adapt a reference recipe to the
profile (e.g. the smoke profile trains tiny randomly initialised models for a few epochs, so it
raises the learning rate and shortens the EMA horizon; the paper profile keeps the references).
Profile values that are ``null`` mean "keep the recipe's value" (so the paper profile
can leave epochs and batch size to each reference recipe). The recipe is the run's
``recipe:`` key, else the recipe named like the method, else the method's family.

When a profile shortens training (``epochs`` differs from the recipe's), epoch-based
quantities of the recipe are rescaled proportionally: MultiStep milestones and
``stop_epoch`` (the schedule keeps its shape).
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from benchmark.errors import SewerbenchError

#: Defaults for every key the engine reads (documented in params.yaml).
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    # --- profile-like keys ---
    "size": "tiny",              # builder size: tiny | reference
    "pretrained": False,         # ImageNet weights for the backbone (recipe key)
    "allow_pretrained": True,    # profile switch: false forces pretrained off (no downloads)
    "image_size": None,          # null = the method's reference input size
    "epochs": 1,
    "batch_size": 16,            # global batch (all processes together)
    "eval_batch_size": None,     # null = batch_size
    "workers": 0,
    "device": "auto",            # auto | cpu | cuda | cuda:N
    "amp": False,                # autocast (CUDA: fp16 + GradScaler or bf16; CPU: bf16)
    "amp_dtype": "float16",      # float16 | bfloat16
    "channels_last": False,
    "compile": False,
    "deterministic": True,
    "max_train_images": None,    # cap (first N rows of a seeded shuffle) for quick runs
    "max_eval_images": None,
    "progress": True,
    "use_cache": True,           # read images from the uint8 image cache when available
    # --- recipe keys ---
    "transform": None,           # null = the method's normalisation family
    "aug": {},                   # passed to benchmark.data.transforms.build_transform
    "optimizer": {"name": "adam", "lr": 1.0e-4, "weight_decay": 0.0, "decay_filter": "all",
                  "betas": [0.9, 0.999], "eps": 1.0e-8, "momentum": 0.9, "nesterov": False,
                  "lr_batch_scale": None},
    "schedule": {"name": "none"},
    "ema": {"enabled": False, "decay": 0.9997},
    "loss": {"name": "bce"},
    "aux_loss_weight": 0.4,      # Inception-v3 auxiliary head (chen2018)
    "grad_clip": None,           # max global grad norm, null = off
    "selection": "mAP",          # mAP | val_loss | F2_CIW | F1_Normal
    "early_stop": None,          # {patience: N} or null
    "stop_epoch": None,          # ASL: stop after this epoch although the schedule is longer
    # --- run keys ---
    "split": "full",
    "target": "multilabel",      # multilabel | binary (Defect column, 1 output)
    "train_on": "all",           # all | defect_only (two-stage stage 2)
    "model": {},                 # builder keyword arguments
    "data": {},
    "sklearn": {},               # kind sklearn: n_jobs etc.
}

_RUN_RESERVED = {"method", "recipe", "profile"}
_DATA_DEFAULTS = {"prepared": "data/prepared", "images": None, "cache": "data/cache",
                  "full_split": "full"}
_SELECTION = {"mAP": "max", "F2_CIW": "max", "F1_Normal": "max", "val_loss": "min"}


def load_params(path: str | os.PathLike) -> dict:
    """Read params.yaml (one-line SewerbenchError on a missing or malformed file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SewerbenchError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        raise SewerbenchError(f"{path}: {where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise SewerbenchError(f"{path}: top level must be a mapping")
    return data


def deep_merge(base: Mapping, over: Mapping | None, skip_none: bool = False) -> dict:
    """Recursive dict merge; ``over`` wins; with ``skip_none`` None values of ``over`` are ignored."""
    out = copy.deepcopy(dict(base))
    for k, v in (over or {}).items():
        if skip_none and v is None:
            continue
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v, skip_none)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_set(items: Iterable[str], where: str = "--set") -> dict:
    """``["a.b=1", "c=[1, 2]"]`` -> nested dict; values parsed as YAML."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise SewerbenchError(f"{where}: {item!r}: expected KEY=VALUE")
        key, _, raw = item.partition("=")
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise SewerbenchError(f"{where}: {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise SewerbenchError(f"{where}: {item!r}: {p} is both a value and a section")
        node[parts[-1]] = coerce_numbers(value)
    return out


_SCI = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def coerce_numbers(obj: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string: turn such strings into floats."""
    if isinstance(obj, dict):
        return {k: coerce_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [coerce_numbers(v) for v in obj]
    if isinstance(obj, str) and _SCI.match(obj.strip()):
        return float(obj)
    return obj


def _section(params: Mapping, name: str, where: str) -> dict:
    sec = params.get(name)
    if sec is None:
        raise SewerbenchError(f"{where}: missing section {name!r}")
    if not isinstance(sec, Mapping):
        raise SewerbenchError(f"{where}: section {name!r} must be a mapping")
    return dict(sec)


def _data_config(params: Mapping, profile_name: str, profiles: Iterable[str]) -> dict:
    """The ``data:`` section for this profile: common keys, then ``data.<profile>`` keys."""
    data = params.get("data") or {}
    if not isinstance(data, Mapping):
        return dict(_DATA_DEFAULTS)
    common = {k: v for k, v in data.items() if k not in set(profiles) or not isinstance(v, Mapping)}
    per = data.get(profile_name) if isinstance(data.get(profile_name), Mapping) else {}
    return deep_merge(deep_merge(_DATA_DEFAULTS, common), per)


def _scale_epochs(value: int, epochs: int, reference: int) -> int:
    return max(1, int(round(value * epochs / reference)))


def finalize(cfg: dict, spec=None) -> dict:
    """Fill derived keys (method spec fields, image size, data paths, rescaled milestones)."""
    cfg = coerce_numbers(cfg)
    if spec is not None:
        cfg.setdefault("family", spec.family)
        cfg["kind"] = spec.kind
        if cfg.get("transform") is None:
            cfg["transform"] = spec.transform
        if cfg.get("image_size") in (None, "reference"):
            cfg["image_size"] = spec.image_size
        if spec.binary:
            cfg["target"] = "binary"
    if not cfg.get("allow_pretrained", True) or cfg.get("kind") == "sklearn":
        cfg["pretrained"] = False
    cfg.setdefault("kind", "torch")
    cfg.setdefault("family", "custom")
    if cfg.get("transform") is None:
        cfg["transform"] = "imagenet"
    if cfg.get("image_size") in (None, "reference"):
        raise SewerbenchError(f"run {cfg.get('run')}: image_size is not set")
    if cfg["target"] not in ("multilabel", "binary"):
        raise SewerbenchError(f"run {cfg.get('run')}: target must be multilabel or binary, got {cfg['target']!r}")
    if cfg["train_on"] not in ("all", "defect_only"):
        raise SewerbenchError(f"run {cfg.get('run')}: train_on must be all or defect_only, got {cfg['train_on']!r}")
    sel = cfg.get("selection")
    if sel not in _SELECTION:
        raise SewerbenchError(f"run {cfg.get('run')}: selection must be one of {', '.join(_SELECTION)}, got {sel!r}")
    cfg["selection_mode"] = _SELECTION[sel]
    cfg["binary"] = cfg["target"] == "binary"
    cfg["num_outputs"] = 1 if cfg["binary"] else 17
    cfg["epochs"] = int(cfg["epochs"])
    if cfg["epochs"] < 1:
        raise SewerbenchError(f"run {cfg.get('run')}: epochs must be >= 1")

    # rescale epoch-based recipe quantities when the profile changed the length
    ref = cfg.get("reference_epochs") or cfg["epochs"]
    cfg["reference_epochs"] = int(ref)
    sched = dict(cfg.get("schedule") or {"name": "none"})
    if sched.get("name") == "multistep" and ref != cfg["epochs"]:
        sched["milestones"] = sorted({_scale_epochs(m, cfg["epochs"], ref)
                                      for m in sched.get("milestones", [])})
    cfg["schedule"] = sched
    if cfg.get("stop_epoch") is not None and ref != cfg["epochs"]:
        cfg["stop_epoch"] = min(cfg["epochs"] - 1, _scale_epochs(cfg["stop_epoch"], cfg["epochs"], ref))

    # data paths
    data = dict(cfg.get("data") or {})
    for k, v in _DATA_DEFAULTS.items():
        data.setdefault(k, v)
    prepared = Path(data["prepared"])
    split = str(cfg.get("split", "full"))
    full = str(data.get("full_split", "full"))
    data.setdefault("train_csv", str(prepared / split / "train.csv"))
    data.setdefault("val_csv", str(prepared / split / "val.csv"))
    data.setdefault("full_val_csv", str(prepared / full / "val.csv"))
    data.setdefault("test_csv", str(prepared / full / "test.csv"))
    cfg["data"] = data
    return cfg


def resolve_run(params: Mapping, run_name: str, overrides: Mapping | None = None,
                seed: int | None = None, where: str = "params.yaml") -> dict:
    """The full training configuration of run ``run_name`` (see module docstring)."""
    from methods.registry import get_spec

    runs = _section(params, "runs", where)
    if run_name not in runs:
        raise SewerbenchError(f"{where}: runs: no run named {run_name!r} (known: {', '.join(runs) or 'none'})")
    run = dict(runs[run_name] or {})
    if overrides:
        run = deep_merge(run, {k: v for k, v in overrides.items() if k in _RUN_RESERVED})
    method = run.get("method")
    if not method:
        raise SewerbenchError(f"{where}: runs: {run_name}: missing 'method'")
    try:
        spec = get_spec(method)
    except KeyError as exc:
        raise SewerbenchError(f"{where}: runs: {run_name}: {exc.args[0]}") from None

    recipes = dict(params.get("recipes") or {})
    recipe_name = run.get("recipe") or (method if method in recipes else spec.family)
    if recipe_name not in recipes:
        raise SewerbenchError(f"{where}: recipes: no recipe {recipe_name!r} for run {run_name} "
                              f"(method {method}, family {spec.family})")
    recipe = dict(recipes[recipe_name] or {})

    profiles = _section(params, "profiles", where)
    profile_name = run.get("profile") or params.get("profile") or "smoke"
    if profile_name not in profiles:
        raise SewerbenchError(f"{where}: profiles: no profile {profile_name!r} (known: {', '.join(profiles)})")
    profile = dict(profiles[profile_name] or {})

    cfg = deep_merge(DEFAULTS, recipe)
    cfg["reference_epochs"] = int(recipe.get("epochs", cfg["epochs"]))
    cfg["seed"] = int(params.get("seed", 0))
    per_method = profile.pop("methods", None) or {}
    per_recipe = profile.pop("recipes", None) or {}
    cfg = deep_merge(cfg, profile, skip_none=True)
    cfg = deep_merge(cfg, per_recipe.get(recipe_name) or {}, skip_none=True)
    cfg = deep_merge(cfg, per_method.get(method) or {}, skip_none=True)
    cfg["data"] = deep_merge(_data_config(params, profile_name, profiles), cfg.get("data"))
    cfg = deep_merge(cfg, {k: v for k, v in run.items() if k not in _RUN_RESERVED})
    if overrides:
        cfg = deep_merge(cfg, {k: v for k, v in overrides.items() if k not in _RUN_RESERVED})
    if seed is not None:
        cfg["seed"] = int(seed)
    cfg.update({"run": run_name, "method": method, "recipe": recipe_name, "profile": profile_name})
    cfg["family"] = spec.family
    return finalize(cfg, spec)
