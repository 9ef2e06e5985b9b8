"""Every quirk of a reference implementation that shaped its published numbers, named once.

``protocol: published`` (the default) reproduces each quirk; ``protocol: corrected`` fixes it.
The resolver records the quirks a run reproduces in ``RunConfig.quirks`` (config-level ones are
applied there, the others are read by the engine with :func:`active`); the README's quirks table
lists the same entries (a test keeps the two in step).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quirk:
    key: str
    methods: tuple[str, ...]      # registry names the quirk applies to
    reference: str                # repository, file and line
    published: str                # what protocol "published" does
    corrected: str                # what protocol "corrected" does


#: MA-Q2L's training batch (main.py): the batch over which its head-major mask tiling mixes samples.
MAQ2L_TRAIN_BATCH = 16
#: Input size at which the official Sewer-ML inference scored Chen2018's Inception-v3.
CHEN2018_PUBLISHED_EVAL_SIZE = 224

QUIRKS: tuple[Quirk, ...] = (
    Quirk("maq2l_mask_tiling", ("maq2l",),
          "shengyu27/MA-Q2L lib/models/functional_MA.py:204",
          "mask tiled head-major (`cam_mask.repeat(num_heads, 1, 1)`): in a training batch of 16, sample b's heads "
          "get the maps of samples (b*heads + h) mod 16",
          "each sample's own maps in every head (`mask_tiling: per_sample`), in training and evaluation"),
    Quirk("maq2l_batch1_scores", ("maq2l",),
          "shengyu27/MA-Q2L infer.py:73 (batch 1), infer.py:102 (no autocast unless --amp)",
          "final scores (scores_*.csv, predict --run) with batch-1 semantics in fp32, at any eval batch "
          "(at batch 1 the head-major tiling gives each sample its own maps)",
          "final scores with per-sample tiling (the model's), autocast as the run's amp"),
    Quirk("maq2l_val_batch", ("maq2l",),
          "shengyu27/MA-Q2L main.py:314 (val loader batch = training batch), main.py:586",
          "per-epoch validation (model selection) at the training batch (16) with the training tiling",
          "per-epoch validation at the run's eval batch (batch-independent with per-sample tiling)"),
    Quirk("maq2l_ddp_batch", ("maq2l",),
          "shengyu27/MA-Q2L main.py:309 (per-GPU batch = batch / world size)",
          "torchrun only with a per-GPU batch of 16 (the single-GPU tiling); anything else is refused",
          "any number of processes (per-sample tiling does not depend on the batch)"),
    Quirk("degenerate_cutout", ("maq2l", "q2l"),
          "SlongLiu/query2labels lib/dataset/get_dataset.py:25 (SLCutoutPIL without cut_fact); MA-Q2L likewise",
          "Cutout off (the references' Cutout is degenerate with its defaults)",
          "Cutout with the recipe's box size (half the image side)"),
    Quirk("chen2018_eval_224", ("chen2018",),
          "dineshsoudagar/sewer-ml-classification inference.py:127 (`model in [...]` tests the nn.Module)",
          "Inception-v3 trained and selected at 299 px, final scores at 224 px",
          "final scores at the training size (299 px)"),
    Quirk("asl_saves_plain", ("asl_tresnet_l", "asl_resnet101"),
          "Alibaba-MIIL/ASL train.py:140-145 (selects by max(plain, EMA) mAP, saves model.state_dict())",
          "best.pt holds the plain weights of the selected epoch even when the EMA scored higher",
          "best.pt holds the model that was selected (plain or EMA)"),
    Quirk("myrans_column0", ("myrans2018", "myrans2018_binary"),
          "dineshsoudagar/sewer-ml-classification myrans_trainer.py:118-124 (loss), myrans_inference.py:56 (scores)",
          "the 27-point grid search selects on a loss that reads predict_proba[:, 0] (P(negative)) as the "
          "positive score, and the scores written are that column",
          "the same grid search on the positive-class loss; scores = P(positive)"),
)

BY_KEY = {q.key: q for q in QUIRKS}


def applicable(method: str, protocol: str) -> tuple[str, ...]:
    """Keys of the quirks a run of ``method`` reproduces under ``protocol``."""
    if protocol != "published":
        return ()
    return tuple(q.key for q in QUIRKS if method in q.methods)


def active(cfg, key: str) -> bool:
    """Whether run ``cfg`` reproduces quirk ``key``."""
    if key not in BY_KEY:
        raise KeyError(f"unknown quirk {key!r}")
    return key in cfg.quirks


def markdown_table() -> str:
    """The README table of the quirks (reference, published, corrected)."""
    lines = ["| quirk | methods | reference | `published` | `corrected` |", "|---|---|---|---|---|"]
    for q in QUIRKS:
        lines.append(f"| `{q.key}` | {', '.join(q.methods)} | {q.reference} | {q.published} | {q.corrected} |")
    return "\n".join(lines) + "\n"
