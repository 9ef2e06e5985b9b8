"""Training step of MA-Q2L and Query2Label against the authors' code, side by side.

``sewerbench bench --reference maq2l=DIR --reference q2l=DIR`` points at local checkouts of
the authors' repositories (shengyu27/MA-Q2L, SlongLiu/query2labels; nothing is downloaded and
no code of theirs ships with sewerbench). For each method it builds

* **ours**: ``methods.build(name, size="reference", image_size=224)`` with the engine's
  optimiser (:func:`benchmark.train.optim.build_optimizer`, the recipe's family and weight-decay
  groups, fused kernels where torch has them), and
* **theirs**: the reference builder (``lib/models/MAQ2L.py: build_MAQ2L`` /
  ``lib/models/query2label.py: build_q2l``) with the arguments of their ``main.py`` defaults
  (ResNet-101, hidden 2048, feed-forward 8192, 1 encoder and 2 decoder layers, 4 heads, dropout
  0.1, sine positions, no input projection) and the optimiser of their ``main.py`` (torch's
  default kernels: ``Adam`` over ``add_weight_decay`` groups for MA-Q2L's ``Adam_twd``,
  ``AdamW`` over every trainable parameter for Q2L),

loads our weights into theirs (``strict``; the layouts are the same), checks that both give the
same logits in eval mode, and times one training step each -- forward, BCE-with-logits,
backward, optimiser step; fp32, batch 4, 224 px by default -- in interleaved repetitions (the
order alternates, so drift on a shared machine falls on both).

Importing their tree. Their packages import modules that the ResNet-101 path never uses (CvT,
Swin, Hiera: ``einops``, ``addict``, ``cv2`` ...), and ``torchvision.models.utils``, which newer
torchvision removed. While a reference is built, an import *made from inside its tree* that
nothing can resolve gets an empty placeholder module, and torchvision's ResNet builders accept
the old ``pretrained=`` argument (ignored: no ImageNet download; our weights are loaded after).
Afterwards every module imported from the tree is removed from ``sys.modules`` and torchvision
is restored, so the two references (which both name a top-level ``lib`` or ``models``) never
see each other. The checkout's code runs in this process: point ``--reference`` only at code
you trust, as you would when running it yourself.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import io
import logging
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from benchmark.errors import SewerbenchError

log = logging.getLogger(__name__)

#: The issue's side-by-side configuration (224 px, fp32, batch 4 on CPU).
IMAGE_SIZE = 224
BATCH = 4
#: torchvision ResNet builders that the references call with ``pretrained=``.
_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


@dataclass(frozen=True)
class Reference:
    repo: str              # GitHub owner/name of the authors' code
    path_entry: str        # folder of the checkout that their scripts put on sys.path
    module: str            # module with the builder
    builder: str
    optimizer: str         # their main.py default: "adam_twd" | "adamw"
    lr: float              # their main.py default learning rate
    weight_decay: float

    def builder_file(self, root: Path) -> Path:
        return root / self.path_entry / (self.module.replace(".", "/") + ".py")


REFERENCES: dict[str, Reference] = {
    "maq2l": Reference("shengyu27/MA-Q2L", ".", "lib.models.MAQ2L", "build_MAQ2L",
                       "adam_twd", 1e-5, 1e-2),
    "q2l": Reference("SlongLiu/query2labels", "lib", "models.query2label", "build_q2l",
                     "adamw", 1e-4, 1e-2),
}


def reference_args(image_size: int = IMAGE_SIZE) -> argparse.Namespace:
    """The model arguments of the references' ``main.py`` defaults (Sewer-ML: 17 classes)."""
    return argparse.Namespace(
        backbone="resnet101", hidden_dim=2048, dim_feedforward=8192, enc_layers=1, dec_layers=2,
        nheads=4, dropout=0.1, position_embedding="sine", img_size=image_size, num_class=17,
        keep_input_proj=False, keep_other_self_attn_dec=False, keep_first_self_attn_dec=False,
        pre_norm=False, pretrained=False)


def parse_references(items: list[str] | None) -> dict[str, Path]:
    """``["maq2l=DIR", ...]`` -> {method: checkout}; a one-line error for a bad item."""
    out: dict[str, Path] = {}
    for item in items or []:
        name, sep, folder = item.partition("=")
        name = name.strip()
        if not sep or not folder:
            raise SewerbenchError(f"--reference: give METHOD=DIR, got {item!r}")
        if name not in REFERENCES:
            raise SewerbenchError(f"--reference: no reference code is known for {name!r} "
                                  f"(choose from {', '.join(REFERENCES)})")
        if name in out:
            raise SewerbenchError(f"--reference: {name} given twice")
        root = Path(folder).expanduser()
        ref = REFERENCES[name]
        if not ref.builder_file(root).is_file():
            raise SewerbenchError(f"--reference: {root}: not a checkout of {ref.repo} "
                                  f"(no {ref.builder_file(root).relative_to(root)})")
        out[name] = root.resolve()
    return out


def _inside(path: str | None, root: Path) -> bool:
    if not path:
        return False
    try:
        return Path(path).resolve().is_relative_to(root)
    except (OSError, ValueError):
        return False


class _Placeholder(types.ModuleType):
    """An unresolvable module imported by the reference tree: any attribute is a new class
    that takes any arguments (enough for imports, base classes and decorators at import time)."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__init__": lambda self, *a, **k: None})


class _TreeFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Last on ``sys.meta_path``: a placeholder for what nothing else finds, but only for
    imports whose importing frame is a file of the reference tree."""

    def __init__(self, root: Path):
        self.root = root
        self.placeholders: list[str] = []

    def _from_tree(self) -> bool:
        f = sys._getframe(2)
        while f is not None and (f.f_code.co_filename.startswith("<frozen")
                                 or "importlib" in f.f_code.co_filename):
            f = f.f_back
        return f is not None and _inside(f.f_code.co_filename, self.root)

    def find_spec(self, name, path=None, target=None):
        if self._from_tree():
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        if spec.name == "torchvision.models.utils":   # removed in torchvision 0.13+
            import torch

            mod = types.ModuleType(spec.name)
            mod.load_state_dict_from_url = torch.hub.load_state_dict_from_url
        else:
            mod = _Placeholder(spec.name)
        mod.__path__ = []
        self.placeholders.append(spec.name)
        return mod

    def exec_module(self, module) -> None:
        return None


@contextlib.contextmanager
def reference_tree(root: Path, path_entry: str = ".") -> Iterator[_TreeFinder]:
    """Import from the reference checkout ``root`` inside the block; afterwards its
    ``sys.path`` entry and placeholder finder are gone, torchvision's ResNet builders are
    restored and no module of the tree (or placeholder) is left in ``sys.modules``."""
    import torchvision.models as tvm

    root = Path(root).resolve()
    before = set(sys.modules)
    originals = {n: getattr(tvm, n) for n in _RESNETS}

    def old_api(fn: Callable) -> Callable:
        def build(*args, pretrained: bool = False, **kw):
            kw.setdefault("weights", None)
            return fn(*args, **kw)
        return build

    finder = _TreeFinder(root)
    entry = str(root / path_entry)
    sys.path.insert(0, entry)
    sys.meta_path.append(finder)
    for n, fn in originals.items():
        setattr(tvm, n, old_api(fn))
    try:
        yield finder
    finally:
        # only what this block added: the libraries it imported may have added finders too
        sys.path.remove(entry)
        sys.meta_path.remove(finder)
        for n, fn in originals.items():
            setattr(tvm, n, fn)
        drop = []
        for name in set(sys.modules) - before:   # decide first: a namespace path needs its parent
            mod = sys.modules[name]
            where = [getattr(mod, "__file__", None), *list(getattr(mod, "__path__", None) or [])]
            if name in finder.placeholders or any(_inside(w, root) for w in where):
                drop.append(name)
        for name in drop:
            del sys.modules[name]
        importlib.invalidate_caches()


def build_reference(name: str, root: Path, image_size: int = IMAGE_SIZE):
    """The authors' model for ``name`` from the checkout ``root`` (random weights)."""
    ref = REFERENCES[name]
    printed = io.StringIO()   # their prints ("set model.input_proj to Indentify!") go to the log
    with reference_tree(root, ref.path_entry), contextlib.redirect_stdout(printed):
        try:
            mod = importlib.import_module(ref.module)
            model = getattr(mod, ref.builder)(reference_args(image_size))
        except Exception as e:   # their code: any failure is reported in one line
            first = (str(e).splitlines() or [""])[0]
            raise SewerbenchError(f"--reference {name}: {root}: cannot build {ref.module}."
                                  f"{ref.builder}: {type(e).__name__}: {first}") from None
    for line in printed.getvalue().splitlines():
        log.debug("%s reference: %s", name, line)
    return model


def _optimizer_config(ref: Reference) -> dict:
    """Their ``main.py`` optimiser as a recipe entry: ``Adam_twd`` is Adam with no decay on
    biases and 1-d parameters (their ``add_weight_decay``), ``AdamW`` decays every parameter;
    lr scaled by batch / 256 (their ``args.lr_mult``)."""
    cfg = ({"name": "adamw", "decay_filter": "all"} if ref.optimizer == "adamw"
           else {"name": "adam", "decay_filter": "no_bias_1d"})
    return {**cfg, "lr": ref.lr, "weight_decay": ref.weight_decay, "lr_batch_scale": 256}


def reference_optimizer(model, ref: Reference, batch: int):
    """The optimiser of their ``main.py``, with torch's default kernels."""
    from benchmark.train.optim import build_optimizer

    return build_optimizer(model, _optimizer_config(ref), batch, fused=False)


def _our_optimizer(model, ref: Reference, batch: int):
    """The same optimiser as the engine builds it (fused kernels where torch has them)."""
    import torch

    from benchmark.train.optim import build_optimizer, fused_for

    return build_optimizer(model, _optimizer_config(ref), batch,
                           fused=fused_for(model, torch.device("cpu")))


def bench_reference(name: str, root: Path, warmup: int, reps: int, seed: int = 0,
                    size: str = "reference", image_size: int = IMAGE_SIZE,
                    batch: int = BATCH) -> dict[str, Any]:
    """One row: our and their training step (images/s, interleaved repetitions), the speedup,
    and the largest logit difference of the two models with the same weights (eval mode)."""
    import torch

    import methods
    from benchmark.timing import summary

    ref = REFERENCES[name]
    torch.manual_seed(seed)
    ours = methods.build(name, size=size, image_size=image_size)
    theirs = build_reference(name, root, image_size)
    try:
        theirs.load_state_dict(ours.state_dict(), strict=True)
    except RuntimeError as e:
        raise SewerbenchError(f"--reference {name}: {root}: the reference model's weights do not "
                              f"match ours: {str(e).splitlines()[0]}") from None
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, image_size, image_size, generator=gen)
    y = (torch.rand(batch, 17, generator=gen) < 0.2).float()
    ours.eval()
    theirs.eval()
    with torch.inference_mode():
        diff = float((ours(x) - theirs(x)).abs().max())
    opts = (_our_optimizer(ours, ref, batch), reference_optimizer(theirs, ref, batch))
    steps = []
    for model, opt in zip((ours, theirs), opts):
        model.train()

        def step(model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
            opt.step()
        steps.append(step)
    for _ in range(warmup):
        for step in steps:
            step()
    times: list[list[float]] = [[], []]
    for r in range(reps):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for i in order:
            t0 = time.perf_counter()
            steps[i]()
            times[i].append(time.perf_counter() - t0)
    ours_s, theirs_s = summary(times[0], batch), summary(times[1], batch)
    return {"method": name, "reference": ref.repo, "image_size": image_size, "batch": batch,
            "precision": "fp32", "params": int(sum(p.numel() for p in ours.parameters())),
            "ours": ours_s, "theirs": theirs_s,
            "speedup": ours_s["median"] / theirs_s["median"],
            "max_abs_logit_diff": diff,
            "optimizer": {who: f"{type(o).__name__} ({'fused' if o.defaults.get('fused') else 'default'} kernel)"
                          for who, o in zip(("ours", "theirs"), opts)}}
