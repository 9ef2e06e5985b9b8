"""Predict class probabilities for a folder of images with a trained model.

:func:`predict_images` is the reusable core (any model whose forward returns logits);
:func:`reference_eval_transform` is the Q2L / MA-Q2L evaluation preprocessing: PIL image
``.convert('RGB')``, ``Resize((N, N))`` on the PIL image (bilinear, PIL's antialiasing, as the
references' torchvision does), ``ToTensor``, ImageNet ``Normalize``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from benchmark.errors import SewerbenchError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def reference_eval_transform(image_size: int) -> Callable:
    """Resize((N, N)) -> ToTensor -> ImageNet Normalize, on PIL images (the references' eval)."""
    from torchvision import transforms
    return transforms.Compose([
        transforms.Resize((image_size, image_size)),
        transforms.ToTensor(),
        transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[str | os.PathLike], transform: Callable):
        self.paths = [str(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            from benchmark.data.images import to_rgb

            with Image.open(self.paths[i]) as img:
                x = self.transform(to_rgb(img, self.paths[i]))
            return x, i, ""
        except Exception as exc:  # reported by the main process with the file name
            return torch.zeros(0), i, f"{type(exc).__name__}: {exc}"


def _collate(batch):
    errors = [(i, e) for _, i, e in batch if e]
    if errors:
        return None, [i for _, i, _ in batch], errors
    return torch.stack([x for x, _, _ in batch]), [i for _, i, _ in batch], []


@torch.no_grad()
def predict_images(model: torch.nn.Module, image_paths: Sequence[str | os.PathLike], transform: Callable,
                   batch_size: int, device: str | torch.device = "cpu", num_workers: int = 0,
                   amp: bool = False) -> tuple[list[str], np.ndarray]:
    """Sigmoid probabilities (N, K) of ``model`` on the images, in the given order.

    Returns (bare filenames, probabilities as float32). Batches follow the order of
    ``image_paths`` (it matters for MA-Q2L's reference mask tiling at batch > 1).
    """
    if batch_size < 1:
        raise SewerbenchError(f"--batch-size: must be >= 1, got {batch_size}")
    device = torch.device(device)
    paths = [str(p) for p in image_paths]
    loader = DataLoader(_ImageFiles(paths, transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=_collate,
                        pin_memory=device.type == "cuda")
    model.eval().to(device)
    out: list[np.ndarray] = []
    for x, idx, errors in tqdm(loader, desc="predict", unit="batch", disable=None):
        if errors:
            i, err = errors[0]
            raise SewerbenchError(f"{paths[i]}: cannot read image ({' '.join(err.split())[:200]})")
        x = x.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=amp):
            logits = model(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        out.append(torch.sigmoid(logits.float()).cpu().numpy())
    probs = np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
    return [Path(p).name for p in paths], probs


def list_images(folder: str | os.PathLike) -> list[str]:
    """Every image below ``folder`` (recursive), sorted by bare filename; duplicates are an error."""
    from benchmark.data.images import ImageIndex
    index = ImageIndex(folder)
    names = index.filenames
    if not names:
        raise SewerbenchError(f"{folder}: no images found")
    return [index.path(n) for n in names]


def write_scores(path: str | os.PathLike, filenames: Sequence[str], probs: np.ndarray) -> None:
    """Scores CSV (Filename + 17 class columns), rows sorted by filename, written atomically."""
    from benchmark.scores import write_scores_csv
    order = np.argsort(np.asarray(filenames, dtype=object), kind="stable")
    write_scores_csv(path, [filenames[i] for i in order], np.asarray(probs)[order])
