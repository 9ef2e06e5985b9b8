"""``sewerbench predict``: scores CSV from a Query2Label / MA-Q2L checkpoint (reference or ours)."""
from __future__ import annotations

import logging
from pathlib import Path

from benchmark.errors import SewerbenchError

NAME = "predict"
HELP = ("scores CSV (Filename + 17 class probabilities) of a folder of images from an MA-Q2L or "
        "Query2Label checkpoint (the authors' released files or ours, reference eval "
        "preprocessing), or of one of our trained runs on a split CSV (--run DIR --csv SPLIT.csv)")

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--run", metavar="DIR",
                   help="a finished `sewerbench train` run folder: predict with its selected model on "
                        "--csv (any method, incl. binary stage-1 runs: Filename,Defect)")
    p.add_argument("--csv", metavar="SPLIT.csv",
                   help="with --run: split CSV to score (official header, or Filename only)")
    p.add_argument("--method", choices=["maq2l", "q2l"], help="model family (checkpoint mode)")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="torch.save dict with 'state_dict' (keys may start with 'module.') or a state_dict")
    p.add_argument("--images", metavar="DIR", help="folder of images (searched recursively)")
    p.add_argument("--image-size", type=int, default=448, metavar="N",
                   help="resize to N x N (a multiple of 32; default 448)")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="batch size (checkpoint mode: default 1, as the MA-Q2L reference inference; "
                        "--run: default the run's eval batch; scores do not depend on it)")
    p.add_argument("--mask-tiling", choices=["reference", "per_sample"], default="reference",
                   help="MA-Q2L mask tiling over heads; 'reference' reproduces the authors' code, whose "
                        "output at batch > 1 depends on the batch composition (default reference)")
    p.add_argument("--heads", type=int, default=None, metavar="H",
                   help="attention heads (not stored in checkpoints; default 4, the reference)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when available)")
    p.add_argument("--workers", type=int, default=2, help="image loading processes (default 2)")
    p.add_argument("--amp", action="store_true", help="autocast (mixed precision) inference")
    p.add_argument("--out", required=True, metavar="FILE", help="scores CSV to write")


def _run_mode(args) -> int:
    from benchmark.io import check_not_inside_inputs, check_output_file
    from benchmark.train.inference import predict_run

    if args.batch_size is not None and args.batch_size < 1:
        raise SewerbenchError(f"--batch-size: must be >= 1, got {args.batch_size}")
    if not args.csv:
        raise SewerbenchError("--run needs --csv SPLIT.csv (the images to score)")
    if not (Path(args.run) / "config.json").is_file():
        raise SewerbenchError(f"{args.run}: not a finished run folder (no config.json)")
    if not Path(args.csv).is_file():
        raise SewerbenchError(f"{args.csv}: no such file")
    check_output_file(args.out)
    run = Path(args.run)
    check_not_inside_inputs(args.out, [("--csv", args.csv), ("--run best.pt", run / "best.pt"),
                                       ("--run config.json", run / "config.json")])
    names, _ = predict_run(args.run, args.csv, args.out, batch_size=args.batch_size, device=args.device)
    log.info("wrote %d rows to %s", len(names), args.out)
    return 0


def run(args) -> int:
    import torch

    if args.run:
        return _run_mode(args)
    missing = [f"--{k}" for k in ("method", "checkpoint", "images") if not getattr(args, k)]
    if missing:
        raise SewerbenchError(f"checkpoint mode needs {', '.join(missing)} (or use --run DIR --csv SPLIT.csv)")
    from benchmark.predict import list_images, predict_images, reference_eval_transform, write_scores
    from methods.checkpoint import build_from_checkpoint

    if args.image_size <= 0 or args.image_size % 32:
        raise SewerbenchError(f"--image-size: must be a positive multiple of 32, got {args.image_size}")
    args.batch_size = 1 if args.batch_size is None else args.batch_size
    if args.batch_size < 1:
        raise SewerbenchError(f"--batch-size: must be >= 1, got {args.batch_size}")
    if args.workers < 0:
        raise SewerbenchError(f"--workers: must be >= 0, got {args.workers}")
    if Path(args.out).is_dir():
        raise SewerbenchError(f"{args.out}: --out is a directory, expected a file path")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise SewerbenchError(f"--device: unknown device {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SewerbenchError("--device: CUDA requested but not available")

    paths = list_images(args.images)
    model = build_from_checkpoint(args.method, args.checkpoint, mask_tiling=args.mask_tiling,
                                  nheads=args.heads).float()
    names, probs = predict_images(model, paths, reference_eval_transform(args.image_size),
                                  args.batch_size, device, num_workers=args.workers, amp=args.amp)
    if probs.shape[1] != 17:
        raise SewerbenchError(f"{args.checkpoint}: model has {probs.shape[1]} classes, a scores CSV needs 17")
    write_scores(args.out, names, probs)
    log.info("wrote %d rows to %s", len(names), args.out)
    return 0
