"""Image transforms of the three method families (torchvision transforms v2).

- ``imagenet`` (Q2L / MA-Q2L): train Resize(s, s) + RandAugment + ToTensor + ImageNet
  Normalize; Cutout only when asked for (``cutout=0.5``; the MA-Q2L reference inserts a
  Cutout that is degenerate with its defaults).
- ``sewerml`` (Sewer-ML benchmark models): train Resize(s, s) + RandomHorizontalFlip +
  ColorJitter(0.1, 0.1, 0.1, 0.1) on the PIL image (as the reference) + ToTensor +
  Normalize(Sewer-ML mean/std).
- ``none`` (TResNet / ASL): inputs in [0, 1], no mean/std; train Cutout(0.5) + RandAugment.

The train order follows the references' pipelines: MA-Q2L and Query2Label
(``lib/dataset/get_dataset.py``: Resize, [SLCutoutPIL inserted at position 1 when --cutout],
RandAugment, ToTensor, Normalize) and ASL (``train.py``: Resize, CutoutPIL, RandAugment,
ToTensor): Resize, Cutout, RandAugment, (Sewer-ML: flip, colour jitter), to float, Normalize.

RandAugment is the references' (``randaugment_impl: reference``, the default:
:class:`benchmark.data.randaugment.ReferenceRandAugment`, the PyPI package ``randaugment``
1.0.2 that all three import: 2 of 15 operations, each with probability 0.5, levels 1-9 drawn
per call) or torchvision's ``RandAugment(num_ops, magnitude)`` (``randaugment_impl:
torchvision``; both operations always applied at a fixed magnitude, 14 operations).

Eval (``train=False``) is always Resize(s, s) + ToTensor + the family's Normalize. Every
transform accepts a PIL image, an HxWx3 uint8 numpy array (the cache) or a CxHxW uint8
tensor, and returns a plain float32 CxHxW tensor. Randomness uses torch's generator, and the
reference RandAugment Python's ``random`` and NumPy's global generator, as the package; the
engine seeds torch's per sample and gives each sample its own Python and NumPy generators
(:class:`benchmark.train.data.EpochSeeded`), so DataLoader workers get distinct, seedable
streams.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms import _functional_pil as F_pil
from torchvision.transforms.v2 import functional as F

from benchmark.data.randaugment import chw_to_hwc, hwc_to_chw
from benchmark.errors import SewerbenchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SEWERML_MEAN = (0.523, 0.453, 0.345)
SEWERML_STD = (0.210, 0.199, 0.154)

#: Normalisation (mean, std) per family; None = inputs stay in [0, 1].
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "sewerml": (SEWERML_MEAN, SEWERML_STD),
    "none": None,
}

#: Train-time augmentation defaults per family (each can be overridden by keyword).
AUG_DEFAULTS: dict[str, dict[str, Any]] = {
    "imagenet": {"randaugment": True, "randaugment_impl": "reference", "cutout": 0.0, "flip": 0.0, "jitter": 0.0},
    "sewerml": {"randaugment": False, "randaugment_impl": "reference", "cutout": 0.0, "flip": 0.5, "jitter": 0.1},
    "none": {"randaugment": True, "randaugment_impl": "reference", "cutout": 0.5, "flip": 0.0, "jitter": 0.0},
}
RANDAUGMENT_IMPLS = ("reference", "torchvision")

_AUG_KEYS = {"randaugment", "randaugment_impl", "randaugment_ops", "randaugment_magnitude", "cutout",
             "cutout_holes", "flip", "jitter"}


class Cutout(torch.nn.Module):
    """Paint ``holes`` squares of side ``factor`` x image size with a random colour.

    Follows the ASL / Q2L ``CutoutPIL`` idea (box centred at a uniform random pixel,
    clipped at the border, random RGB fill) on tensors. ``factor=0`` is the identity.
    """

    def __init__(self, factor: float = 0.5, holes: int = 1):
        super().__init__()
        self.factor = float(factor)
        self.holes = int(holes)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if self.factor <= 0 or self.holes <= 0:
            return img
        h, w = img.shape[-2], img.shape[-1]
        ch, cw = int(self.factor * h + 0.5), int(self.factor * w + 0.5)
        out = img.clone()
        for _ in range(self.holes):
            yc = int(torch.randint(h, (1,)))
            xc = int(torch.randint(w, (1,)))
            y1, y2 = max(yc - ch // 2, 0), min(yc + ch // 2, h)
            x1, x2 = max(xc - cw // 2, 0), min(xc + cw // 2, w)
            if img.dtype == torch.uint8:
                color = torch.randint(0, 256, (img.shape[-3], 1, 1), dtype=torch.uint8)
            else:
                color = torch.rand((img.shape[-3], 1, 1), dtype=img.dtype)
            out[..., y1:y2, x1:x2] = color
        return out

    def extra_repr(self) -> str:
        return f"factor={self.factor}, holes={self.holes}"


@functools.lru_cache(maxsize=2)
def _pil_conversion_table(src: str, dst: str) -> np.ndarray:
    """PIL's own ``src`` -> ``dst`` conversion ("HSV" / "RGB") of every 24-bit pixel: a
    (2**24, 3) uint8 table indexed by ``c0 << 16 | c1 << 8 | c2`` (48 MB, ~1 s once per process
    and direction). PIL converts each pixel independently, so looking a pixel up in the table
    gives the same bytes as ``Image.convert(dst)`` on it."""
    i = np.arange(1 << 24, dtype=np.uint32)
    px = np.empty((1 << 24, 3), dtype=np.uint8)
    px[:, 0], px[:, 1], px[:, 2] = i >> 16, (i >> 8) & 255, i & 255
    del i
    img = Image.frombuffer(src, (4096, 4096), px.tobytes(), "raw", src, 0, 1)
    return np.ascontiguousarray(np.asarray(img.convert(dst)).reshape(-1, 3))


def _hsv_to_rgb_table() -> np.ndarray:
    return _pil_conversion_table("HSV", "RGB")


def _rgb_to_hsv_table() -> np.ndarray:
    return _pil_conversion_table("RGB", "HSV")


def pil_adjust_hue(img: Image.Image, hue_factor: float) -> Image.Image:
    """torchvision's ``adjust_hue`` on an RGB PIL image, byte for byte: PIL's RGB -> HSV,
    the hue channel shifted by ``uint8(int32(hue_factor * 255))`` with uint8 wrap-around,
    PIL's HSV -> RGB -- the last step looked up in :func:`_hsv_to_rgb_table` instead of
    converted (PIL's conversion is per pixel and in floating point: 95 of 154 us at 64 px;
    the lookup halves the whole adjustment, 64 and 224 px). Other modes: torchvision's."""
    if img.mode != "RGB":
        return F_pil.adjust_hue(img, hue_factor)
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f"hue_factor ({hue_factor}) is not in [-0.5, 0.5].")
    a = np.asarray(img.convert("HSV")).astype(np.int32)
    shift = int(np.int32(hue_factor * 255).astype(np.uint8))
    idx = ((a[..., 0] + shift) & 255) << 16
    idx |= (a[..., 1] << 8) | a[..., 2]
    return Image.fromarray(np.take(_hsv_to_rgb_table(), idx, axis=0))


#: ColorJitter's four adjustments in its ``fn_idx`` numbering (brightness, contrast,
#: saturation, hue), on PIL images.
_JITTER_STEPS = (F_pil.adjust_brightness, F_pil.adjust_contrast, F_pil.adjust_saturation, pil_adjust_hue)


class PILColorJitter(torch.nn.Module):
    """ColorJitter on the PIL image, as the Sewer-ML reference applies it (torchvision's
    ``transforms.ColorJitter`` in a PIL pipeline): takes and returns a CxHxW uint8 tensor.
    Same parameter draws from torch's generator as ``transforms.ColorJitter.get_params``,
    the same four PIL adjustments in the drawn order, the same bytes (the hue step through
    :func:`pil_adjust_hue`); the PIL kernels are also about 2x faster than the tensor ones
    at 64 px. :func:`jitter_batch` gives the same bytes for a whole batch at once."""

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float):
        super().__init__()
        self.jitter = T.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)

    def draw(self) -> tuple[list[int], tuple[float | None, ...]]:
        """One image's parameters from torch's generator: (order of the four steps, factors)."""
        j = self.jitter
        order, *factors = T.ColorJitter.get_params(j.brightness, j.contrast, j.saturation, j.hue)
        return order.tolist(), tuple(factors)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if not (isinstance(img, torch.Tensor) and img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == 3):
            raise SewerbenchError("transforms: colour jitter expects a 3xHxW uint8 tensor (place it before ToDtype)")
        order, factors = self.draw()
        pil = Image.fromarray(chw_to_hwc(img))
        for k in order:
            if factors[k] is not None:
                pil = _JITTER_STEPS[k](pil, factors[k])
        out = torch.from_numpy(hwc_to_chw(np.asarray(pil)))
        return tv_tensors.Image(out) if isinstance(img, tv_tensors.Image) else out

    def extra_repr(self) -> str:
        return repr(self.jitter)


def _pil_convert(a: np.ndarray, mode: str) -> np.ndarray:
    """PIL's RGB -> ``mode`` conversion of a (n, H, W, 3) uint8 batch as one tall image: PIL
    converts pixel by pixel, so the bytes are those of converting each image."""
    n, h, w, _ = a.shape
    out = np.asarray(Image.fromarray(np.ascontiguousarray(a).reshape(n * h, w, 3)).convert(mode))
    return out.reshape(n, h, w, *out.shape[2:])


def _pil_blend(degenerate: np.ndarray, image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``Image.blend(degenerate, image, alpha)`` (what ``ImageEnhance`` computes), one alpha per
    image of the batch: Pillow's ``ImagingBlend`` evaluates ``in1 + alpha * (in2 - in1)`` per
    byte in C float (alpha rounded to float), clips to [0, 255] and truncates; float32 NumPy
    does the same operations in the same order (no fused multiply-add), so the same bytes."""
    a = alpha.astype(np.float32).reshape(-1, *([1] * (image.ndim - 1)))
    deg = degenerate.astype(np.float32)
    t = image.astype(np.float32)
    t -= deg
    t *= a
    t += deg
    np.clip(t, 0.0, 255.0, out=t)
    return t.astype(np.uint8)


def _blend_flat(a: np.ndarray, degenerate: np.ndarray, f: list[float]) -> np.ndarray:
    """:func:`_pil_blend` of each image with a one-colour ``degenerate`` (one value per image):
    the output byte depends on the input byte only, so each image gets a 256-entry table of
    the blend of every byte value, looked up for its pixels (the same bytes, one pass)."""
    n = len(a)
    values = np.broadcast_to(np.arange(256, dtype=np.uint8), (n, 256))
    lut = _pil_blend(degenerate.reshape(n, 1), values, np.asarray(f))          # (n, 256)
    offset = (np.arange(n, dtype=np.intp) * 256).reshape(n, 1, 1, 1)
    return np.take(lut.reshape(-1), a.astype(np.intp) + offset)


def _jitter_brightness(a: np.ndarray, f: list[float]) -> np.ndarray:
    return _blend_flat(a, np.zeros(len(a), np.uint8), f)


def _jitter_contrast(a: np.ndarray, f: list[float]) -> np.ndarray:
    lum = _pil_convert(a, "L").reshape(len(a), -1)
    # ImageEnhance.Contrast: int(ImageStat mean of the L image + 0.5); the integer sum over the
    # pixel count is the same double division as ImageStat's
    mean = np.floor(lum.sum(axis=1, dtype=np.int64) / lum.shape[1] + 0.5).astype(np.uint8)
    return _blend_flat(a, mean, f)


def _jitter_saturation(a: np.ndarray, f: list[float]) -> np.ndarray:
    return _pil_blend(_pil_convert(a, "L")[..., None], a, np.asarray(f))


def _jitter_hue(a: np.ndarray, f: list[float]) -> np.ndarray:
    for h in f:
        if not -0.5 <= h <= 0.5:
            raise ValueError(f"hue_factor ({h}) is not in [-0.5, 0.5].")
    a32 = a.astype(np.int32)
    hsv = np.take(_rgb_to_hsv_table(), (a32[..., 0] << 16) | (a32[..., 1] << 8) | a32[..., 2], axis=0)
    hsv = hsv.astype(np.int32)
    shift = np.array([int(np.int32(h * 255).astype(np.uint8)) for h in f], np.int32).reshape(-1, 1, 1)
    idx = ((hsv[..., 0] + shift) & 255) << 16
    idx |= (hsv[..., 1] << 8) | hsv[..., 2]
    return np.take(_hsv_to_rgb_table(), idx, axis=0)


_JITTER_BATCH_STEPS = (_jitter_brightness, _jitter_contrast, _jitter_saturation, _jitter_hue)


def jitter_batch(a: np.ndarray, draws: Sequence[tuple[list[int], tuple[float | None, ...]]]) -> np.ndarray:
    """:class:`PILColorJitter` on a (B, H, W, 3) uint8 batch, image ``b`` with its parameters
    ``draws[b]`` (:meth:`PILColorJitter.draw`): the same bytes as jittering each image, at a
    fraction of the per-image cost (the images whose k-th step is the same adjustment go
    through it together). Returns a new array."""
    a = np.array(a, dtype=np.uint8, order="C", copy=True)
    if len(draws) != len(a):
        raise ValueError(f"jitter_batch: {len(draws)} draws for {len(a)} images")
    for k in range(4):
        for op, fn in enumerate(_JITTER_BATCH_STEPS):
            sel = [b for b, (order, factors) in enumerate(draws) if order[k] == op and factors[op] is not None]
            if sel:
                a[sel] = fn(a[sel], [draws[b][1][op] for b in sel])
    return a


class ToUint8(torch.nn.Module):
    """``v2.ToImage`` + ``v2.Resize(size, bilinear, antialias)`` as one step on a plain tensor:
    a PIL image, HxWx3 uint8 array or CxHxW uint8 tensor becomes a contiguous CxHxW uint8
    tensor of ``size`` (the same functional kernels, so the same pixels; an image already at
    ``size``, e.g. from the cache, is not touched). Without the v2 containers' per-call
    bookkeeping it costs ~7 us instead of ~33 us at 64 px, which counts when a tiny model
    trains at hundreds of images a second."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = [int(size[0]), int(size[1])]

    def forward(self, img) -> torch.Tensor:
        if isinstance(img, np.ndarray):
            x = torch.from_numpy(hwc_to_chw(np.atleast_3d(img)))
        elif isinstance(img, Image.Image):
            x = F.pil_to_tensor(img)
        elif isinstance(img, torch.Tensor):
            x = img.as_subclass(torch.Tensor)
        else:
            raise SewerbenchError(f"transforms: expected a PIL image, an HxWx3 uint8 array or a CxHxW tensor, "
                                  f"got {type(img).__name__}")
        if list(x.shape[-2:]) != self.size:
            x = F.resize(x, self.size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        return x

    def extra_repr(self) -> str:
        return f"size={tuple(self.size)}, interpolation=bilinear, antialias=True"


class ToFloat(torch.nn.Module):
    """``v2.ToDtype(float32, scale=True)`` then, when the family normalises,
    ``v2.Normalize(mean, std)``, as functional calls; returns a plain contiguous float32
    tensor (batches collate to plain tensors)."""

    def __init__(self, norm: tuple[tuple[float, ...], tuple[float, ...]] | None):
        super().__init__()
        self.mean = None if norm is None else list(norm[0])
        self.std = None if norm is None else list(norm[1])

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = F.to_dtype(img.as_subclass(torch.Tensor), torch.float32, scale=True)
        if self.mean is not None:
            x = F.normalize(x, mean=self.mean, std=self.std)
        return x.contiguous()

    def extra_repr(self) -> str:
        return "scale to [0, 1]" + ("" if self.mean is None else f", normalize(mean={self.mean}, std={self.std})")


#: Random steps that :class:`BatchPlan` runs on a whole batch: they draw from torch's generator
#: only, so their draws can be made image by image and the work done once for the batch.
_BATCHABLE = (v2.RandomHorizontalFlip, PILColorJitter)


class BatchPlan:
    """A transform ``ToUint8, [RandomHorizontalFlip | PILColorJitter ...], ToFloat`` split into
    per-image parameter draws (:meth:`draw`, in the transform's order and from the same
    generator calls: ``torch.rand(1)`` for a flip, ``ColorJitter.get_params`` for the jitter)
    and one pass over the stacked uint8 batch (:meth:`apply`): the same values as the
    transform image by image (the flip is a reversed copy, :func:`jitter_batch` the same
    bytes, the float step elementwise)."""

    def __init__(self, to_uint8: ToUint8, random: Sequence[torch.nn.Module], to_float: ToFloat):
        self.to_uint8, self.random, self.to_float = to_uint8, tuple(random), to_float

    def draw(self) -> tuple:
        """One image's parameters, one entry per random step."""
        out = []
        for step in self.random:
            if isinstance(step, PILColorJitter):
                out.append(step.draw())
            else:   # v2's _RandomApplyTransform: applied unless torch.rand(1) >= p
                out.append(not bool(torch.rand(1) >= step.p))
        return tuple(out)

    def apply(self, x: torch.Tensor, draws: Sequence[tuple]) -> torch.Tensor:
        """The (B, 3, H, W) uint8 batch ``x`` (from :attr:`to_uint8`), image ``b`` with
        ``draws[b]``, through the random steps and the float step."""
        for s, step in enumerate(self.random):
            params = [d[s] for d in draws]
            if isinstance(step, PILColorJitter):
                hwc = jitter_batch(x.permute(0, 2, 3, 1).numpy(), params)
                x = torch.from_numpy(np.ascontiguousarray(hwc.transpose(0, 3, 1, 2)))
            else:
                sel = [b for b, flip in enumerate(params) if flip]
                if sel:
                    x = x.clone()
                    x[sel] = x[sel].flip(-1)
        return self.to_float(x)


def batch_plan(transform) -> BatchPlan | None:
    """The :class:`BatchPlan` of ``transform`` when it is ``ToUint8``, then only flips and
    :class:`PILColorJitter` steps (none for an eval transform), then ``ToFloat``; else None
    (RandAugment and Cutout stay per image: they draw from Python's and NumPy's generators)."""
    steps = getattr(transform, "transforms", None)
    if not (isinstance(steps, (list, tuple)) and len(steps) >= 2
            and type(steps[0]) is ToUint8 and type(steps[-1]) is ToFloat):
        return None
    middle = steps[1:-1]
    if not all(type(st) in _BATCHABLE for st in middle):
        return None
    return BatchPlan(steps[0], middle, steps[-1])


def deterministic_steps(transform) -> tuple[ToUint8, ToFloat] | None:
    """``(to_uint8, to_float)`` when ``transform`` is exactly ``ToUint8`` + ``ToFloat`` (every
    eval transform, and a train transform without augmentation): it draws no random number,
    and its float step is elementwise, so it can run on a stacked batch with the same values
    (:meth:`benchmark.data.dataset.SewerMLDataset.__getitems__`). Else None."""
    plan = batch_plan(transform)
    if plan is None or plan.random:
        return None
    return plan.to_uint8, plan.to_float


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) <= 0:
        raise SewerbenchError(f"transforms: image_size must be a positive int or (h, w), got {image_size!r}")
    return size  # type: ignore[return-value]


def _randaugment(opts: dict[str, Any]) -> torch.nn.Module:
    impl = opts.get("randaugment_impl") or "reference"
    if impl not in RANDAUGMENT_IMPLS:
        raise SewerbenchError(f"transforms: randaugment_impl must be one of {', '.join(RANDAUGMENT_IMPLS)}, "
                              f"got {impl!r}")
    if impl == "reference":
        tuned = [k for k in ("randaugment_ops", "randaugment_magnitude") if opts.get(k) is not None]
        if tuned:
            raise SewerbenchError(f"transforms: {', '.join(tuned)} set torchvision's RandAugment; the "
                                  "reference RandAugment has no parameters (randaugment_impl: torchvision "
                                  "to use them)")
        from benchmark.data.randaugment import ReferenceRandAugment

        return ReferenceRandAugment()
    ops = opts.get("randaugment_ops")
    mag = opts.get("randaugment_magnitude")
    return v2.RandAugment(num_ops=int(2 if ops is None else ops), magnitude=int(9 if mag is None else mag))


def build_transform(kind: str, image_size: int | Sequence[int], train: bool, **aug: Any) -> v2.Compose:
    """Transform of family ``kind`` ("imagenet", "sewerml" or "none") at ``image_size``.

    Train options (defaults per family in ``AUG_DEFAULTS``): ``randaugment`` (bool),
    ``randaugment_impl`` (``reference`` | ``torchvision``; torchvision's takes
    ``randaugment_ops`` 2, ``randaugment_magnitude`` 9), ``cutout`` (box side as a fraction
    of the image, 0 = off; ``cutout_holes`` 1), ``flip`` (horizontal flip probability),
    ``jitter`` (ColorJitter brightness = contrast = saturation = hue = value, 0 = off).
    Train order: Resize, Cutout, RandAugment, Flip, ColorJitter, to float, Normalize
    (``ToUint8`` ... ``ToFloat``).
    """
    if kind not in NORMALIZATION:
        raise SewerbenchError(f"transforms: unknown normalisation family {kind!r} "
                              f"(choose from {', '.join(NORMALIZATION)})")
    unknown = set(aug) - _AUG_KEYS
    if unknown:
        raise SewerbenchError(f"transforms: unknown augmentation option(s) {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(sorted(_AUG_KEYS))})")
    size = _size(image_size)
    opts = dict(AUG_DEFAULTS[kind])
    opts.update({k: v for k, v in aug.items() if v is not None})

    steps: list[torch.nn.Module] = [ToUint8(size)]
    if train:
        if opts["cutout"] and float(opts["cutout"]) > 0:
            steps.append(Cutout(float(opts["cutout"]), int(opts.get("cutout_holes", 1))))
        if opts["randaugment"]:
            steps.append(_randaugment(opts))
        if opts["flip"] and float(opts["flip"]) > 0:
            steps.append(v2.RandomHorizontalFlip(p=float(opts["flip"])))
        if opts["jitter"] and float(opts["jitter"]) > 0:
            j = float(opts["jitter"])
            steps.append(PILColorJitter(brightness=j, contrast=j, saturation=j, hue=min(j, 0.5)))
    steps.append(ToFloat(NORMALIZATION[kind]))
    return v2.Compose(steps)


def denormalize(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Invert the family's Normalize (for visualisation): back to [0, 1] RGB."""
    norm = NORMALIZATION[kind]
    if norm is None:
        return x
    mean = torch.tensor(norm[0], dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.tensor(norm[1], dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x * std + mean
