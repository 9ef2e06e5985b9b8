"""The typed run configuration: frozen dataclasses whose fields hold every default.

A resolved :class:`RunConfig` is what the engine trains, what ``config.json`` in a run folder
holds (:meth:`RunConfig.to_dict`) and what ``sewerbench train --print-config`` prints. It is
built by :func:`benchmark.config.resolve.resolve_run` from params.yaml's layers, or read back
from a run folder with :meth:`RunConfig.from_dict`. Unknown keys are refused with the full
dotted key and a did-you-mean; a value of the wrong type names its key and the expected type.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional, Union

from benchmark.errors import SewerbenchError


class FrozenDict(dict):
    """A read-only dict (builder keyword arguments inside a frozen config)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("configuration sections are read-only; resolve a new RunConfig instead")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted((k, repr(v)) for k, v in self.items())))

    def __deepcopy__(self, memo):
        import copy
        return FrozenDict({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def __reduce__(self):
        return (FrozenDict, (dict(self),))


@dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1.0e-4
    weight_decay: float = 0.0
    decay_filter: Literal["all", "no_bias_1d"] = "all"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1.0e-8
    momentum: float = 0.9            # sgd
    nesterov: bool = False           # sgd
    lr_batch_scale: Optional[int] = None   # lr * global_batch / lr_batch_scale; null or 0 = no scaling


@dataclass(frozen=True)
class ScheduleConfig:
    name: Literal["none", "onecycle", "multistep"] = "none"
    pct_start: float = 0.2           # onecycle (max_lr = optimizer.lr, stepped every iteration)
    div_factor: Optional[float] = None          # onecycle; null = torch's default
    final_div_factor: Optional[float] = None    # onecycle; null = torch's default
    anneal_strategy: Optional[Literal["cos", "linear"]] = None
    cycle_momentum: Optional[bool] = None
    three_phase: Optional[bool] = None
    milestones: tuple[int, ...] = (30, 60, 80)  # multistep (epochs; rescaled when a profile changes epochs)
    gamma: float = 0.1               # multistep


@dataclass(frozen=True)
class EmaConfig:
    enabled: bool = False
    decay: float = 0.9997            # updated every optimiser step


@dataclass(frozen=True)
class LossConfig:
    """The recipe's loss (``methods.losses.build_loss``); a null field keeps the loss's own default."""
    name: Literal["bce", "asl", "q2l_asl", "maq2l_asl"] = "bce"
    gamma_neg: Optional[float] = None
    gamma_pos: Optional[float] = None
    clip: Optional[float] = None
    eps: Optional[float] = None
    disable_torch_grad_focal_loss: Optional[bool] = None
    class_weights: Optional[str] = None          # maq2l_asl: bottleneck | ...
    pos_weight: Union[Literal["auto"], tuple[float, ...], None] = None   # bce: auto = (N - N_c) / N_c of the training labels

    def kwargs(self) -> dict[str, Any]:
        """Builder keyword arguments: the fields that are set (name excluded)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "name" and v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


@dataclass(frozen=True)
class AugConfig:
    """Training augmentation (``benchmark.data.transforms``); null = the family's default."""
    randaugment: Optional[bool] = None
    randaugment_impl: Optional[Literal["reference", "torchvision"]] = None   # null = reference (the randaugment 1.0.2 package of the references)
    randaugment_ops: Optional[int] = None           # torchvision only
    randaugment_magnitude: Optional[int] = None     # torchvision only
    cutout: Optional[float] = None
    cutout_holes: Optional[int] = None
    flip: Optional[float] = None
    jitter: Optional[float] = None

    def kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class EarlyStopConfig:
    patience: int = 8                # epochs after the best (and the EMA score below its best)


@dataclass(frozen=True)
class DataConfig:
    """Where a run's data lives; the CSV paths are derived from the prepared layout."""
    prepared: str = "data/prepared"
    images: Optional[str] = None     # null = the image root recorded by prepare (splits.json)
    cache: Optional[str] = "data/cache"
    train_csv: str = ""
    val_csv: str = ""
    full_val_csv: str = ""
    test_csv: str = ""


@dataclass(frozen=True)
class RuntimeConfig:
    """How a run executes; none of these change what is computed (free to change on resume)."""
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    workers: int = 0
    threads: Optional[int] = None    # torch intra-op threads of the training process (null: torch's default)
    eval_batch_size: Optional[int] = None   # null = batch_size
    amp: bool = False                # autocast (CUDA: fp16 + GradScaler or bf16; CPU: bf16)
    amp_dtype: Literal["float16", "bfloat16", "fp16", "bf16", "half"] = "float16"
    eval_amp: Optional[bool] = None  # autocast when scoring (per-epoch validation, final scores); null = amp
    amp_native_only: bool = False    # CPU bf16 autocast only where the CPU has native bf16 (AVX512-BF16 / AMX);
                                     # elsewhere the run trains and scores in fp32 (config.json records it)
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = True
    progress: bool = True
    use_cache: bool = True           # read images from the image cache (data.cache/<split>/<size>-<codec>)
    cache_codec: Literal["raw", "jpeg", "webp", "png"] = "raw"   # raw uint8 shards, or encoded images
    cache_quality: int = 95          # jpeg / webp quality
    cache_shard_images: int = 2048   # images per shard (the unit of resuming and repair)
    cache_workers: Optional[int] = None
    max_train_images: Optional[int] = None  # seeded cap on the training rows
    max_eval_images: Optional[int] = None   # seeded cap on the per-epoch validation rows
    max_steps_per_epoch: Optional[int] = None  # optimiser steps per epoch at most (dry runs); the schedule follows


#: Runtime keys that may differ between a run and its resumption.
RESUME_FREE = ("progress", "workers", "threads", "device", "eval_batch_size", "cache_workers", "cache_shard_images",
               "compile")


@dataclass(frozen=True)
class RunConfig:
    # identity
    run: str
    method: str
    recipe: str
    profile: str
    family: str = "custom"
    kind: Literal["torch", "sklearn"] = "torch"
    seed: int = 0
    protocol: Literal["published", "corrected"] = "published"   # see benchmark/quirks.py
    quirks: tuple[str, ...] = ()             # derived: the reference quirks this run reproduces
    # model
    size: Literal["tiny", "reference"] = "reference"
    pretrained: Union[bool, str] = False     # ImageNet weights: true = the hub, or a local file
    allow_pretrained: bool = True            # profile switch: false forces pretrained off
    standin_weights: Optional[str] = None    # profile switch: folder of `sewerbench pretrain`; `pretrained: true`
                                             # at size tiny loads the method's stand-in backbone from it
    image_size: int = 0
    transform: Literal["imagenet", "sewerml", "none"] = "imagenet"
    model: Mapping[str, Any] = field(default_factory=FrozenDict)    # builder keyword arguments
    sklearn: Mapping[str, Any] = field(default_factory=FrozenDict)  # kind sklearn: builder keyword arguments
    # task
    split: str = "full"
    target: Literal["multilabel", "binary"] = "multilabel"
    train_on: Literal["all", "defect_only"] = "all"
    # recipe
    epochs: int = 1
    reference_epochs: int = 1                # the recipe's own length (milestones are rescaled from it)
    batch_size: int = 16                     # global batch (all processes together)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    aux_loss_weight: float = 0.4             # Inception-v3 auxiliary head (chen2018)
    grad_clip: Optional[float] = None        # max global grad norm
    selection: Literal["mAP", "val_loss", "F2_CIW", "F1_Normal"] = "mAP"
    early_stop: Optional[EarlyStopConfig] = None
    stop_epoch: Optional[int] = None         # ASL: stop after this epoch although the schedule is longer
    # where and how
    data: DataConfig = field(default_factory=DataConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    # ------------------------------------------------------------------ derived
    @property
    def binary(self) -> bool:
        return self.target == "binary"

    @property
    def num_outputs(self) -> int:
        return 1 if self.binary else 17

    @property
    def selection_mode(self) -> str:
        return "min" if self.selection == "val_loss" else "max"

    @property
    def eval_batch_size(self) -> int:
        return int(self.runtime.eval_batch_size or self.batch_size)

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples as lists) with the derived values alongside."""
        out = _plain(dataclasses.asdict(self))
        out["derived"] = {"binary": self.binary, "num_outputs": self.num_outputs,
                          "selection_mode": self.selection_mode}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "config") -> "RunConfig":
        """Read back a :meth:`to_dict` (e.g. a run folder's config.json), fully validated."""
        data = {k: v for k, v in dict(data).items() if k != "derived"}
        return build(cls, data, where)

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------- conversion
def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key_error(where: str, dotted: str, known) -> SewerbenchError:
    leaf = dotted.rsplit(".", 1)[-1]
    return SewerbenchError(f"{where}: unknown key {dotted!r}{did_you_mean(leaf, known)}; "
                           f"known: {', '.join(sorted(known))}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is tuple:
        return "a list of " + _type_name(typing.get_args(tp)[0])
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is not None and issubclass(origin, Mapping) or tp is Mapping:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


class _Mismatch(Exception):
    pass


def _convert(tp: Any, value: Any, dotted: str, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _Mismatch
        return build(tp, value, where, prefix=f"{dotted}.")
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, dotted, where)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}:
            return value
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, dotted, where) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_convert(a, v, dotted, where) for a, v in zip(args, value))
    if tp is Mapping or origin is Mapping or (origin is not None and isinstance(origin, type)
                                               and issubclass(origin, Mapping)):
        if not isinstance(value, Mapping):
            raise _Mismatch
        return FrozenDict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if tp is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if tp is Any:
        return value
    raise TypeError(f"unsupported config type {tp!r}")


_HINTS: dict[type, dict[str, Any]] = {}


def hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def build(cls: type, data: Mapping[str, Any], where: str, prefix: str = ""):
    """``cls(**data)`` with every key known and every value of its declared type."""
    if not isinstance(data, Mapping):
        raise SewerbenchError(f"{where}: {prefix.rstrip('.') or 'configuration'}: expected a mapping, "
                              f"got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    th = hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise unknown_key_error(where, f"{prefix}{key}", fields)
        try:
            kwargs[key] = _convert(th[key], value, f"{prefix}{key}", where)
        except _Mismatch:
            raise SewerbenchError(f"{where}: {prefix}{key}: expected {_type_name(th[key])}, "
                                  f"got {value!r}") from None
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SewerbenchError(f"{where}: {prefix}: missing key(s) {', '.join(missing)}")
    return cls(**kwargs)


def field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))
