"""The run matrix of params.yaml (``runs:``, ``combos:``) and what the stages read from it.

Plain functions over the params mapping (read it with :func:`benchmark.config.load_params`):
run and combo entries, their expansion over seeds (:func:`expand_runs`), a run's training
split, the active profile and its data folder, the MA x LC ablation cells and their
paired-bootstrap references (``tables.ablation_reference``), and the run folders the
``tables`` and ``plots`` stages read (their generated DVC dependencies, see
:mod:`benchmark.dvcgen`).

Seeds. A ``runs:`` entry may list ``seeds: [s0, s1, ...]`` (distinct non-negative integers).
``s0`` is the training seed of the entry's own folder ``runs/<name>`` (it replaces the global
``seed`` for that run; the global ``seed`` still seeds everything else: prepare, the image
bootstrap); each further seed ``s`` is a run ``<name>_seed<s>`` in ``runs/<name>_seed<s>``,
configured exactly like ``<name>`` but trained with seed ``s``. An entry without ``seeds``
trains with the global ``seed``, as before. Every consumer (dvcgen, the resolver, tables,
tune, the dry run) goes through :func:`expand_runs`.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, NamedTuple

from benchmark.data.layout import FULL_SPLIT, PreparedLayout
from benchmark.errors import SewerbenchError

#: The method whose runs are the MA x LC ablation cells.
ABLATION_METHOD = "maq2l"
#: ``plots:`` keys naming one run whose scores are plotted, and the key of the CAM runs.
PLOT_SCORE_RUN_KEYS = ("pr_run", "cooccurrence_run")
PLOT_CAM_RUNS_KEY = "cam_runs"


#: The run key listing a run's training seeds.
SEEDS_KEY = "seeds"
#: Run folder of a further seed ``s`` of run ``<name>``: ``<name>_seed<s>``.
SEED_RUN_INFIX = "_seed"


class RunSeed(NamedTuple):
    """One trained run of the matrix: ``name`` (its folder ``runs/<name>``, metrics
    ``results/metrics/<name>``), the ``runs:`` entry it is configured by (``base``) and its
    training seed (``None``: the entry has no ``seeds:``, the resolver's seed applies, i.e.
    params.yaml ``seed``)."""
    name: str
    base: str
    seed: int | None


def seed_run_name(base: str, seed: int) -> str:
    """``<base>_seed<seed>``: the run of a further seed of ``base``."""
    return f"{base}{SEED_RUN_INFIX}{int(seed)}"


def run_seeds(name: str, spec: Mapping[str, Any] | None, where: str = "params.yaml") -> list[int] | None:
    """The validated ``seeds:`` of run entry ``name`` (None when it has none); one-line
    :class:`SewerbenchError` naming the key otherwise."""
    spec = spec or {}
    if not isinstance(spec, Mapping) or SEEDS_KEY not in spec:
        return None
    key = f"{where}: runs.{name}.{SEEDS_KEY}"
    value = spec[SEEDS_KEY]
    if not isinstance(value, (list, tuple)) or not value:
        raise SewerbenchError(f"{key}: expected a non-empty list of distinct non-negative integers "
                              f"(e.g. [0, 1, 2]), got {value!r}")
    seen: list[int] = []
    for i, s in enumerate(value):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise SewerbenchError(f"{key}[{i}]: expected a non-negative integer, got {s!r}")
        if s in seen:
            raise SewerbenchError(f"{key}: seed {s} is listed twice")
        seen.append(int(s))
    if "seed" in spec:
        raise SewerbenchError(f"{where}: runs.{name}: give 'seed' or 'seeds', not both "
                              f"(seeds[0] is the seed of runs/{name})")
    return seen


def expand_runs(runs: Mapping[str, Any] | None, combos: Iterable[str] = (),
                where: str = "params.yaml") -> list[RunSeed]:
    """Every trained run of ``runs`` (params.yaml ``runs:``), in params order, each entry
    followed by its further seeds: ``(name, base, seed)``. An entry with ``seeds: [s0, s1]``
    gives ``(name, name, s0)`` and ``(name_seed<s1>, name, s1)``; one without gives
    ``(name, name, None)``. Bad ``seeds`` values and a run or combo (``combos``: their names)
    named like a generated seed run are refused (one-line :class:`SewerbenchError`)."""
    runs = runs or {}
    out: list[RunSeed] = []
    generated: dict[str, tuple[str, int]] = {}
    for name, spec in runs.items():
        name = str(name)
        seeds = run_seeds(name, spec, where)
        if seeds is None:
            out.append(RunSeed(name, name, None))
            continue
        out.append(RunSeed(name, name, seeds[0]))
        for s in seeds[1:]:
            gen = seed_run_name(name, s)
            generated[gen] = (name, s)
            out.append(RunSeed(gen, name, s))
    for section, names in (("runs", list(runs)), ("combos", list(combos))):
        for n in names:
            if str(n) in generated:
                base, s = generated[str(n)]
                raise SewerbenchError(f"{where}: {section}.{n}: the name is taken by seed {s} of "
                                      f"runs.{base} (runs.{base}.{SEEDS_KEY} trains "
                                      f"runs/{base}{SEED_RUN_INFIX}<s>); rename it")
    return out


def seed_groups(runs: Mapping[str, Any] | None, where: str = "params.yaml") -> dict[str, list[str]]:
    """``{entry: [its run names, first seed's (the entry's own) first]}`` for every entry of
    ``runs``; an entry without ``seeds`` has just itself."""
    groups: dict[str, list[str]] = {}
    for r in expand_runs(runs, where=where):
        groups.setdefault(r.base, []).append(r.name)
    return groups


def find_run(params: Mapping[str, Any], name: str) -> RunSeed | None:
    """The expanded run called ``name`` (an entry of ``runs:`` or a generated seed run)."""
    for r in expand_runs(params.get("runs"), (params.get("combos") or {}).keys()):
        if r.name == name:
            return r
    return None


def run_names(params: Mapping[str, Any]) -> list[str]:
    """Every trained run folder of params.yaml (entries and their seed runs), in order."""
    return [r.name for r in expand_runs(params.get("runs"), (params.get("combos") or {}).keys())]


def runs(params: Mapping[str, Any]) -> dict[str, dict]:
    return {k: dict(v or {}) for k, v in (params.get("runs") or {}).items()}


def combos(params: Mapping[str, Any]) -> dict[str, dict]:
    return {k: dict(v or {}) for k, v in (params.get("combos") or {}).items()}


def run_split(params: Mapping[str, Any], run: str) -> str:
    """Training split of a run, seed run or combo (a seed run has its entry's split, a combo
    its stage-2 run's)."""
    r = runs(params)
    if run in r:
        return str(r[run].get("split", FULL_SPLIT))
    found = find_run(params, run)
    if found is not None:
        return str(r[found.base].get("split", FULL_SPLIT))
    c = combos(params)
    if run in c:
        return run_split(params, c[run]["stage2"])
    raise SewerbenchError(f"params.yaml: runs: no run or combo named {run!r}")


def profile(params: Mapping[str, Any]) -> str:
    return str(params.get("profile", "smoke"))


def data_source(params: Mapping[str, Any]) -> str:
    """Folder ``sewerbench prepare`` reads for the active profile."""
    data = params.get("data") or {}
    prof = profile(params)
    per = data.get(prof) if isinstance(data.get(prof), Mapping) else {}
    src = per.get("source")
    if src in (None, "sewerml_root"):
        src = data.get("sewerml_root")
    if not src:
        raise SewerbenchError(f"params.yaml: data: profile {prof!r} has no source folder "
                              "(set data.sewerml_root to the Sewer-ML folder)")
    return str(src)


def data_kind(prepared: str | os.PathLike | PreparedLayout = "data/prepared",
              params: Mapping[str, Any] | None = None) -> str:
    """"synthetic" or a description of real data (:attr:`PreparedLayout.kind`); without
    ``splits.json``, "synthetic" for the smoke profile, else "unknown"."""
    layout = prepared if isinstance(prepared, PreparedLayout) else PreparedLayout.from_dir(prepared)
    if not layout.recorded and params is not None and profile(params) == "smoke":
        return "synthetic"
    return layout.kind


# ----------------------------------------------------------------------------- ablation
def ablation_cells(runs: Mapping[str, Mapping[str, Any]], method: str = ABLATION_METHOD
                   ) -> list[dict[str, Any]]:
    """The MA x LC cells among ``runs`` (params.yaml ``runs:``), ordered by split then cell;
    ``seed_runs`` lists the cell's run folders over its seeds (:func:`seed_groups`)."""
    cells = []
    groups = seed_groups(runs)
    for name, spec in runs.items():
        if spec.get("method") != method:
            continue
        model = spec.get("model") or {}
        cells.append({"run": name, "split": spec.get("split", FULL_SPLIT),
                      "mask_attention": bool(model.get("mask_attention", True)),
                      "label_correlation": bool(model.get("label_correlation", True)),
                      "seed_runs": groups[str(name)]})
    cells.sort(key=lambda c: (c["split"] != FULL_SPLIT, c["split"], not c["mask_attention"],
                              not c["label_correlation"]))
    return cells


def ablation_reference(params: Mapping[str, Any]) -> dict[str, str]:
    """``tables.ablation_reference``: split -> the cell every cell of that split is compared with."""
    return dict((params.get("tables") or {}).get("ablation_reference") or {})


def ablation_pairs(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(reference run, cell run) of every paired bootstrap ``sewerbench tables`` computes,
    in cell order (cells without a reference, and the references themselves, have none)."""
    reference = ablation_reference(params)
    pairs = []
    for c in ablation_cells(params.get("runs") or {}):
        ref = reference.get(c["split"])
        if not ref or ref == c["run"]:
            continue
        pairs.append((ref, c["run"]))
    return pairs


# ----------------------------------------------------------------------------- stage inputs
def _unique(names) -> list[str]:
    return list(dict.fromkeys(str(n) for n in names))


def tables_runs(params: Mapping[str, Any]) -> list[str]:
    """Run folders whose scores ``sewerbench tables`` reads (the ablation's paired bootstrap):
    both cells of every pair, each with its seed runs."""
    groups = seed_groups(params.get("runs"))
    return _unique(run for pair in ablation_pairs(params) for name in pair
                   for run in groups.get(name, [name]))


def plots_runs(params: Mapping[str, Any]) -> list[str]:
    """Run folders ``sewerbench plots`` reads: scores of ``plots.pr_run`` and
    ``plots.cooccurrence_run``, checkpoints of ``plots.cam_runs``."""
    pcfg = params.get("plots") or {}
    names = [pcfg.get(k) for k in PLOT_SCORE_RUN_KEYS]
    names += list(pcfg.get(PLOT_CAM_RUNS_KEY) or [])
    return _unique(n for n in names if n)
