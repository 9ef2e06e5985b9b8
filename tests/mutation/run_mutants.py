#!/usr/bin/env python3
"""Mutation testing with a fixed list of planted bugs (``make mutants``).

Each mutant replaces one exact snippet of one source file and names the fast tests that must
fail because of it. The script never touches the working tree: it copies the tracked and the
untracked, non-ignored files (``git ls-files --cached --others --exclude-standard``) into a
temporary folder, checks that the listed tests pass there unmutated (baseline), then for each
mutant writes the mutated file into the copy, runs its tests with the current interpreter
(the copy first on ``PYTHONPATH``), and restores the file.

Outcomes: ``killed`` (a test failed or errored), ``survived`` (all passed: a gap in the
tests), ``stale`` (the original snippet is not in the file any more, or not exactly once:
the mutant list must be updated), ``error`` (pytest could not run the selection). The exit
status is 0 only when every mutant is killed.

    python tests/mutation/run_mutants.py                 # all mutants
    python tests/mutation/run_mutants.py --list          # the list, nothing run
    python tests/mutation/run_mutants.py --anchors       # every snippet still applies?
    python tests/mutation/run_mutants.py --only ema_decay_ignored --only ap_stable_sort
    python tests/mutation/run_mutants.py --markdown out.md   # also write the result table
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    what: str


ENGINE_INV = "tests/test_engine_invariants.py"
WIRING = "tests/test_maq2l_wiring.py"
METRICS = "tests/test_metrics.py"
BOOT = "tests/test_bootstrap.py"
LOSSES = "tests/test_losses.py"
EMA_UNIT = "tests/test_train_optim.py::test_ema_update_math"
RESUME = "tests/test_train_engine.py::test_killed_and_resumed_equals_uninterrupted"
RESUME_BEST = "tests/test_engine_invariants.py::test_resume_after_the_best_epoch_keeps_the_selection"
COMPARE = "tests/test_evaluate.py::test_compare_command"
ABLATION = "tests/test_tables.py::test_ablation_table_paired_pvalues"

MUTANTS: list[Mutant] = [
    # ------------------------------------------------------------------ metrics
    Mutant("ap_stable_sort", "benchmark/metrics.py",
           "order = np.argsort(scores, axis=0)[::-1]",
           'order = np.argsort(-scores, axis=0, kind="stable")',
           (f"{METRICS}::test_average_precision_hand_and_ties_follow_argsort",),
           "AP ties broken by a stable descending sort instead of argsort()[::-1]"),
    Mutant("threshold_strict", "benchmark/metrics.py",
           "    pred = s >= threshold\n    pred_normal = ~pred.any(axis=1)",
           "    pred = s > threshold\n    pred_normal = ~pred.any(axis=1)",
           (METRICS,), "prediction threshold score > 0.5 instead of >= 0.5"),
    Mutant("np_zero_not_fixed", "benchmark/metrics.py",
           "    out[out == 0] = 1\n", "    out[out < 0] = 1\n",
           (METRICS,), "Np == 0 not replaced by 1 before dividing"),
    Mutant("f2_formula", "benchmark/metrics.py",
           "return (5 * p * r) / (4 * p + r)", "return (5 * p * r) / (4 * r + p)",
           (METRICS,), "F2 weighs precision instead of recall"),
    Mutant("ciw_unweighted", "benchmark/metrics.py",
           "return np.sum(np.asarray(f2_classes) * w, axis=-1) / np.sum(w)",
           "return np.mean(np.asarray(f2_classes), axis=-1)",
           (METRICS,), "F2-CIW as a plain mean over the classes"),
    # ------------------------------------------------------------------ bootstrap / compare
    Mutant("bootstrap_without_replacement", "benchmark/bootstrap.py",
           "np.random.default_rng(c).integers(0, n, size=n, dtype=np.int32)",
           "np.random.default_rng(c).permutation(n).astype(np.int32)",
           (BOOT,), "bootstrap resamples drawn without replacement (permutations)"),
    Mutant("paired_one_sided_p", "benchmark/bootstrap.py",
           "p = min(1.0, 2.0 * min(le + 1, ge + 1) / (n + 1))",
           "p = min(1.0, min(le + 1, ge + 1) / (n + 1))",
           (BOOT, COMPARE, ABLATION), "paired p-value not two-sided"),
    Mutant("paired_delta_sign", "benchmark/bootstrap.py",
           "A.paired_metric(a, b, b - a, [lo, hi], p)", "A.paired_metric(a, b, a - b, [lo, hi], p)",
           (BOOT, COMPARE, ABLATION), "paired delta a - b instead of b - a"),
    Mutant("paired_unpaired_ci", "benchmark/bootstrap.py",
           "delta = db[name] - da[name]", "delta = db[name] - da[name][::-1]",
           (BOOT, COMPARE, ABLATION), "CI of the delta from unpaired replicates"),
    # ------------------------------------------------------------------ losses
    Mutant("asl_gammas_swapped", "methods/losses.py",
           "w = torch.pow(1 - pt, self.gamma_pos * y + self.gamma_neg * (1 - y))",
           "w = torch.pow(1 - pt, self.gamma_neg * y + self.gamma_pos * (1 - y))",
           (LOSSES,), "ASL focusing exponents of positives and negatives swapped"),
    Mutant("q2l_asl_scale", "methods/losses.py",
           "return -loss.sum() / x.size(0) / y.size(1) * self.scale",
           "return -loss.sum() / x.size(0) * self.scale",
           (LOSSES,), "Q2L ASL not divided by the number of classes"),
    Mutant("bottleneck_weight", "methods/losses.py",
           "w[CLASS_INDEX[code]] = factor", "w[CLASS_INDEX[code]] = 1.0",
           (LOSSES,), "MA-Q2L bottleneck classes not up-weighted"),
    Mutant("bce_pos_weight_formula", "methods/losses.py",
           "w = np.where(pos > 0, (n - pos) / np.maximum(pos, 1), 0.0)",
           "w = np.where(pos > 0, n / np.maximum(pos, 1), 0.0)",
           (LOSSES,), "BCE pos_weight N / N_c instead of (N - N_c) / N_c (losses)"),
    Mutant("engine_pos_weight_formula", "benchmark/train/data.py",
           "w = np.where(pos > 0, (n - pos) / np.maximum(pos, 1), 0.0)",
           "w = np.where(pos > 0, n / np.maximum(pos, 1), 0.0)",
           (ENGINE_INV,), "BCE pos_weight N / N_c instead of (N - N_c) / N_c (engine)"),
    # ------------------------------------------------------------------ MA-Q2L wiring
    Mutant("mask_first_layer_only", "methods/transformer.py",
           "tgt = layer(tgt, memory, pos=pos, query_pos=query_pos, mask=mask)",
           "tgt = layer(tgt, memory, pos=pos, query_pos=query_pos, "
           "mask=mask if layer is self.layers[0] else None)",
           (WIRING,), "MA mask added in the first decoder layer only"),
    Mutant("mask_sigmoid", "methods/transformer.py",
           "return torch.matmul(feature, self.cam.linear.weight.t()).permute(0, 2, 1)",
           "return torch.matmul(feature, self.cam.linear.weight.t()).permute(0, 2, 1).sigmoid()",
           (WIRING,), "MA mask squashed by a sigmoid instead of raw"),
    Mutant("mask_tiling_per_sample", "methods/transformer.py",
           "return cam.repeat(num_heads, 1, 1)", "return cam.repeat_interleave(num_heads, dim=0)",
           (WIRING,), "reference (head-major) mask tiling replaced by per-sample tiling"),
    Mutant("label_attention_value", "methods/transformer.py",
           "tgt = self.norm3(tgt + self.dropout3(_attn(self.multihead_attn, q, k, tgt)))",
           "tgt = self.norm3(tgt + self.dropout3(_attn(self.multihead_attn, q, k, q)))",
           (WIRING,), "label self-attention values with query_pos added"),
    Mutant("decoder_final_norm", "methods/transformer.py",
           "            tgt = layer(tgt, memory, pos=pos, query_pos=query_pos, mask=mask)\n"
           "        return self.norm(tgt)",
           "            tgt = layer(tgt, memory, pos=pos, query_pos=query_pos, mask=mask)\n"
           "        return tgt",
           (WIRING,), "final decoder LayerNorm skipped"),
    # ------------------------------------------------------------------ EMA / selection / resume
    Mutant("ema_update_math", "benchmark/train/ema.py",
           "torch._foreach_mul_(fe, d)\n            torch._foreach_add_(fe, fm, alpha=1.0 - d)",
           "torch._foreach_mul_(fe, 1.0 - d)\n            torch._foreach_add_(fe, fm, alpha=d)",
           (EMA_UNIT, ENGINE_INV), "EMA weights decay and (1 - decay) swapped"),
    Mutant("ema_int_buffers", "benchmark/train/ema.py",
           "        for e, m in zip(oe, om):\n            e.copy_(m)", "        for e, m in zip(oe, om):\n            pass",
           (EMA_UNIT, ENGINE_INV), "EMA integer buffers not copied"),
    Mutant("ema_decay_ignored", "benchmark/train/loop.py",
           "ModelEma(model, cfg.ema.decay)", "ModelEma(model)",
           (ENGINE_INV,), "trainer ignores the configured EMA decay"),
    Mutant("ema_once_per_epoch", "benchmark/train/loop.py",
           "            if self.ema is not None:\n                self.ema.update(self.model)",
           "            if self.ema is not None and step + 1 == len(loader):\n"
           "                self.ema.update(self.model)",
           (ENGINE_INV,), "EMA updated once per epoch instead of every step"),
    Mutant("pos_weight_from_val", "benchmark/train/loop.py",
           "self.criterion = build_criterion(cfg, self.train_targets, self.device)",
           "self.criterion = build_criterion(cfg, np.asarray(self.val_ds.targets), self.device)",
           (ENGINE_INV,), "BCE pos_weight from the validation labels"),
    Mutant("best_pt_plain_weights", "benchmark/train/loop.py",
           'src = self.ema.module if which == "ema" else self.model',
           "src = self.model",
           (ENGINE_INV,), "best.pt holds the plain weights when the EMA model was selected"),
    Mutant("selection_prefers_plain", "benchmark/train/selection.py",
           "if ema is not None and better(ema, plain, self.mode):",
           "if ema is not None and better(plain, ema, self.mode):",
           (ENGINE_INV,), "selection takes the worse of plain and EMA"),
    Mutant("resume_without_ema", "benchmark/train/loop.py",
           '            self.ema.module.load_state_dict(st["ema"])',
           "            pass",
           (RESUME, RESUME_BEST), "resume does not restore the EMA weights"),
    Mutant("resume_without_selection", "benchmark/train/loop.py",
           'self.selector = Selector(self.cfg, st["selection"])',
           "self.selector = Selector(self.cfg)",
           (RESUME, RESUME_BEST), "resume forgets the best score so far"),
    Mutant("resume_without_optimizer", "benchmark/train/loop.py",
           '        self.optimizer.load_state_dict(st["optimizer"])\n',
           "",
           (RESUME, RESUME_BEST), "resume does not restore the optimiser state"),
]


# ----------------------------------------------------------------------------- tree copy
def tree_files(root: Path) -> list[str]:
    """Tracked and untracked, non-ignored files of the working tree (read-only git)."""
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard"], check=True, capture_output=True).stdout
    return sorted({p for p in out.decode().split("\0") if p})


def copy_tree(root: Path, dest: Path) -> int:
    n = 0
    for rel in tree_files(root):
        src = root / rel
        if "__pycache__" in Path(rel).parts or not (src.is_file() or src.is_symlink()):
            continue  # deleted in the working tree, or not a plain file
        dst = dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
        n += 1
    return n


# ----------------------------------------------------------------------------- running
def _env(copy: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONDONTWRITEBYTECODE"] = "1"   # no stale bytecode between mutants
    env.setdefault("OMP_NUM_THREADS", "1")
    env["MPLBACKEND"] = "Agg"
    return env


def run_pytest(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:xdist",
           "--no-header", "-rf", *tests]
    try:
        res = subprocess.run(cmd, cwd=copy, env=_env(copy), capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return None, (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    return res.returncode, res.stdout + res.stderr


def first_failure(output: str) -> str:
    m = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.M)
    return m.group(1) if m else ""


def check_imports_from_copy(copy: Path) -> None:
    code = "import benchmark, methods, sys; print(benchmark.__file__); print(methods.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=copy, env=_env(copy), check=True,
                         capture_output=True, text=True).stdout.split()
    for path in out:
        if not Path(path).resolve().is_relative_to(copy.resolve()):
            raise SystemExit(f"run_mutants: {path} is imported from outside the copy {copy}; "
                             "refusing to run (mutants would not be seen)")


def apply(copy: Path, m: Mutant) -> tuple[str | None, str]:
    """Mutate the copy; returns (original text to restore, "") or (None, stale reason)."""
    f = copy / m.file
    if not f.is_file():
        return None, f"{m.file} not found"
    text = f.read_text(encoding="utf-8")
    count = text.count(m.original)
    if count != 1:
        return None, f"original snippet found {count} times in {m.file}"
    f.write_text(text.replace(m.original, m.replacement, 1), encoding="utf-8")
    return text, ""


def run(mutants: list[Mutant], timeout: float, keep: bool) -> list[dict]:
    tmp = Path(tempfile.mkdtemp(prefix="sewerbench-mutants-"))
    copy = tmp / "tree"
    results = []
    try:
        n = copy_tree(ROOT, copy)
        print(f"copied {n} files of {ROOT} to {copy}", flush=True)
        check_imports_from_copy(copy)
        selections = sorted({t for m in mutants for t in m.tests})
        t0 = time.perf_counter()
        rc, out = run_pytest(copy, tuple(selections), timeout * 3)
        if rc != 0:
            print(out[-4000:])
            raise SystemExit(f"run_mutants: the unmutated tests do not pass (pytest exit {rc}); "
                             "fix them before mutation testing")
        print(f"baseline: {len(selections)} test selections pass unmutated "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        for m in mutants:
            t0 = time.perf_counter()
            original, why = apply(copy, m)
            if original is None:
                results.append({"mutant": m, "result": "stale", "detail": why, "seconds": 0.0})
                print(f"{m.id:28s} STALE    {why}", flush=True)
                continue
            try:
                rc, out = run_pytest(copy, m.tests, timeout)
            finally:
                (copy / m.file).write_text(original, encoding="utf-8")
            if rc is None:
                result, detail = "killed", f"timeout after {timeout:.0f} s"
            elif rc in (1, 2):
                result, detail = "killed", first_failure(out) or f"pytest exit {rc}"
            elif rc == 0:
                result, detail = "survived", "all selected tests passed"
            else:
                result, detail = "error", f"pytest exit {rc}: {out.strip().splitlines()[-1:]}"
            dt = time.perf_counter() - t0
            results.append({"mutant": m, "result": result, "detail": detail, "seconds": dt})
            print(f"{m.id:28s} {result.upper():8s} {detail} ({dt:.0f} s)", flush=True)
    finally:
        if keep:
            print(f"kept {copy}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def markdown(results: list[dict]) -> str:
    lines = ["| mutant | file | planted bug | result | caught by (first failing test) |", "|---|---|---|---|---|"]
    for r in results:
        m = r["mutant"]
        caught = r["detail"].removeprefix("tests/")
        lines.append(f"| `{m.id}` | `{m.file}` | {m.what} | {r['result']} | `{caught}` |")
    killed = sum(r["result"] == "killed" for r in results)
    lines.append("")
    lines.append(f"{killed} of {len(results)} mutants killed, "
                 f"{sum(r['result'] == 'survived' for r in results)} survived, "
                 f"{sum(r['result'] == 'stale' for r in results)} stale, "
                 f"{sum(r['result'] == 'error' for r in results)} errors.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=None, metavar="ID", help="run only this mutant (repeatable)")
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    ap.add_argument("--anchors", action="store_true",
                    help="only check that every original snippet occurs exactly once (no tests run)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (default 300)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    ap.add_argument("--markdown", metavar="FILE", help="also write the result table as Markdown")
    args = ap.parse_args(argv)
    ids = [m.id for m in MUTANTS]
    if len(set(ids)) != len(ids):
        raise SystemExit("run_mutants: duplicate mutant ids")
    chosen = MUTANTS
    if args.only:
        unknown = sorted(set(args.only) - set(ids))
        if unknown:
            raise SystemExit(f"run_mutants: unknown mutant(s) {', '.join(unknown)}; see --list")
        chosen = [m for m in MUTANTS if m.id in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.id:28s} {m.file:32s} {m.what}\n{'':28s} tests: {' '.join(m.tests)}")
        return 0
    if args.anchors:
        bad = 0
        for m in chosen:
            f = ROOT / m.file
            count = f.read_text(encoding="utf-8").count(m.original) if f.is_file() else 0
            if count != 1:
                bad += 1
                print(f"{m.id:28s} STALE    original snippet found {count} times in {m.file}")
        print(f"{len(chosen) - bad} of {len(chosen)} anchors apply")
        return 1 if bad else 0
    results = run(chosen, args.timeout, args.keep)
    table = markdown(results)
    print()
    print(table, end="")
    if args.markdown:
        Path(args.markdown).write_text(table, encoding="utf-8")
    return 0 if all(r["result"] == "killed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
