"""Result plots (seaborn, PNG, matplotlib Agg backend).

Each ``plot_*`` function takes plain inputs (metric dicts, arrays, DataFrames) and writes one
PNG atomically; :func:`make_all` gathers the inputs from the pipeline's folders.

* per-class F2 grouped by method; F2-CIW against training fraction;
* PR curves per class; label co-occurrence (ground truth vs predicted);
* training curves from ``runs/*/history.csv``;
* CAM overlays (MA-Q2L's mask-attention CAM, decoder cross-attention for Q2L and MA-Q2L)
  with a localisation score (pointing game, CAM IoU) against the synthetic masks.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from benchmark import artifacts as A  # noqa: E402
from benchmark.classes import CLASS_CODES, NORMAL, THRESHOLD  # noqa: E402
from benchmark.data.layout import FULL_SPLIT, PreparedLayout  # noqa: E402
from benchmark.io import atomic_path, atomic_to_csv, atomic_write_json, atomic_write_text  # noqa: E402

log = logging.getLogger(__name__)

SPLIT_FRACTION = {FULL_SPLIT: 1.0, "sub_0.0625": 0.0625}


def _save(fig, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def split_fraction(split: str) -> float:
    """Training fraction of a prepared split name (``full``, ``sub_0.0625``, ``frac_0.25``)."""
    if split in SPLIT_FRACTION:
        return SPLIT_FRACTION[split]
    for prefix in ("frac_", "sub_"):
        if split.startswith(prefix):
            return float(split[len(prefix):])
    raise ValueError(f"unknown split {split!r}")


def cell_label(spec: Mapping[str, Any]) -> str:
    """Method label of a run spec: MA-Q2L cells named by their switches."""
    method = spec.get("method", "?")
    if method == "maq2l":
        model = spec.get("model") or {}
        ma, lc = bool(model.get("mask_attention", True)), bool(model.get("label_correlation", True))
        return {(True, True): "MA-Q2L (MA+LC)", (True, False): "MA-Q2L (MA only)",
                (False, True): "MA-Q2L (LC only)", (False, False): "MA-Q2L (neither)"}[(ma, lc)]
    return {"q2l": "Q2L"}.get(method, method)


# ----------------------------------------------------------------------------- metric plots
def plot_per_class_f2(metrics: Mapping[str, Mapping[str, Any]], out: str | Path,
                      title: str = "Per-class F2 (val)", dpi: int = 110) -> Path:
    """Grouped bars: F2 of each class (17 + Normal) per method; ``metrics`` label -> JSON."""
    rows = []
    codes = list(CLASS_CODES) + [NORMAL]
    for label, m in metrics.items():
        f2 = m[A.NEW][A.F2_CLASS]
        for i, c in enumerate(codes):
            v = f2[i]
            rows.append({"method": label, "class": c,
                         "F2": 100 * (0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else v)})
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(max(10, 0.9 * len(codes) + 0.25 * len(metrics) * len(codes) / 4), 4.8))
    sns.barplot(data=df, x="class", y="F2", hue="method", ax=ax, errorbar=None)
    ax.set_ylabel("F2 (%)")
    ax.set_xlabel("")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=min(4, len(metrics)), loc="upper right")
    return _save(fig, out, dpi)


def plot_f2_vs_fraction(points: pd.DataFrame, out: str | Path,
                        title: str = "F2-CIW (full val) vs training fraction", dpi: int = 110) -> Path:
    """``points``: columns method, fraction, F2 (and optional lo, hi), in %."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (method, g) in enumerate(points.sort_values("fraction").groupby("method", sort=True)):
        color = sns.color_palette("tab10")[i % 10]
        ax.plot(g["fraction"], g["F2"], marker="o", label=method, color=color)
        if {"lo", "hi"} <= set(g.columns) and g[["lo", "hi"]].notna().all().all():
            ax.fill_between(g["fraction"], g["lo"], g["hi"], alpha=0.15, color=color)
    ax.set_xscale("log", base=2)
    fr = sorted(points["fraction"].unique())
    ax.set_xticks(fr)
    ax.set_xticklabels([f"1/{round(1 / f)}" if f < 1 else "1" for f in fr])
    ax.set_xlabel("training fraction")
    ax.set_ylabel("F2-CIW (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, out, dpi)


def plot_pr_curves(scores: np.ndarray, targets: np.ndarray, out: str | Path,
                   title: str = "PR curves", dpi: int = 110) -> Path:
    """One precision-recall panel per class with the official AP in the title."""
    from sklearn.metrics import precision_recall_curve

    from benchmark.metrics import average_precision

    ap = average_precision(scores, targets)
    k = scores.shape[1]
    ncol = 6
    nrow = int(math.ceil(k / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.6 * ncol, 2.4 * nrow), squeeze=False)
    for i in range(nrow * ncol):
        ax = axes[i // ncol][i % ncol]
        if i >= k:
            ax.axis("off")
            continue
        y = (np.asarray(targets[:, i]) == 1).astype(int)
        code = CLASS_CODES[i] if k == len(CLASS_CODES) else str(i)
        if y.sum() == 0:
            ax.text(0.5, 0.5, "no positives", ha="center", va="center", fontsize=8)
        else:
            p, r, _ = precision_recall_curve(y, scores[:, i])
            ax.plot(r, p, lw=1.2)
            ax.axhline(y.mean(), ls=":", lw=0.8, color="grey")
        ax.set_title(f"{code}  AP {100 * ap[i]:.1f}", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out, dpi)


def cooccurrence(labels: np.ndarray) -> np.ndarray:
    """Conditional co-occurrence P(j | i) = #(i and j) / #i (rows: i); 0 where #i = 0."""
    y = (np.asarray(labels) == 1).astype(np.float64)
    c = y.T @ y
    diag = np.diag(c).copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(diag[:, None] > 0, c / diag[:, None], 0.0)
    return p


def plot_cooccurrence(targets: np.ndarray, scores: np.ndarray, out: str | Path,
                      title: str = "Label co-occurrence P(column | row)", threshold: float = THRESHOLD,
                      dpi: int = 110) -> Path:
    """Ground-truth vs predicted (score >= threshold) conditional co-occurrence heatmaps."""
    gt = cooccurrence(targets)
    pred = cooccurrence((np.asarray(scores) >= threshold).astype(int))
    codes = list(CLASS_CODES)[: gt.shape[0]]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6))
    off = ~np.eye(gt.shape[0], dtype=bool)
    vmax = max(0.05, float(max(gt[off].max(initial=0), pred[off].max(initial=0))))
    for ax, mat, name in ((axes[0], gt, "ground truth"), (axes[1], pred, "predicted")):
        shown = np.where(off, mat, np.nan)   # the diagonal (always 1) is left blank
        sns.heatmap(shown, ax=ax, vmin=0, vmax=vmax, cmap="viridis", square=True, xticklabels=codes,
                    yticklabels=codes, cbar_kws={"shrink": 0.7})
        ax.set_title(name)
        ax.tick_params(labelsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out, dpi)


def plot_training_curves(histories: Mapping[str, pd.DataFrame], out: str | Path,
                         title: str = "Training curves", dpi: int = 110) -> Path | None:
    """One panel per run: losses (left axis) and validation mAP / F2-CIW (right axis) per epoch."""
    histories = {k: v for k, v in histories.items() if not v.empty}
    if not histories:
        return None
    n = len(histories)
    ncol = min(4, n)
    nrow = int(math.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.7 * nrow), squeeze=False)
    loss_cols = ("train_loss", "val_loss")
    metric_cols = ("val_mAP", "val_F2_CIW", "ema_val_mAP")
    for i, (run, h) in enumerate(histories.items()):
        ax = axes[i // ncol][i % ncol]
        x = h["epoch"] if "epoch" in h.columns else pd.Series(np.arange(1, len(h) + 1))
        for j, col in enumerate(c for c in loss_cols if c in h.columns):
            ax.plot(x, h[col], marker=".", lw=1, color=("tab:blue", "tab:orange")[j], label=col)
        ax.set_ylabel("loss", fontsize=7)
        ax2 = ax.twinx()
        for j, col in enumerate(c for c in metric_cols if c in h.columns):
            ax2.plot(x, 100 * h[col], marker=".", lw=1, ls="--",
                     color=("tab:green", "tab:red", "tab:olive")[j], label=col)
        ax2.set_ylabel("%", fontsize=7)
        ax.set_title(run, fontsize=8)
        ax.set_xlabel("epoch", fontsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.tick_params(labelsize=6)
        ax2.tick_params(labelsize=6)
        if i == 0:
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = ax2.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, fontsize=6, loc="best")
    for i in range(n, nrow * ncol):
        axes[i // ncol][i % ncol].axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out, dpi)


def plot_cam_overlays(images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None],
                      classes: Sequence[int], maps: Mapping[str, Sequence[np.ndarray]],
                      out: str | Path, scores: Mapping[str, Mapping[str, float]] | None = None,
                      title: str = "Class activation maps", dpi: int = 110) -> Path:
    """Rows: sample images; columns: image (+ mask contour), then one map per method.

    ``maps[method][i]`` is the (K, h, w) map of image i; ``classes[i]`` the class shown.
    ``scores[method]`` (pointing game / CAM IoU) goes into the column titles.
    """
    from benchmark.cam import normalise, upsample

    n = len(images)
    methods = list(maps)
    fig, axes = plt.subplots(n, 1 + len(methods), figsize=(2.7 * (1 + len(methods)), 2.3 * n),
                             squeeze=False)
    for i in range(n):
        img = images[i]
        k = classes[i]
        code = CLASS_CODES[k]
        ax = axes[i][0]
        ax.imshow(img)
        if masks[i] is not None and masks[i][k].any():
            ax.contour(masks[i][k], levels=[0.5], colors="lime", linewidths=0.8)
        ax.set_title(f"{code} (mask)", fontsize=8)
        ax.axis("off")
        for j, method in enumerate(methods):
            ax = axes[i][j + 1]
            m = normalise(upsample(maps[method][i][k:k + 1], img.shape[:2])[0])
            ax.imshow(img)
            ax.imshow(m, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            if masks[i] is not None and masks[i][k].any():
                ax.contour(masks[i][k], levels=[0.5], colors="white", linewidths=0.6)
            yx = np.unravel_index(int(np.argmax(m)), m.shape)
            ax.plot(yx[1], yx[0], marker="x", color="white", ms=6)
            head = method
            if i == 0 and scores and method in scores:
                s = scores[method]
                head += f"\nPG {100 * s['pointing_game']:.0f}%  IoU {100 * s['cam_iou']:.0f}%"
            ax.set_title(head, fontsize=7)
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out, dpi)


def plot_localisation(table: pd.DataFrame, out: str | Path, dpi: int = 110,
                      title: str = "CAM localisation on synthetic masks") -> Path:
    """Bars of pointing game and CAM IoU (in %) per method/map (``table``: method, map, ...)."""
    df = table.melt(id_vars=["method"], value_vars=["pointing_game", "cam_iou"], var_name="score",
                    value_name="value")
    df["value"] = 100 * df["value"]
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.barplot(data=df, x="score", y="value", hue="method", ax=ax, errorbar=None)
    if "random_pointing" in table.columns and table["random_pointing"].notna().any():
        ax.axhline(100 * float(table["random_pointing"].iloc[0]), ls=":", color="grey",
                   label="random point")
    ax.set_ylabel("%")
    ax.set_xlabel("")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, out, dpi)


# ----------------------------------------------------------------------------- CAM driver
def _load_image(path: Path) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def cam_localisation(run_dirs: Mapping[str, Path], val_df: pd.DataFrame, image_root: Path,
                     mask_dir: Path | None, n_images: int, n_overlay: int, seed: int = 0,
                     batch_size: int = 8) -> tuple[dict[str, list[np.ndarray]], dict, list[int], dict]:
    """Maps of each run on sample val images and their localisation scores.

    Returns (maps per "<run> <kind>", scores per same key, picked val row indices, overlay
    inputs ``{"images", "masks", "classes"}`` for the first ``n_overlay`` images). Images are chosen (seeded) among val rows with at least one defect whose
    mask is non-empty when masks exist.
    """
    import torch

    from benchmark.cam import extract_maps, localisation, random_baseline
    from benchmark.data.images import ImageIndex
    from benchmark.data.transforms import build_transform
    from benchmark.train.inference import load_run

    rng = np.random.default_rng(seed)
    y = val_df[list(CLASS_CODES)].to_numpy(np.int64)
    cand = np.flatnonzero(y.sum(axis=1) > 0)
    pick = rng.permutation(cand)[:n_images]
    index = ImageIndex(image_root)
    names = val_df["Filename"].to_numpy()[pick]
    masks: list[np.ndarray | None] = []
    for fn in names:
        if mask_dir is None:
            masks.append(None)
        else:
            from benchmark.synth.generate import load_masks
            masks.append(load_masks(mask_dir, fn))
    raw = [_load_image(index[fn]) for fn in names]
    all_maps: dict[str, list[np.ndarray]] = {}
    for run, rd in run_dirs.items():
        cfg, model, dev = load_run(rd, device="cpu")
        model.float()
        tf = build_transform(cfg.transform, cfg.image_size, train=False)
        for s in range(0, len(raw), batch_size):
            x = torch.stack([tf(im) for im in raw[s:s + batch_size]]).float()
            with torch.no_grad():
                res = extract_maps(model, x)
            for kind in ("cam", "attention"):
                if kind in res:
                    all_maps.setdefault(f"{run} {kind}", []).extend(list(res[kind].numpy()))
    scores: dict[str, dict] = {}
    labels = [y[i] for i in pick]
    have = [i for i, m in enumerate(masks) if m is not None]
    if have:
        base = random_baseline([masks[i] for i in have], [labels[i] for i in have])
        for key, ms in all_maps.items():
            loc = localisation([ms[i] for i in have], [masks[i] for i in have],
                               [labels[i] for i in have])
            loc["random_pointing"] = base
            scores[key] = loc
    shown = []
    for i in range(min(n_overlay, len(pick))):
        pos = np.flatnonzero(labels[i] == 1)
        if masks[i] is not None:
            nonempty = [k for k in pos if masks[i][k].any()]
            pos = np.array(nonempty or list(pos))
        shown.append(int(pos[0]) if len(pos) else 0)
    overlay = {"images": raw[:n_overlay], "masks": masks[:n_overlay], "classes": shown}
    return all_maps, scores, list(pick), overlay


# ----------------------------------------------------------------------------- all plots
def make_all(params: Mapping[str, Any], metrics_dir: str | Path, runs_dir: str | Path,
             prepared: str | Path, out_dir: str | Path) -> list[Path]:
    """Every plot the pipeline produces; missing inputs skip a plot with a warning."""
    from benchmark.matrix import data_kind
    from benchmark.matrix import runs as run_specs
    from benchmark.tables import ci_block, load_metrics

    pcfg = dict(params.get("plots") or {})
    dpi = int(pcfg.get("dpi", 110))
    seed = int(params.get("seed", 0))
    out = Path(out_dir)
    runs_dir = Path(runs_dir)
    layout = PreparedLayout.from_dir(prepared)
    kind = data_kind(layout, params)
    tag = f" [{'SYNTHETIC data' if kind == 'synthetic' else kind}, profile {params.get('profile', 'smoke')}]"
    metrics = load_metrics(metrics_dir)
    runs = run_specs(params)
    written: list[Path] = []

    # per-class F2 grouped by method
    f2_runs = [r for r in pcfg.get("f2_runs", []) if A.EVAL_VAL in metrics.get(r, {})]
    if f2_runs:
        written.append(plot_per_class_f2({r: metrics[r][A.EVAL_VAL] for r in f2_runs},
                                         out / "per_class_f2.png", "Per-class F2, full val" + tag, dpi))
    # F2-CIW vs training fraction
    pts = []
    for run, spec in runs.items():
        m = metrics.get(run, {}).get(A.EVAL_VAL)
        if not m or spec.get("target") == "binary":
            continue
        try:
            fr = split_fraction(str(spec.get("split", FULL_SPLIT)))
        except ValueError:
            continue
        ci = ci_block(m).get(A.F2_CIW) or [None, None]
        pts.append({"method": cell_label(spec), "run": run, "fraction": fr, "F2": 100 * m[A.NEW][A.F2],
                    "lo": None if ci[0] is None else 100 * ci[0],
                    "hi": None if ci[1] is None else 100 * ci[1]})
    if pts:
        df = pd.DataFrame(pts)
        multi = df.groupby("method")["fraction"].nunique()
        df = df[df["method"].isin(multi[multi > 1].index)]
        if not df.empty:
            written.append(plot_f2_vs_fraction(df, out / "f2_vs_fraction.png",
                                               "F2-CIW (full val) vs training fraction" + tag, dpi))
    # PR curves and co-occurrence
    gt_val = layout.val_csv(layout.full_split)
    for key, fn, name in (("pr_run", plot_pr_curves, "pr_curves"),
                          ("cooccurrence_run", plot_cooccurrence, "cooccurrence")):
        run = pcfg.get(key)
        f = runs_dir / str(run) / A.scores_file(A.EVAL_VAL)
        if not run or not f.is_file() or not gt_val.is_file():
            log.warning("plots: %s: no scores for run %s", name, run)
            continue
        from benchmark.scores import load_aligned
        a = load_aligned(f, gt_val)
        if name == "pr_curves":
            written.append(plot_pr_curves(a.scores, a.targets, out / f"{name}_{run}.png",
                                          f"PR curves per class, {run}, full val" + tag, dpi))
        else:
            written.append(plot_cooccurrence(a.targets, a.scores, out / f"{name}_{run}.png",
                                             f"Label co-occurrence P(column | row), {run}, full val" + tag,
                                             dpi=dpi))
    # training curves
    hist = {}
    for run in runs:
        f = Path(metrics_dir) / run / A.HISTORY_FILE   # copied there by the evaluate stage
        if not f.is_file():
            f = runs_dir / run / A.HISTORY_FILE
        if f.is_file():
            try:
                hist[run] = pd.read_csv(f)
            except (pd.errors.EmptyDataError, pd.errors.ParserError):
                log.warning("plots: %s unreadable", f)
    groups = {"maq2l_q2l": [r for r in hist if runs[r].get("method") in ("maq2l", "q2l")],
              "others": [r for r in hist if runs[r].get("method") not in ("maq2l", "q2l")]}
    for g, members in groups.items():
        if members:
            p = plot_training_curves({r: hist[r] for r in members}, out / f"training_curves_{g}.png",
                                     f"Training curves ({g.replace('_', ', ')})" + tag, dpi)
            if p:
                written.append(p)
    # CAM overlays + localisation
    cam_runs = [r for r in pcfg.get("cam_runs", []) if (runs_dir / r / A.CONFIG_FILE).is_file()]
    if cam_runs and gt_val.is_file():
        written += _cam_outputs(cam_runs, runs_dir, layout, out, pcfg, seed, dpi, tag)
    elif pcfg.get("cam_runs"):
        log.warning("plots: CAM: no trained run among %s", pcfg.get("cam_runs"))
    return written


def _cam_outputs(cam_runs, runs_dir: Path, layout: PreparedLayout, out: Path, pcfg, seed, dpi, tag
                 ) -> list[Path]:
    from benchmark.scores import read_ground_truth_csv

    root = Path(layout.image_root) if layout.image_root else None
    if root is None or not root.is_dir():
        log.warning("plots: CAM: image root unknown or missing (%s)", root)
        return []
    val = read_ground_truth_csv(layout.val_csv(layout.full_split))
    mask_dir = root / "masks"
    maps, scores, _pick, ov = cam_localisation(
        {r: runs_dir / r for r in cam_runs}, val, root, mask_dir if mask_dir.is_dir() else None,
        int(pcfg.get("cam_localisation_images", 64)), int(pcfg.get("cam_images", 6)), seed)
    written = []
    n = len(ov["images"])
    if maps and n:
        written.append(plot_cam_overlays(ov["images"], ov["masks"], ov["classes"],
                                         {k: v[:n] for k, v in maps.items()}, out / "cam_overlays.png",
                                         scores, "CAM overlays (val images; green/white: class mask)" + tag,
                                         dpi))
    if scores:
        table = pd.DataFrame([{"method": k, "pairs": v["pairs"], "pointing_game": v["pointing_game"],
                               "cam_iou": v["cam_iou"], "random_pointing": v["random_pointing"]}
                              for k, v in scores.items()])
        atomic_to_csv(table, out / "localisation.csv", float_format="%.4f")
        atomic_write_json(out / "localisation.json", scores)
        lines = ["# CAM localisation (pointing game, CAM IoU) on synthetic masks", "",
                 "Pairs = (image, present class) with a non-empty mask. `cam` = MA-Q2L's mask-attention "
                 "head; `attention` = last decoder layer cross-attention (head mean).", "",
                 "| map | pairs | pointing game (%) | CAM IoU (%) | random point (%) |", "|---|---|---|---|---|"]
        for r in table.itertuples():
            lines.append(f"| {r.method} | {r.pairs} | {100 * r.pointing_game:.1f} | {100 * r.cam_iou:.1f} "
                         f"| {100 * r.random_pointing:.1f} |")
        atomic_write_text(out / "localisation.md", "\n".join(lines) + "\n")
        written += [out / "localisation.csv", out / "localisation.json", out / "localisation.md"]
        written.append(plot_localisation(table, out / "localisation.png", dpi,
                                         "CAM localisation on synthetic masks" + tag))
    return written
