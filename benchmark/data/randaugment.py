"""The RandAugment of the MA-Q2L, Query2Label and ASL reference code.

All three references call ``RandAugment()`` of the PyPI package ``randaugment`` 1.0.2 on the
PIL image, between their Cutout and ``ToTensor``. That package no longer runs with NumPy >=
1.24 (it builds its tables with ``np.int``), so this module re-implements it on PIL, draw for
draw: ``tests/test_randaugment_reference.py`` checks it against the package itself (run with
``np.int`` restored) on seeded images.

What one call does:

1. draw one of 135 x 135 ordered pairs of (operation, magnitude level) with
   ``random.randint(0, 18224)``: 15 operations x levels 1..9 (of a 0..9 scale) each;
2. apply the first with probability 0.5 (``random.random() < 0.5``), then the second likewise.

Operations (level m; ``np.linspace(a, b, 10)[m]`` = the level's value; ``sign`` = a
``random.choice([-1, 1])`` drawn when the operation runs):

============ ===================================================================================
Invert       ``ImageOps.invert``
Cutout       a square of side ``round(linspace(0, 20))[m]`` (even part of it) centred at
             ``np.random.randint(W)``, ``np.random.randint(H)`` (NumPy's global generator),
             painted (125, 122, 113)
Sharpness    ``ImageEnhance.Sharpness``, factor 1 + sign * linspace(0, 0.9)[m]; also
             Contrast, Color and Brightness
AutoContrast ``ImageOps.autocontrast``
Posterize    ``ImageOps.posterize`` to ``round(linspace(8, 4))[m]`` bits
ShearX/Y     affine shear sign * linspace(0, 0.3)[m], bicubic, fill (128, 128, 128)
TranslateX/Y affine shift sign * linspace(0, 150/331)[m] * width (height), nearest, fill 128
Rotate       ``linspace(0, 30)[m]`` degrees counter-clockwise (never clockwise), nearest,
             corners filled with grey 128
Equalize     ``ImageOps.equalize``
Solarize     ``ImageOps.solarize`` above ``linspace(256, 0)[m]`` (level 9 inverts everything)
============ ===================================================================================

Randomness comes from Python's ``random`` and NumPy's global generator (or the generators
passed in), as in the package; inside the training engine's
:class:`benchmark.train.data.EpochSeeded` it comes from the item's own generators, seeded per
sample and epoch, which draw exactly what the seeded global ones would.
"""
from __future__ import annotations

import random as _random
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps
from torchvision import tv_tensors

from benchmark.errors import SewerbenchError
from benchmark.seed import numpy_random, python_random

OPERATIONS = ("Invert", "Cutout", "Sharpness", "AutoContrast", "Posterize", "ShearX", "TranslateX",
              "TranslateY", "ShearY", "Rotate", "Equalize", "Contrast", "Color", "Solarize", "Brightness")
LEVELS = tuple(range(1, 10))      # magnitude levels used (of 0..9)
APPLY_P = 0.5                     # each of the two operations
FILL = (128, 128, 128)
CUTOUT_FILL = (125, 122, 113)
N_PAIRS = (len(OPERATIONS) * len(LEVELS)) ** 2


def _levels(start: float, stop: float) -> np.ndarray:
    return np.linspace(start, stop, 10)


_VALUES = {
    "ShearX": _levels(0, 0.3), "ShearY": _levels(0, 0.3),
    "TranslateX": _levels(0, 150 / 331), "TranslateY": _levels(0, 150 / 331),
    "Rotate": _levels(0, 30),
    "Color": _levels(0.0, 0.9), "Contrast": _levels(0.0, 0.9), "Sharpness": _levels(0.0, 0.9),
    "Brightness": _levels(0.0, 0.9),
    "Posterize": np.round(_levels(8, 4), 0).astype(np.int64),
    "Solarize": _levels(256, 0),
    "Cutout": np.round(_levels(0, 20), 0).astype(np.int64),
}
_ENHANCERS = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast,
              "Sharpness": ImageEnhance.Sharpness, "Brightness": ImageEnhance.Brightness}


def operation_of(index: int) -> tuple[str, int]:
    """(operation, level) of entry ``index`` (0..134) of the operation list."""
    return OPERATIONS[index // len(LEVELS)], LEVELS[index % len(LEVELS)]


def pair_of(k: int) -> tuple[tuple[str, int], tuple[str, int]]:
    """The two (operation, level) of policy ``k`` (0..18224), first-major."""
    n = len(OPERATIONS) * len(LEVELS)
    return operation_of(k // n), operation_of(k % n)


def apply_operation(img: Image.Image, name: str, level: int, py_random: Any = _random,
                    np_random: Any = np.random) -> Image.Image:
    """One operation at ``level`` on an RGB PIL image (the draws it needs come from the given
    generators: ``random``-like ``choice``, NumPy ``RandomState``-like ``randint``)."""
    if name == "Invert":
        return ImageOps.invert(img)
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    value = _VALUES[name][level]
    if name == "Posterize":
        return ImageOps.posterize(img, int(value))
    if name == "Solarize":
        return ImageOps.solarize(img, value)
    if name in _ENHANCERS:
        return _ENHANCERS[name](img).enhance(1 + value * py_random.choice([-1, 1]))
    if name in ("ShearX", "ShearY"):
        s = value * py_random.choice([-1, 1])
        coeffs = (1, s, 0, 0, 1, 0) if name == "ShearX" else (1, 0, 0, s, 1, 0)
        return img.transform(img.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BICUBIC,
                             fillcolor=FILL)
    if name == "TranslateX":
        shift = value * img.size[0] * py_random.choice([-1, 1])
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, shift, 0, 1, 0), fillcolor=FILL)
    if name == "TranslateY":
        shift = value * img.size[1] * py_random.choice([-1, 1])
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, 0, 0, 1, shift), fillcolor=FILL)
    if name == "Rotate":
        turned = img.convert("RGBA").rotate(value)
        grey = Image.new("RGBA", turned.size, (128,) * 4)
        return Image.composite(turned, grey, turned).convert(img.mode)
    if name == "Cutout":
        w, h = img.size
        half = int(value) // 2
        cx = np_random.randint(low=0, high=w)
        cy = np_random.randint(low=0, high=h)
        arr = np.array(img)
        arr[max(0, cy - half):min(h, cy + half), max(0, cx - half):min(w, cx + half)] = CUTOUT_FILL
        return Image.fromarray(arr, mode=img.mode)
    raise SewerbenchError(f"randaugment: unknown operation {name!r}")


def reference_randaugment(img: Image.Image, py_random: Any = _random, np_random: Any = np.random
                          ) -> Image.Image:
    """One draw of the reference RandAugment on an RGB PIL image."""
    first, second = pair_of(py_random.randint(0, N_PAIRS - 1))
    for name, level in (first, second):
        if py_random.random() < APPLY_P:
            img = apply_operation(img, name, level, py_random, np_random)
    return img


def hwc_to_chw(arr: np.ndarray) -> np.ndarray:
    """A contiguous CxHxW copy of an HxWxC array (NumPy's transpose copy: ~3x faster than
    ``torch.permute(...).contiguous()`` on a small uint8 image)."""
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def chw_to_hwc(img: torch.Tensor) -> np.ndarray:
    """A contiguous HxWxC NumPy copy of a CxHxW CPU tensor (for PIL)."""
    return np.ascontiguousarray(img.as_subclass(torch.Tensor).numpy().transpose(1, 2, 0))


class _LazyNumpy:
    """``numpy_random()`` looked up at the first draw (most images draw nothing from NumPy)."""

    def randint(self, *args, **kwargs):
        return numpy_random().randint(*args, **kwargs)


class ReferenceRandAugment(torch.nn.Module):
    """The references' ``RandAugment()`` as a transform of the engine's pipeline: takes a
    CxHxW uint8 tensor (or an HxWx3 uint8 array or an RGB PIL image) and returns the same kind.

    ``py_random`` / ``np_random`` default to :func:`benchmark.seed.python_random` /
    :func:`~benchmark.seed.numpy_random`: the item's own generators inside the engine's
    :class:`benchmark.train.data.EpochSeeded` (seeded per (seed, epoch, index)), else Python's
    ``random`` module and NumPy's global generator, as the package.
    """

    def __init__(self, py_random: Any = None, np_random: Any = None):
        super().__init__()
        self.py_random = py_random
        self.np_random = np_random

    def forward(self, img):
        py = self.py_random if self.py_random is not None else python_random()
        npr = self.np_random if self.np_random is not None else _LazyNumpy()
        if isinstance(img, Image.Image):
            return reference_randaugment(img.convert("RGB"), py, npr)
        if isinstance(img, np.ndarray):
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise SewerbenchError(f"randaugment: expected an HxWx3 uint8 image, got {img.dtype} {img.shape}")
            return np.array(reference_randaugment(Image.fromarray(img), py, npr))
        if isinstance(img, torch.Tensor):
            if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
                raise SewerbenchError(f"randaugment: expected a 3xHxW uint8 tensor (place RandAugment "
                                      f"before ToDtype), got {img.dtype} {tuple(img.shape)}")
            pil = Image.fromarray(chw_to_hwc(img))
            out = torch.from_numpy(hwc_to_chw(np.asarray(reference_randaugment(pil, py, npr))))
            return tv_tensors.Image(out) if isinstance(img, tv_tensors.Image) else out
        raise SewerbenchError(f"randaugment: unsupported input {type(img).__name__}")

    def extra_repr(self) -> str:
        return "reference (randaugment 1.0.2: 2 of 15 ops, p 0.5 each, levels 1-9 of 10)"
