"""GIST descriptor (Oliva & Torralba 2001), vectorised with numpy FFTs.

Follows the LEAR C implementation wrapped by ``lear-gist-python`` that the Sewer-ML code calls
as ``gist.extract(img, nblocks=4, orientations_per_scale=(8, 8, 8, 8))`` on a 128x128 image
whose three channels all hold the grey value, keeping ``descriptor[:512]`` (the first colour
channel; with equal channels it is the grey-level GIST):

1. the reference preprocessing (Sewer-ML ``gist_extractor.py:25-31``), on the image at its
   original resolution: grey = mean of the three channels written back into the uint8 image
   (truncated); then ``cv2.resize(img, (128, 128))`` with its default INTER_LINEAR, which does
   not antialias. :func:`resize_linear_cv2` is that resize re-implemented bit for bit
   (OpenCV's 11-bit fixed-point weights and rounding, its border handling, and its switch to
   2x2 averaging for an exact 2x downscale); ``tests/test_myrans_protocol.py`` checks it
   against OpenCV itself;
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


_COEF_BITS = 11                     # OpenCV INTER_RESIZE_COEF_BITS
_COEF_SCALE = 1 << _COEF_BITS


def _cv2_taps(src: int, dst: int, clamp: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and fixed-point weights of OpenCV's INTER_LINEAR along one axis.

    Positions are half-pixel centred and computed in float32 as OpenCV does; weights are
    rounded to 11 bits. Along x (``clamp``) a position left of the first or right of the last
    pixel takes that pixel with weight 1; along y OpenCV keeps the fractional weight and clips
    the two row indices instead, which rounds differently at the top and bottom rows.
    """
    scale = 1.0 / (float(dst) / float(src))
    pos = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    lo = np.floor(pos).astype(np.int64)
    frac = (pos - lo.astype(np.float32)).astype(np.float32)
    if clamp:
        left = lo < 0
        frac[left], lo[left] = 0, 0
        right = lo >= src - 1
        frac[right], lo[right] = 0, src - 1
    w0 = np.rint((np.float32(1) - frac) * np.float32(_COEF_SCALE)).astype(np.int64)
    w1 = np.rint(frac * np.float32(_COEF_SCALE)).astype(np.int64)
    return np.clip(lo, 0, src - 1), np.clip(lo + 1, 0, src - 1), w0, w1


def resize_linear_cv2(grey: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """``cv2.resize(grey, (w, h))`` (INTER_LINEAR, no antialiasing) of one (H, W) uint8 image,
    bit-exact; ``size`` is an int or (h, w)."""
    grey = np.asarray(grey)
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise SewerbenchError(f"gist: expected an (H, W) uint8 image, got {grey.dtype} {grey.shape}")
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    src_h, src_w = grey.shape
    if min(h, w, src_h, src_w) < 1:
        raise SewerbenchError(f"gist: cannot resize {grey.shape} to {(h, w)}")
    if (src_h, src_w) == (h, w):
        return grey.copy()
    g = grey.astype(np.int64)
    eps = np.finfo(np.float64).eps
    if abs(src_w / w - 2) < eps and abs(src_h / h - 2) < eps:
        # OpenCV treats an exact 2x downscale as INTER_AREA: 2x2 means, rounded half up
        return ((g[0::2, 0::2] + g[0::2, 1::2] + g[1::2, 0::2] + g[1::2, 1::2] + 2) >> 2).astype(np.uint8)
    x0, x1, a0, a1 = _cv2_taps(src_w, w, clamp=True)
    y0, y1, b0, b1 = _cv2_taps(src_h, h, clamp=False)
    rows = g[:, x0] * a0 + g[:, x1] * a1            # horizontal pass, 11 fractional bits
    top, bottom = rows[y0] >> 4, rows[y1] >> 4       # vertical pass as OpenCV's 8-bit kernel
    out = (((b0[:, None] * top) >> 16) + ((b1[:, None] * bottom) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def reference_grey(image: np.ndarray) -> np.ndarray:
    """The reference's grey image of one HxWx3 (or HxW) uint8 image: the channel mean
    truncated to uint8 (the order of the channels does not matter)."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.uint8, copy=False)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise SewerbenchError(f"gist: an image must be (H, W, 3) or (H, W), got {image.shape}")
    return np.mean(image, axis=2).astype(np.uint8)


def gist_preprocess(images, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """The reference GIST input of a batch: (N, H, W, 3) or (N, H, W) uint8, or a sequence of
    HxWx3 / HxW uint8 images of any sizes (at their original resolution). Each becomes grey
    at full resolution, then the OpenCV INTER_LINEAR resize -> (N, image_size, image_size) uint8."""
    if isinstance(images, np.ndarray) and images.ndim not in (3, 4):
        raise SewerbenchError(f"gist: images must be (N, H, W, 3), (N, H, W) or a list of images, "
                              f"got an array of shape {images.shape}")
    if int(image_size) < 8:
        raise SewerbenchError(f"gist: image_size must be at least 8, got {image_size}")
    seq = list(images)
    out = np.empty((len(seq), int(image_size), int(image_size)), dtype=np.uint8)
    for i, img in enumerate(seq):
        img = np.asarray(img)
        if img.dtype != np.uint8:
            raise SewerbenchError(f"gist: images must be uint8, image {i} is {img.dtype}")
        g = reference_grey(img)
        if g.shape[0] < 8 or g.shape[1] < 8:
            raise SewerbenchError(f"gist: images must be at least 8x8, image {i} is "
                                  f"{g.shape[0]}x{g.shape[1]}")
        out[i] = resize_linear_cv2(g, int(image_size))
    return out


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


def gist_descriptor(images, image_size: int = IMAGE_SIZE, n_blocks: int = N_BLOCKS,
                    orientations: tuple[int, ...] = ORIENTATIONS,
                    chunk: int = 128) -> np.ndarray:
    """GIST of a batch of uint8 images at their original resolution (see
    :func:`gist_preprocess`) -> (N, n_blocks^2 * sum(orientations)) float32 (512 with the
    defaults)."""
    grey = gist_preprocess(images, image_size)
    orientations = tuple(int(o) for o in orientations)
    bank = gabor_bank(grey.shape[1], grey.shape[2], orientations)
    out = np.empty((grey.shape[0], len(bank) * n_blocks * n_blocks), dtype=np.float32)
    for start in range(0, grey.shape[0], chunk):
        x = grey[start:start + chunk].astype(np.float64)
        spec = np.fft.fft2(prefilter(x))
        feats = [_block_means(np.abs(np.fft.ifft2(spec * g)), n_blocks) for g in bank]
        out[start:start + chunk] = np.concatenate(feats, axis=1)
    return out
