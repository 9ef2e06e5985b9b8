"""dvc.yaml, generated from params.yaml (``sewerbench dvc-yaml``).

The stages are fixed here; what depends on params.yaml is generated: the run folders the
``tables`` stage reads scores from (the ablation's paired bootstrap,
:func:`benchmark.matrix.tables_runs`) and those the ``plots`` stage reads
(:func:`benchmark.matrix.plots_runs`). The per-run ``train`` / ``evaluate`` / ``combine``
stages stay DVC ``foreach`` templates over ``${runs}`` and ``${combos}``. The further seeds of
runs with ``seeds:`` (:func:`benchmark.matrix.expand_runs`) get ``train_seed`` /
``evaluate_seed`` stages, ``foreach`` over a literal mapping generated here
(``<run>_seed<s>: {base, seed, recipe, split}``), with the deps and params of their base
run's stages (``runs.<base>`` included) and ``--seed <s>``.
``sewerbench dvc-yaml --check`` (and a test) fail when the committed dvc.yaml is not what
params.yaml implies.
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping, Sequence

from benchmark.data.layout import FULL_SPLIT
from benchmark.errors import SewerbenchError

HEADER = """\
# sewerbench pipeline: synth -> prepare -> pretrain (synthetic stand-in for ImageNet weights)
# -> train (matrix over params.yaml runs:) -> combine (two-stage) -> evaluate -> tables -> plots.
# train_seed / evaluate_seed: the further seeds of runs with `seeds: [s0, s1, ...]`
# (runs/<run>_seed<s>; runs/<run> itself trains with s0).
#
#   dvc repro                       # default profile `smoke`: synthetic data, tiny models, CPU
#   dvc exp run -S profile=paper    # real Sewer-ML (data.sewerml_root), reference sizes, CUDA
#
# Every stage names the params it reads, so a second `dvc repro` with nothing changed is a no-op.
# `dvc metrics show` / `dvc exp show` read results/metrics (official JSON per run and split);
# `dvc plots show` draws the per-epoch DVCLive curves of the main runs.
#
# GENERATED from params.yaml by `sewerbench dvc-yaml` (benchmark/dvcgen.py): do not edit by
# hand; change params.yaml or benchmark/dvcgen.py and run `sewerbench dvc-yaml`.
"""

#: What prepare and plots depend on instead of the synthetic folder: its meta.json records a
#: SHA-256 over every image and mask file (`synth`), so DVC stats one file there, not ~16k; the
#: folder itself stays the synth stage's output, so an edited or deleted image reruns synth.
SYNTH_DEP = "data/synthetic/meta.json"
#: Outputs of the tables stage (under results/).
TABLES_OUTS = (
    "results/table3.md", "results/table3.csv", "results/table3.tex",
    "results/ablation.md", "results/ablation.csv", "results/ablation.tex",
    "results/ablation_paired.json",
    "results/sewerml_table4.md", "results/sewerml_table4.csv", "results/sewerml_table4.tex",
    "results/sewerml_table5.md", "results/sewerml_table5.csv", "results/sewerml_table5.tex",
    "results/benchmark_metrics.md", "results/benchmark_metrics.csv", "results/benchmark_metrics.tex",
    "results/per_class",
)
#: Library code of the evaluate stages.
EVALUATE_CODE = (
    "benchmark/evaluation.py", "benchmark/commands/evaluate.py", "benchmark/data/layout.py",
    "benchmark/artifacts.py", "benchmark/metrics.py", "benchmark/bootstrap.py",
    "benchmark/scores.py",
)

#: Combine and evaluate stages list no params: every value they read is in their command,
#: which DVC compares anyway, and each params section costs a parse of params.yaml per stage
#: and per `dvc repro` (these are 53 of the 95 stages).
NO_PARAMS = "      # no params: every value it reads is in its cmd"

_PLAIN = re.compile(r"^[A-Za-z0-9_./${}@-]+$")


def _scalar(value: Any) -> str:
    """A YAML scalar: plain when safe, else JSON-quoted."""
    s = str(value)
    if _PLAIN.match(s) and s[0] not in "-@" and s.lower() not in ("null", "true", "false", "yes", "no",
                                                                   "on", "off", "~"):
        return s
    return json.dumps(s)


def _items(indent: int, values: Sequence[Any]) -> list[str]:
    pad = " " * indent
    return [f"{pad}- {_scalar(v)}" for v in values]


def _known_runs(params: Mapping[str, Any], names: Sequence[str], where: str) -> list[str]:
    """``names`` as run folders (DVC outputs of train/combine); unknown names are an error
    (a dependency no stage writes would stop `dvc repro`)."""
    from benchmark.matrix import combos, run_names

    known = set(run_names(params)) | set(combos(params))
    for n in names:
        if n not in known:
            raise SewerbenchError(f"params.yaml: {where}: no run or combo named {n!r}")
    return [f"runs/{n}" for n in names]


def _stage(name: str, body: list[str]) -> list[str]:
    return [f"  {name}:", *body, ""]


def seed_items(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``foreach`` mapping of the ``train_seed`` / ``evaluate_seed`` stages: every further
    seed run ``<run>_seed<s>`` -> ``{base, seed, recipe, split}`` (recipe as the base entry
    names it, split with the default filled in), in params order."""
    from benchmark.matrix import combos, expand_runs, runs

    entries = runs(params)
    items: dict[str, dict[str, Any]] = {}
    for r in expand_runs(params.get("runs"), combos(params).keys()):
        if r.name == r.base:
            continue
        spec = entries[r.base]
        item: dict[str, Any] = {"base": r.base, "seed": int(r.seed)}
        if "recipe" in spec:
            item["recipe"] = spec["recipe"]
        item["split"] = spec.get("split", FULL_SPLIT)
        items[r.name] = item
    return items


def _foreach_literal(items: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = ["    foreach:"]
    for key, item in items.items():
        body = ", ".join(f"{k}: {_scalar(v)}" for k, v in item.items())
        lines.append(f"      {_scalar(key)}: {{{body}}}")
    return lines


def render_dvc_yaml(params: Mapping[str, Any]) -> str:
    """The dvc.yaml text that ``params`` (params.yaml's content) implies."""
    from benchmark.matrix import plots_runs, tables_runs

    tables_deps = _known_runs(params, tables_runs(params), "tables.ablation_reference / runs")
    plots_deps = _known_runs(params, plots_runs(params), "plots.pr_run / cooccurrence_run / cam_runs")

    lines = [HEADER.rstrip("\n"),
             "metrics:",
             "  - results/metrics",
             "plots:",
             "  - runs/maq2l_full/dvclive/plots/metrics:",
             "      x: step",
             "  - runs/q2l_full/dvclive/plots/metrics:",
             "      x: step",
             "",
             "stages:"]
    lines += _stage("synth", [
        "    cmd: sewerbench synth --params params.yaml --out data/synthetic",
        "    deps:",
        *_items(6, ["benchmark/synth"]),
        "    params:",
        *_items(6, ["synth"]),
        "    outs:",
        *_items(6, ["data/synthetic"]),
    ])
    lines += _stage("prepare", [
        "    cmd: sewerbench prepare --params params.yaml --out data/prepared",
        "    deps:",
        *_items(6, [SYNTH_DEP, "data/splits", "benchmark/data/splits.py",
                    "benchmark/data/annotations.py", "benchmark/data/images.py",
                    "benchmark/data/layout.py", "benchmark/commands/prepare.py",
                    "benchmark/matrix.py"]),
        "    params:",
        *_items(6, ["profile", "seed", "data.sewerml_root", "data.fractions", "data.check_images", "data.subset_rule",
                    "data.${profile}"]),
        "    outs:",
        *_items(6, ["data/prepared"]),
    ])
    lines += _stage("pretrain", [
        "    cmd: sewerbench pretrain --params params.yaml --out data/pretrained",
        "    deps:",
        *_items(6, ["data/splits", "benchmark/pretrain.py", "benchmark/commands/pretrain.py",
                    "benchmark/synth/render.py", "benchmark/synth/labels.py", "methods/backbones.py",
                    "methods/tresnet.py"]),
        "    params:",
        *_items(6, ["profile", "pretrain", "synth.width", "synth.height", "synth.difficulty",
                    "synth.label_source", "profiles.${profile}.standin_weights"]),
        "    outs:",
        *_items(6, ["data/pretrained"]),
    ])
    # not data/synthetic: its files would be stat-ed once per stage by every `dvc repro`;
    # prepare records a digest of the images in data/prepared/splits.json instead
    train_deps = ["data/prepared", "data/pretrained", "benchmark/train",
                  "benchmark/data", "benchmark/config", "benchmark/seed.py", "benchmark/pretrain.py",
                  "methods"]
    train_params = ["seed", "profile", "profiles.${profile}", "recipes.${item.recipe}",
                    "data.prepared", "data.cache", "data.${profile}"]
    lines += _stage("train", [
        "    foreach: ${runs}",
        "    do:",
        "      cmd: sewerbench train --params params.yaml --run ${key} --out runs/${key}",
        "      deps:",
        *_items(8, train_deps),
        "      params:",
        *_items(8, [*train_params, "runs.${key}"]),
        "      outs:",
        *_items(8, ["runs/${key}"]),
    ])
    seeds = seed_items(params)
    if seeds:
        lines += _stage("train_seed", [
            "    # the further seeds of runs with `seeds:` (the base run's deps and params)",
            *_foreach_literal(seeds),
            "    do:",
            "      cmd: sewerbench train --params params.yaml --run ${key} --seed ${item.seed} "
            "--out runs/${key}",
            "      deps:",
            *_items(8, train_deps),
            "      params:",
            *_items(8, [*train_params, "runs.${item.base}"]),
            "      outs:",
            *_items(8, ["runs/${key}"]),
        ])
    combine_cmd = ("sewerbench combine --stage1 runs/${item.stage1}/scores_{set}.csv --stage2 "
                   "runs/${item.stage2}/scores_{set}.csv --mode ${item.mode} "
                   "--out runs/${key}/scores_{set}.csv")
    lines += _stage("combine", [
        "    foreach: ${combos}",
        "    do:",
        "      cmd:",
        *[f"        - {combine_cmd.replace('{set}', s)}" for s in ("val", "test")],
        "      deps:",
        *_items(8, ["runs/${item.stage1}", "runs/${item.stage2}", "benchmark/combine.py",
                    "methods/two_stage.py"]),
        NO_PARAMS,
        "      outs:",
        *_items(8, ["runs/${key}"]),
    ])
    evaluate_cmd = ("sewerbench evaluate --run-dir runs/${key} --out results/metrics/${key} "
                    "--split {split} --bootstrap ${tables.bootstrap} --seed ${seed}")
    lines += _stage("evaluate", [
        "    foreach: ${runs}",
        "    do:",
        "      cmd: " + evaluate_cmd.replace("{split}", "${item.split}"),
        "      deps:",
        *_items(8, ["runs/${key}", "data/prepared", *EVALUATE_CODE]),
        NO_PARAMS,
        "      outs:",
        *_items(8, ["results/metrics/${key}"]),
    ])
    if seeds:
        lines += _stage("evaluate_seed", [
            *_foreach_literal(seeds),
            "    do:",
            "      cmd: " + evaluate_cmd.replace("{split}", "${item.split}"),
            "      deps:",
            *_items(8, ["runs/${key}", "data/prepared", *EVALUATE_CODE]),
            NO_PARAMS,
            "      outs:",
            *_items(8, ["results/metrics/${key}"]),
        ])
    lines += _stage("evaluate_combo", [
        "    foreach: ${combos}",
        "    do:",
        "      cmd: " + evaluate_cmd.replace("{split}", FULL_SPLIT),
        "      deps:",
        *_items(8, ["runs/${key}", "data/prepared", *EVALUATE_CODE]),
        NO_PARAMS,
        "      outs:",
        *_items(8, ["results/metrics/${key}"]),
    ])
    lines += _stage("tables", [
        "    cmd: sewerbench tables --params params.yaml --metrics results/metrics --runs runs "
        "--prepared data/prepared --out results",
        "    deps:",
        "      # every run's metrics, seed runs included (results/metrics/<run>)",
        *_items(6, ["results/metrics"]),
        "      # scores of the MA x LC cells and their seed runs for the paired bootstrap",
        "      # (tables.ablation_reference)",
        *_items(6, tables_deps),
        *_items(6, ["data/prepared", "benchmark/tables.py", "benchmark/published.py",
                    "benchmark/matrix.py", "benchmark/data/layout.py", "benchmark/artifacts.py",
                    "benchmark/commands/tables.py"]),
        "    params:",
        *_items(6, ["seed", "profile", "tables", "runs"]),
        "    outs:",
        *_items(6, TABLES_OUTS),
    ])
    lines += _stage("plots", [
        "    cmd: sewerbench plots --params params.yaml --metrics results/metrics --runs runs "
        "--prepared data/prepared --out results/plots",
        "    deps:",
        "      # every run's metrics, seed runs included (results/metrics/<run>)",
        *_items(6, ["results/metrics"]),
        "      # plots.pr_run / cooccurrence_run / cam_runs (scores and checkpoints)",
        *_items(6, plots_deps),
        *_items(6, ["data/prepared", SYNTH_DEP, "benchmark/plots.py", "benchmark/cam.py",
                    "benchmark/matrix.py", "benchmark/data/layout.py", "benchmark/artifacts.py",
                    "benchmark/commands/plots.py"]),
        "    params:",
        *_items(6, ["seed", "profile", "plots", "runs"]),
        "    outs:",
        *_items(6, ["results/plots"]),
    ])
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def check_dvc_yaml(params: Mapping[str, Any], path: str = "dvc.yaml",
                   params_path: str = "params.yaml") -> None:
    """A one-line :class:`SewerbenchError` when the file at ``path`` differs from
    :func:`render_dvc_yaml` of ``params``."""
    from pathlib import Path

    p = Path(path)
    try:
        current = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SewerbenchError(f"{p}: missing; run `sewerbench dvc-yaml` to generate it "
                              f"from {params_path}") from None
    except OSError as exc:
        raise SewerbenchError(f"{p}: cannot read ({exc.strerror or exc})") from None
    expected = render_dvc_yaml(params)
    if current != expected:
        a, b = current.splitlines(), expected.splitlines()
        line = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        raise SewerbenchError(f"{p}: line {line + 1}: differs from what {params_path} implies; "
                              f"run `sewerbench dvc-yaml` to regenerate it")
