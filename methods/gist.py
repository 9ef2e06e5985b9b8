"""GIST descriptor (Oliva & Torralba 2001), vectorised with numpy FFTs.

Follows the LEAR C implementation wrapped by ``lear-gist-python`` that the Sewer-ML code calls
as ``gist.extract(img, nblocks=4, orientations_per_scale=(8, 8, 8, 8))`` on a 128x128 image
whose three channels all hold the grey value, keeping ``descriptor[:512]`` (the first colour
channel; with equal channels it is the grey-level GIST):

1. grey = mean of the three channels, truncated to uint8; resized to 128x128 with OpenCV-style
   bilinear interpolation (half-pixel centres, no antialiasing), rounded to uint8;
2. prefilter: log(1 + x); symmetric padding of 5 px; subtract the Gaussian low-pass
   (fc = 4, sigma^2 = fc^2 / ln 2 in frequency units); divide by 0.2 + sqrt(low-pass of x^2);
   remove the padding;
3. Gabor bank in the frequency domain: 4 scales x 8 orientations,
   G = exp(-10 a (r/H/b - 1)(r/W/b - 1) - 2 c pi dtheta^2) with a = 0.35,
   b = 0.3 / 1.85^s, c = 16 n^2 / 32^2 (n orientations), theta = pi k / n;
4. per filter: |ifft(fft(img) G)| averaged over a 4x4 grid of blocks (block edges at
   i*W//4), stored x-block-major (index = 4 * x_block + y_block);
5. filters in scale-major, orientation-minor order: 32 filters x 16 blocks = 512 values.

Arithmetic is float64 (the C code uses float32), so values agree to about 1e-5 relative.
"""
from __future__ import annotations

import functools

import numpy as np

from benchmark.errors import SewerbenchError

DESCRIPTOR_SIZE = 512
IMAGE_SIZE = 128
N_BLOCKS = 4
ORIENTATIONS = (8, 8, 8, 8)
PREFILTER_FC = 4
PADDING = 5


def to_grey_uint8(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) or (N, H, W) uint8 -> (N, H, W) uint8 grey (channel mean, truncated)."""
    images = np.asarray(images)
    if images.ndim == 4:
        if images.shape[-1] != 3:
            raise SewerbenchError(f"gist: images must be (N, H, W, 3), got {images.shape}")
        return images.astype(np.float64).mean(axis=3).astype(np.uint8)
    if images.ndim == 3:
        return images.astype(np.uint8)
    raise SewerbenchError(f"gist: images must be (N, H, W, 3) or (N, H, W), got {images.shape}")


def _linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scale = src / dst
    pos = (np.arange(dst) + 0.5) * scale - 0.5
    lo = np.floor(pos).astype(np.int64)
    frac = pos - lo
    frac = np.where(lo < 0, 0.0, frac)
    lo = np.clip(lo, 0, src - 1)
    frac = np.where(lo >= src - 1, 0.0, frac)
    hi = np.minimum(lo + 1, src - 1)
    return lo, hi, frac


def resize_bilinear(grey: np.ndarray, size: int) -> np.ndarray:
    """OpenCV-style INTER_LINEAR resize of (N, H, W) uint8 to (N, size, size) uint8."""
    n, h, w = grey.shape
    if (h, w) == (size, size):
        return grey
    y0, y1, fy = _linear_taps(h, size)
    x0, x1, fx = _linear_taps(w, size)
    g = grey.astype(np.float64)
    rows = g[:, y0, :] * (1 - fy)[None, :, None] + g[:, y1, :] * fy[None, :, None]
    out = rows[:, :, x0] * (1 - fx)[None, None, :] + rows[:, :, x1] * fx[None, None, :]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _centred_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    fy, fx = np.meshgrid(np.arange(h) - h / 2.0, np.arange(w) - w / 2.0, indexing="ij")
    return fx, fy


@functools.lru_cache(maxsize=8)
def _lowpass(h: int, w: int, fc: float) -> np.ndarray:
    fx, fy = _centred_grid(h, w)
    s1 = fc / np.sqrt(np.log(2.0))
    return np.fft.fftshift(np.exp(-(fx ** 2 + fy ** 2) / s1 ** 2))


@functools.lru_cache(maxsize=8)
def gabor_bank(h: int, w: int, orientations: tuple[int, ...] = ORIENTATIONS) -> np.ndarray:
    """(n_filters, h, w) frequency-domain Gabor filters, DC at [0, 0]."""
    fx, fy = _centred_grid(h, w)
    fr = np.fft.fftshift(np.sqrt(fx ** 2 + fy ** 2))
    f = np.fft.fftshift(np.arctan2(fy, fx))
    filters = []
    for s, n in enumerate(orientations):
        a, b, c = 0.35, 0.3 / 1.85 ** s, 16.0 * n ** 2 / 32.0 ** 2
        for k in range(n):
            t = f + np.pi / n * k
            t = np.where(t < -np.pi, t + 2 * np.pi, np.where(t > np.pi, t - 2 * np.pi, t))
            filters.append(np.exp(-10.0 * a * (fr / h / b - 1) * (fr / w / b - 1)
                                  - 2.0 * c * np.pi * t ** 2))
    return np.stack(filters)


def prefilter(x: np.ndarray, fc: float = PREFILTER_FC, padding: int = PADDING) -> np.ndarray:
    """Whitening + local contrast normalisation of (N, H, W) float images (log applied here)."""
    x = np.log(x + 1.0)
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding)), mode="symmetric")
    g = _lowpass(x.shape[1], x.shape[2], float(fc))
    x = x - np.fft.ifft2(np.fft.fft2(x) * g).real
    local = np.sqrt(np.abs(np.fft.ifft2(np.fft.fft2(x * x) * g)))
    x = x / (0.2 + local)
    return x[:, padding:-padding, padding:-padding]


def _block_means(x: np.ndarray, n_blocks: int) -> np.ndarray:
    """(N, H, W) -> (N, n_blocks * n_blocks), x-block-major like LEAR's down_N."""
    _, h, w = x.shape
    ys = [i * h // n_blocks for i in range(n_blocks + 1)]
    xs = [i * w // n_blocks for i in range(n_blocks + 1)]
    out = np.empty((x.shape[0], n_blocks, n_blocks))
    for k in range(n_blocks):          # x block
        for l in range(n_blocks):      # y block
            out[:, k, l] = x[:, ys[l]:ys[l + 1], xs[k]:xs[k + 1]].mean(axis=(1, 2))
    return out.reshape(x.shape[0], -1)


def gist_descriptor(images: np.ndarray, image_size: int = IMAGE_SIZE, n_blocks: int = N_BLOCKS,
                    orientations: tuple[int, ...] = ORIENTATIONS,
                    chunk: int = 128) -> np.ndarray:
    """GIST of (N, H, W, 3) uint8 images -> (N, n_blocks^2 * sum(orientations)) float32
    (512 with the defaults)."""
    grey = to_grey_uint8(images)
    if grey.shape[1] < 8 or grey.shape[2] < 8 or image_size < 8:
        raise SewerbenchError(f"gist: images must be at least 8x8, got {grey.shape[1:]}")
    orientations = tuple(int(o) for o in orientations)
    bank = gabor_bank(image_size, image_size, orientations)
    out = np.empty((grey.shape[0], len(bank) * n_blocks * n_blocks), dtype=np.float32)
    for start in range(0, grey.shape[0], chunk):
        x = resize_bilinear(grey[start:start + chunk], image_size).astype(np.float64)
        spec = np.fft.fft2(prefilter(x))
        feats = [_block_means(np.abs(np.fft.ifft2(spec * g)), n_blocks) for g in bank]
        out[start:start + chunk] = np.concatenate(feats, axis=1)
    return out
