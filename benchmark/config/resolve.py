"""ONE resolver: params.yaml's layers -> a frozen, validated :class:`RunConfig`.

Layers, later wins: the dataclass defaults <- recipe <- profile <- the profile's
``recipes: {<recipe>: ...}`` entry <- the profile's ``methods: {<method>: ...}`` entry <- the
profile's ``splits: {<split>: ...}`` entry (the run's prepared split) <- run entry <- ``--set``
overrides. Profile values that are ``null`` keep the earlier value (so the
paper profile leaves epochs and batch size to each reference recipe). The recipe is the run's
``recipe:`` key, else the recipe named like the method, else the method's family.

Every layer is checked before it is merged: an unknown key is refused with its full dotted
key and a did-you-mean, a value of the wrong type names the key and the expected type.
Derived values are computed here and nowhere else, after all layers (``--set`` and tune
trials included): the method's facts (kind, family, transform, reference input size, binary
target), ``pretrained`` off where the profile forbids it, MultiStep milestones and
``stop_epoch`` rescaled when the run's length differs from its recipe's, and the split CSV
paths from the prepared layout.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from benchmark.config.schema import (AugConfig, DataConfig, EarlyStopConfig, EmaConfig, LossConfig,
                                     OptimizerConfig, RunConfig, RuntimeConfig, ScheduleConfig, build,
                                     did_you_mean, field_names, unknown_key_error)
from benchmark.errors import SewerbenchError

#: Keys of a run entry that pick the layers rather than override a value.
RUN_RESERVED = ("method", "recipe", "profile")
#: Keys of a run entry that shape the run matrix, not the configuration (``seeds``:
#: :func:`benchmark.matrix.expand_runs`); refused in ``--set``.
RUN_MATRIX_KEYS = ("seeds",)
#: Sections of the input namespace, each a dataclass of the schema.
SECTIONS = {"optimizer": OptimizerConfig, "schedule": ScheduleConfig, "ema": EmaConfig,
            "loss": LossConfig, "aug": AugConfig, "early_stop": EarlyStopConfig}
#: Mapping-valued keys validated against the method's builder (keyword arguments).
BUILDER_KEYS = ("model", "sklearn")
_IDENTITY = ("run", "method", "recipe", "profile", "family", "kind", "reference_epochs", "data", "runtime")
#: Every key a recipe, profile, run entry or --set may hold (params.yaml spelling: flat).
INPUT_KEYS = tuple(k for k in field_names(RunConfig) if k not in _IDENTITY) + field_names(RuntimeConfig) + ("data",)
_PROFILE_ONLY = ("methods", "recipes", "splits")
#: params.yaml ``data:`` keys (besides the per-profile sub-sections).
DATA_PARAM_KEYS = ("sewerml_root", "prepared", "cache", "images", "source", "fractions", "check_images", "subset_rule")
TOP_LEVEL_KEYS = ("seed", "profile", "synth", "pretrain", "data", "runs", "combos", "tables", "plots", "check", "tune",
                  "profiles", "recipes")


# ----------------------------------------------------------------------------- params.yaml
def load_params(path: str | os.PathLike) -> dict:
    """Read params.yaml (one-line SewerbenchError on a missing or malformed file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SewerbenchError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise SewerbenchError(f"{path}: not a UTF-8 text file") from None
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


def dotted_to_nested(values: Mapping[str, Any]) -> dict:
    """``{"optimizer.lr": 1e-3}`` -> ``{"optimizer": {"lr": 1e-3}}`` (tune trials, --set files)."""
    out: dict = {}
    for key, value in values.items():
        node = out
        parts = str(key).split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
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


# ----------------------------------------------------------------------------- validation
def check_layer(layer: Mapping[str, Any], where: str, extra: Iterable[str] = ()) -> None:
    """Refuse unknown keys of one layer (flat keys, section keys one level down)."""
    known = set(INPUT_KEYS) | set(extra)
    for key, value in layer.items():
        if key not in known:
            raise unknown_key_error(where, key, known)
        cls = SECTIONS.get(key)
        if cls is not None and isinstance(value, Mapping):
            names = field_names(cls)
            for sub in value:
                if sub not in names:
                    raise unknown_key_error(where, f"{key}.{sub}", names)
        if key == "data" and value is not None:
            if not isinstance(value, Mapping):
                raise SewerbenchError(f"{where}: data: expected a mapping, got {value!r}")
            names = field_names(DataConfig)
            for sub in value:
                if sub not in names:
                    raise unknown_key_error(where, f"data.{sub}", names)


def check_params(params: Mapping[str, Any], where: str = "params.yaml") -> None:
    """Structure of a whole params file: top-level sections, recipes, profiles, runs, data."""
    for key in params:
        if key not in TOP_LEVEL_KEYS:
            raise unknown_key_error(where, key, TOP_LEVEL_KEYS)
    for name, recipe in (params.get("recipes") or {}).items():
        if not isinstance(recipe, Mapping):
            raise SewerbenchError(f"{where}: recipes.{name}: expected a mapping")
        check_layer(recipe, f"{where}: recipes.{name}")
    profiles = params.get("profiles") or {}
    for name, prof in profiles.items():
        if not isinstance(prof, Mapping):
            raise SewerbenchError(f"{where}: profiles.{name}: expected a mapping")
        check_layer(prof, f"{where}: profiles.{name}", _PROFILE_ONLY)
        for sub in _PROFILE_ONLY:
            for entry, layer in (prof.get(sub) or {}).items():
                check_layer(layer or {}, f"{where}: profiles.{name}.{sub}.{entry}")
                if sub == "splits" and "split" in (layer or {}):
                    raise SewerbenchError(f"{where}: profiles.{name}.splits.{entry}.split: a split's "
                                          "layer cannot change the split")
    for name, run in (params.get("runs") or {}).items():
        if not isinstance(run, Mapping):
            raise SewerbenchError(f"{where}: runs.{name}: expected a mapping")
        check_layer(run, f"{where}: runs.{name}", RUN_RESERVED + RUN_MATRIX_KEYS)
    from benchmark.matrix import expand_runs

    expand_runs(params.get("runs"), (params.get("combos") or {}).keys(), where)  # seeds, names
    data = params.get("data") or {}
    if not isinstance(data, Mapping):
        raise SewerbenchError(f"{where}: data: expected a mapping")
    for key, value in data.items():
        if key in profiles:
            for sub in (value or {}):
                if sub not in DATA_PARAM_KEYS:
                    raise unknown_key_error(where, f"data.{key}.{sub}", DATA_PARAM_KEYS)
        elif key not in DATA_PARAM_KEYS:
            raise unknown_key_error(where, f"data.{key}", tuple(DATA_PARAM_KEYS) + tuple(profiles))


def _check_builder_kwargs(section: str, kwargs: Mapping[str, Any], spec, where: str) -> None:
    """Model / sklearn keys must be keyword arguments of the method's builder."""
    import inspect

    if not kwargs:
        return
    try:
        params = inspect.signature(spec.builder()).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = [n for n in params if n not in ("size", "num_classes", "pretrained")]
    for key in kwargs:
        if key not in known:
            raise SewerbenchError(f"{where}: unknown key '{section}.{key}' for method {spec.name}"
                                  f"{did_you_mean(key, known)}; known: {', '.join(known)}")


# ----------------------------------------------------------------------------- resolve
def _section(params: Mapping, name: str, where: str) -> dict:
    sec = params.get(name)
    if sec is None:
        raise SewerbenchError(f"{where}: missing section {name!r}")
    if not isinstance(sec, Mapping):
        raise SewerbenchError(f"{where}: section {name!r} must be a mapping")
    return dict(sec)


def _data_layer(params: Mapping, profile_name: str, profiles: Iterable[str]) -> dict:
    """The run-relevant ``data:`` keys for this profile: common keys, then ``data.<profile>``."""
    data = params.get("data") or {}
    keys = field_names(DataConfig)
    profiles = set(profiles)
    common = {k: v for k, v in data.items() if k in keys and k not in profiles}
    per = data.get(profile_name) if isinstance(data.get(profile_name), Mapping) else {}
    return deep_merge(common, {k: v for k, v in per.items() if k in keys})


def _scale_epochs(value: int, epochs: int, reference: int) -> int:
    return max(1, int(round(value * epochs / reference)))


def _apply_quirks(flat: dict, spec) -> None:
    """Record the reference quirks the run reproduces and apply the config-level ones."""
    from benchmark import quirks as Q

    protocol = flat.get("protocol", "published")
    keys = list(Q.applicable(spec.name, protocol if isinstance(protocol, str) else "published"))
    model = dict(flat.get("model") or {})
    if spec.name == "maq2l":
        if protocol == "corrected":
            model.setdefault("mask_tiling", "per_sample")
            flat["model"] = model
        if model.get("mask_tiling", spec.builder_default("mask_tiling")) != "reference":
            keys = [k for k in keys if not k.startswith("maq2l_")]
    if "degenerate_cutout" in keys:
        aug = dict(flat.get("aug") or {})
        aug["cutout"] = 0.0
        flat["aug"] = aug
    flat["quirks"] = tuple(keys)


def resolve_run(params: Mapping, run_name: str, overrides: Mapping | None = None,
                seed: int | None = None, where: str = "params.yaml") -> RunConfig:
    """The full, validated configuration of run ``run_name`` (see the module docstring).

    ``run_name`` is an entry of ``runs:`` or a seed run ``<entry>_seed<s>`` of an entry with
    ``seeds:`` (:func:`benchmark.matrix.expand_runs`): configured by the entry, trained with
    seed ``s``; the entry itself trains with ``seeds[0]`` when it lists seeds. The seed
    then goes: params.yaml ``seed`` <- recipe/profile layers <- the run entry's ``seed`` or
    its ``seeds`` <- ``--set seed=`` <- ``seed`` (``train --seed``)."""
    from benchmark.matrix import expand_runs
    from methods.registry import get_spec

    check_params(params, where)
    runs = _section(params, "runs", where)
    expanded = {r.name: r for r in expand_runs(runs, (params.get("combos") or {}).keys(), where)}
    if run_name not in expanded:
        raise SewerbenchError(f"{where}: runs: no run named {run_name!r} (known: {', '.join(runs) or 'none'})"
                              f"{did_you_mean(run_name, runs)}")
    base_name, matrix_seed = expanded[run_name].base, expanded[run_name].seed
    overrides = coerce_numbers(dict(overrides or {}))
    check_layer(overrides, "--set", RUN_RESERVED)
    run = dict(runs[base_name] or {})
    run.update({k: v for k, v in overrides.items() if k in RUN_RESERVED})
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
    recipe = coerce_numbers(dict(recipes[recipe_name] or {}))

    profiles = _section(params, "profiles", where)
    profile_name = run.get("profile") or params.get("profile") or "smoke"
    if profile_name not in profiles:
        raise SewerbenchError(f"{where}: profiles: no profile {profile_name!r} (known: {', '.join(profiles)})")
    profile = coerce_numbers(dict(profiles[profile_name] or {}))
    per_method = profile.pop("methods", None) or {}
    per_recipe = profile.pop("recipes", None) or {}
    per_split = profile.pop("splits", None) or {}

    flat = deep_merge({}, recipe)
    flat["seed"] = params.get("seed", 0)
    split = overrides.get("split", run.get("split", RunConfig.split))
    for layer in (profile, per_recipe.get(recipe_name) or {}, per_method.get(method) or {},
                  per_split.get(split) or {}):
        flat = deep_merge(flat, layer, skip_none=True)
    data = deep_merge(_data_layer(params, profile_name, profiles), flat.pop("data", None) or {})
    run_layer = coerce_numbers({k: v for k, v in run.items()
                                if k not in RUN_RESERVED + RUN_MATRIX_KEYS})
    over_layer = {k: v for k, v in overrides.items() if k not in RUN_RESERVED}
    for layer in (run_layer, over_layer):
        data = deep_merge(data, layer.get("data") or {})
        flat = deep_merge(flat, {k: v for k, v in layer.items() if k != "data"})
        if layer is run_layer and matrix_seed is not None:
            flat["seed"] = int(matrix_seed)
    if seed is not None:
        flat["seed"] = int(seed)
    return _finish(flat, data, spec, run_name, recipe_name, profile_name,
                   reference_epochs=recipe.get("epochs", 1), where=f"{where}: run {run_name}")


def _finish(flat: dict, data: dict, spec, run_name: str, recipe_name: str, profile_name: str,
            reference_epochs: Any, where: str) -> RunConfig:
    """Derived values, then the typed config."""
    from benchmark.data.layout import PreparedLayout

    flat = dict(flat)
    runtime = {k: flat.pop(k) for k in field_names(RuntimeConfig) if k in flat}
    for key in BUILDER_KEYS:
        _check_builder_kwargs(key, flat.get(key) or {}, spec, where)
    if flat.get("transform") is None:
        flat["transform"] = spec.transform
    if flat.get("image_size") in (None, "reference"):
        flat["image_size"] = spec.image_size
    if spec.binary:
        flat["target"] = "binary"
    if not flat.get("allow_pretrained", True) or spec.kind == "sklearn":
        flat["pretrained"] = False
    elif flat.get("pretrained") is True and flat.get("size", "reference") == "tiny" \
            and flat.get("standin_weights"):
        # no ImageNet at size tiny: the synthetic pretraining stand-in (benchmark.pretrain)
        from benchmark.pretrain import weights_path

        backbone = spec.standin_backbone
        flat["pretrained"] = str(weights_path(flat["standin_weights"], backbone)) if backbone else False
    if isinstance(flat.get("early_stop"), int) and not isinstance(flat.get("early_stop"), bool):
        flat["early_stop"] = {"patience": flat["early_stop"]}
    for key in ("model", "sklearn"):
        if flat.get(key) is None:
            flat.pop(key, None)
    _apply_quirks(flat, spec)
    cfg = build(RunConfig, {"run": run_name, "method": spec.name, "recipe": recipe_name,
                            "profile": profile_name, "family": spec.family, "kind": spec.kind,
                            "reference_epochs": reference_epochs, "runtime": runtime, **flat}, where)
    if cfg.epochs < 1:
        raise SewerbenchError(f"{where}: epochs must be >= 1, got {cfg.epochs}")
    if cfg.batch_size < 1:
        raise SewerbenchError(f"{where}: batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.image_size < 1:
        raise SewerbenchError(f"{where}: image_size must be >= 1, got {cfg.image_size}")

    # epoch-based recipe quantities follow the run's length
    ref = cfg.reference_epochs or cfg.epochs
    sched, stop = cfg.schedule, cfg.stop_epoch
    if sched.name == "multistep" and ref != cfg.epochs:
        sched = sched.__class__(**{**sched.__dict__, "milestones": tuple(
            sorted({_scale_epochs(m, cfg.epochs, ref) for m in sched.milestones}))})
    if stop is not None and ref != cfg.epochs:
        stop = min(cfg.epochs - 1, _scale_epochs(stop, cfg.epochs, ref))

    # split CSVs from the prepared layout
    d = build(DataConfig, data, where, prefix="data.")
    layout = PreparedLayout.from_dir(d.prepared)
    paths = {"train_csv": d.train_csv or str(layout.train_csv(cfg.split)),
             "val_csv": d.val_csv or str(layout.val_csv(cfg.split)),
             "full_val_csv": d.full_val_csv or str(layout.val_csv(layout.full_split)),
             "test_csv": d.test_csv or str(layout.test_csv())}
    return cfg.replace(schedule=sched, stop_epoch=stop, reference_epochs=int(ref),
                       data=d.__class__(**{**d.__dict__, **paths}))

