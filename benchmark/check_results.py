"""``sewerbench check --results DIR``: a finished ``dvc repro`` against a committed reference.

The reference (``results/reference/results_<profile>.json``) holds the headline numbers of the
default profile's runs (F2-CIW, F1-Normal, mAP per run and evaluation set, 0-1 scale) and a
tolerance per metric derived from the measured seed spread: ``k`` x the pooled sample sd over
the runs trained with several seeds (``seeds:``), never below ``floor``. ``--update`` writes
it from a finished repro; the comparison reports every value outside its tolerance, a run or
evaluation set that is missing, and a reference written for another profile.

The tolerances hold on the machine that wrote the reference (``machine``: CPU model, torch's
CPU kernel level, torch version). On another CPU type torch's kernels round differently and a
run trains along another trajectory, as with another seed; a single-seed run whose metric sits
near a threshold (F1-Normal) can then move by more than the pooled seed spread of the MA-Q2L
cells. ``--update --merge`` adds a repro from another machine to the reference
(``observations``): the expected values become the machines' mean, and each training split's
tolerance at least ``k`` x the pooled spread between the machines over that split's runs
(:func:`build_reference`). :func:`machine_note` says so when this machine is none of them.
"""
from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from benchmark import artifacts as A
from benchmark.errors import SewerbenchError

HEADLINE = (A.F2_CIW, A.F1_NORMAL, "mAP")
FORMAT = 1
DEFAULT_K = 3.0
DEFAULT_FLOOR = 0.01


def reference_path(ref_dir: str | Path, profile: str) -> Path:
    return Path(ref_dir) / f"results_{profile}.json"


def headline_values(metrics_dir: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{run: {evaluation set: {metric: value}}}`` of ``<metrics_dir>/<run>/<set>.json``
    (multi-label runs only; binary stage-1 runs have no F2-CIW)."""
    from benchmark.check import flatten_metrics
    from benchmark.tables import load_metrics

    root = Path(metrics_dir)
    if not root.is_dir():
        raise SewerbenchError(f"{root}: --results: no such folder (expected <results>/metrics/<run>/)")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for run, sets in load_metrics(root).items():
        for split, m in sets.items():
            try:
                flat = flatten_metrics(m)
            except (KeyError, TypeError, IndexError):
                raise SewerbenchError(f"{root / run / A.metrics_file(split)}: not an official metrics "
                                      "JSON") from None
            out.setdefault(run, {})[split] = {k: float(flat[k]) for k in HEADLINE}
    return out


def seed_spread(values: Mapping[str, Mapping[str, Mapping[str, float]]],
                groups: Mapping[str, list[str]], split: str = A.EVAL_VAL) -> dict[str, Any]:
    """Pooled sample sd per headline metric over the seed groups with >= 2 finished seeds."""
    variances: dict[str, list[float]] = {k: [] for k in HEADLINE}
    used = []
    for base, names in groups.items():
        rows = [values[n][split] for n in names if split in values.get(n, {})]
        if len(rows) < 2:
            continue
        used.append(base)
        for k in HEADLINE:
            variances[k].append(float(np.var([r[k] for r in rows], ddof=1)))
    if not used:
        raise SewerbenchError("check --update --results: no run has two or more finished seeds; the "
                              "tolerances come from the seed spread (give a run `seeds:`)")
    return {"groups": used, "sd": {k: math.sqrt(float(np.mean(v))) for k, v in variances.items()}}


def observation(metrics_dir: str | Path, params: Mapping[str, Any]) -> dict:
    """One finished repro as a reference observation: its machine, seed spread and the headline
    numbers of every run entry and combo (seed runs enter the spread only)."""
    from benchmark.matrix import seed_groups

    values = headline_values(metrics_dir)
    groups = seed_groups(params.get("runs"))
    spread = seed_spread(values, groups)
    runs = params.get("runs") or {}
    # binary stage-1 runs (target: binary) have no F2-CIW / F1-Normal / mAP: their headline
    # numbers are those of the combos that use them
    names = [*(g for g in groups if (runs.get(g) or {}).get("target", "multilabel") != "binary"),
             *(params.get("combos") or {})]
    missing = [n for n in names if n not in values]
    if missing:
        raise SewerbenchError(f"{metrics_dir}: no metrics for {', '.join(missing[:5])}"
                              f"{' ...' if len(missing) > 5 else ''}; finish `dvc repro` first")
    return {"machine": machine_fingerprint(), "seed_sd": spread["sd"], "seed_groups": spread["groups"],
            "expected": {n: values[n] for n in names}}


def run_splits(params: Mapping[str, Any], names) -> dict[str, str]:
    """The training split of each reference name: a run entry's ``split``, a combo's stage 2's."""
    runs, combos = params.get("runs") or {}, params.get("combos") or {}
    out = {}
    for n in names:
        entry = runs.get(n) or runs.get((combos.get(n) or {}).get("stage2")) or {}
        out[n] = str(entry.get("split", "full"))
    return out


def build_reference(metrics_dir: str | Path, params: Mapping[str, Any], *, k: float = DEFAULT_K,
                    floor: float = DEFAULT_FLOOR, merge: Mapping[str, Any] | None = None) -> dict:
    """The reference of a finished repro. With ``merge`` (an existing reference of the same
    profile and runs), this repro joins its observations (replacing one from the same machine).

    One observation: ``expected`` = its numbers; tolerance per metric ``max(floor, k x pooled
    seed sd on val)``. Several (repros of one commit on different CPUs, whose kernels take other
    training trajectories): ``expected`` = their mean, seed sd pooled over them, and per training
    split (``split_tolerances``) ``max(that, k x pooled sd across the observations)`` over the
    split's runs and evaluation sets, so a split whose single-seed runs move between machines
    (the 1/16 runs' F1-Normal) gets the spread measured for it."""
    from benchmark.matrix import profile

    obs = observation(metrics_dir, params)
    prof = profile(params)
    observations = [obs]
    if merge is not None:
        if merge.get("profile") != prof:
            raise SewerbenchError(f"check --merge: the reference is for profile {merge.get('profile')!r}, "
                                  f"the results are of profile {prof!r}")
        previous = list(merge.get("observations") or [{"machine": merge.get("machine", {}),
                                                         "seed_sd": merge["seed_sd"],
                                                         "seed_groups": merge.get("seed_groups", []),
                                                         "expected": merge["expected"]}])
        for o in previous:
            if set(o["expected"]) != set(obs["expected"]):
                extra = sorted(set(o["expected"]) ^ set(obs["expected"]))
                raise SewerbenchError(f"check --merge: the reference's runs differ from these results' "
                                      f"({', '.join(extra[:5])}): merge repros of the same params.yaml")
        observations = [o for o in previous if o.get("machine") != obs["machine"]] + [obs]
    sd = {m: math.sqrt(float(np.mean([o["seed_sd"][m] ** 2 for o in observations]))) for m in HEADLINE}
    tol = {m: round(max(floor, k * sd[m]), 6) for m in HEADLINE}
    names = list(obs["expected"])
    expected = {n: {split: {m: float(np.mean([o["expected"][n][split][m] for o in observations]))
                            for m in metrics}
                    for split, metrics in obs["expected"][n].items()}
                for n in names}
    ref = {"format": FORMAT, "profile": prof, "machine": observations[0]["machine"],
           "description": "Headline numbers of a finished `dvc repro` (0-1 scale); tolerance = "
                          f"max({floor}, {k} x pooled seed sd on val)"
                          + (f", per training split at least {k} x the pooled sd across the "
                             f"{len(observations)} machines' repros" if len(observations) > 1 else ""),
           "k": k, "floor": floor, "seed_sd": sd, "seed_groups": obs["seed_groups"], "tolerances": tol,
           "expected": expected}
    if len(observations) > 1:
        splits = run_splits(params, names)
        per_split: dict[str, dict[str, float]] = {}
        for split in sorted(set(splits.values())):
            per_split[split] = {}
            for m in HEADLINE:
                var = [float(np.var([o["expected"][n][e][m] for o in observations], ddof=1))
                       for n in names if splits[n] == split for e in obs["expected"][n]
                       if all(e in o["expected"][n] for o in observations)]
                across = k * math.sqrt(float(np.mean(var))) if var else 0.0
                per_split[split][m] = round(max(tol[m], across), 6)
        ref.update({"split_tolerances": per_split, "run_splits": splits, "observations": observations})
    return ref


def machine_fingerprint() -> dict[str, str]:
    """What decides the numerics of a CPU run: the CPU model, torch's CPU kernel level, torch."""
    import torch

    from benchmark.cpus import cpu_model

    return {"cpu": cpu_model(), "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
            "torch": torch.__version__}


def machine_note(ref: Mapping[str, Any]) -> str | None:
    """A one-line note when ``ref`` was written on other machines than this one (else None)."""
    machines = [o.get("machine") for o in ref.get("observations") or []] or [ref.get("machine")]
    machines = [m for m in machines if isinstance(m, dict)]
    if not machines:
        return None
    ours = machine_fingerprint()
    if any(all(m.get(k) == ours[k] for k in ours) for m in machines):
        return None
    theirs = machines[0]
    diff = [f"{k} {theirs.get(k)!r} there, {ours[k]!r} here" for k in ours if theirs.get(k) != ours[k]]
    more = f" and {len(machines) - 1} other machine(s)" if len(machines) > 1 else ""
    return ("note: the reference was written on another machine (" + "; ".join(diff) + more + "): the "
            "tolerances are the seed spread (and the spread between the recorded machines); another CPU's "
            "kernels take other training trajectories, so single-seed runs may land outside them "
            "(README \"Profiles\")")


def load_reference(path: Path) -> dict:
    try:
        ref = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SewerbenchError(f"{path}: results reference missing (write it from a finished repro with "
                              "`sewerbench check --results results --update`)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SewerbenchError(f"{path}: invalid JSON ({type(exc).__name__})") from None
    except OSError as exc:
        raise SewerbenchError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(ref, dict) or ref.get("format") != FORMAT:
        raise SewerbenchError(f"{path}: not a results reference (format {FORMAT})")
    tols, expected = ref.get("tolerances"), ref.get("expected")
    if not isinstance(tols, dict) or set(tols) != set(HEADLINE) or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and t >= 0 for t in tols.values()):
        raise SewerbenchError(f"{path}: tolerances: expected a number >= 0 for each of {', '.join(HEADLINE)}")
    if "machine" in ref and not (isinstance(ref["machine"], dict) and all(
            isinstance(v, str) for v in ref["machine"].values())):
        raise SewerbenchError(f"{path}: machine: must be an object of strings")
    splits = ref.get("split_tolerances")
    if splits is not None and not (isinstance(splits, dict) and all(
            isinstance(t, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                                        for v in t.values()) for t in splits.values())
            and isinstance(ref.get("run_splits"), dict)):
        raise SewerbenchError(f"{path}: split_tolerances: expected split -> metric -> number >= 0, "
                              "with run_splits: run -> split")
    if "observations" in ref and not (isinstance(ref["observations"], list) and all(
            isinstance(o, dict) and isinstance(o.get("expected"), dict) and isinstance(o.get("seed_sd"), dict)
            for o in ref["observations"])):
        raise SewerbenchError(f"{path}: observations: expected a list of {{machine, seed_sd, expected}}")
    if not isinstance(expected, dict) or not expected:
        raise SewerbenchError(f"{path}: expected: must be a non-empty object of run -> set -> metric")
    for run, sets in expected.items():
        if not isinstance(sets, dict):
            raise SewerbenchError(f"{path}: expected.{run}: must be an object of evaluation set -> metrics")
        for split, metrics in sets.items():
            if split not in A.EVAL_SETS:
                hint = difflib.get_close_matches(str(split), A.EVAL_SETS, n=1)
                raise SewerbenchError(f"{path}: expected.{run}.{split}: unknown evaluation set"
                                      f"{f' (did you mean {hint[0]}?)' if hint else ''}")
            if not isinstance(metrics, dict) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()):
                raise SewerbenchError(f"{path}: expected.{run}.{split}: must be metric -> number")
    return ref


def compare(metrics_dir: str | Path, ref: Mapping[str, Any], profile: str) -> tuple[list, int]:
    """(misses, number compared); a miss is :class:`benchmark.check.Miss`."""
    from benchmark.check import Miss

    if ref.get("profile") != profile:
        raise SewerbenchError(f"results reference is for profile {ref.get('profile')!r}, the results "
                              f"are of profile {profile!r}")
    values = headline_values(metrics_dir)
    misses, n = [], 0
    for run, sets in ref["expected"].items():
        for split, metrics in sets.items():
            for metric, expected in metrics.items():
                n += 1
                tol = float(ref["tolerances"].get(metric, 0.0))
                split_tol = (ref.get("split_tolerances") or {}).get((ref.get("run_splits") or {}).get(run))
                if split_tol is not None and metric in split_tol:
                    tol = float(split_tol[metric])
                got = values.get(run, {}).get(split, {}).get(metric)
                if got is None or not abs(float(got) - float(expected)) <= tol:
                    misses.append(Miss(f"{run}/{split}", metric, expected, got, tol))
    return misses, n
