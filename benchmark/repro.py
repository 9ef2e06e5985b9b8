"""``sewerbench repro``: ``dvc repro`` with independent stages run side by side.

DVC runs the stages of one ``dvc repro`` one after the other. On a CPU profile with one torch
thread per run (the smoke profile's ``threads: 1``) two trainings side by side use a 2-core
machine better than one training with two threads (measured in the README, "Running the
pipeline in parallel"). This module takes DVC's own stage graph and status, plans the stages
that must run (the changed ones and everything downstream of them), and runs each with
``dvc --wait-for-lock repro --single-item <stage>`` as soon as the stages it depends on have
finished, at most ``jobs`` at a time. DVC releases its repository lock while a stage's command
runs and takes it to record the result, so the processes only wait for each other for that
moment, and ``dvc.lock`` is updated stage by stage exactly as by a plain ``dvc repro``.

A stage's results do not depend on what runs beside it: a training's numbers depend on its
parameters only (the thread count is one of them), so ``dvc repro`` and ``sewerbench repro
--jobs N`` give the same files.

Each stage's output goes to ``<log_dir>/<stage>.log``; a failing stage stops the launch of new
stages, the running ones finish, and the error names the stage and its log. After the plan a
final plain ``dvc repro`` confirms that nothing is left to do (and runs anything that is).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmark.errors import SewerbenchError

log = logging.getLogger(__name__)

#: Where the stages' logs go (relative to the project; git-ignored).
DEFAULT_LOG_DIR = "logs/repro"


def dvc_command() -> list[str]:
    """The ``dvc`` executable of this environment (its venv's, else PATH's, else ``-m dvc``)."""
    exe = Path(sys.executable).parent / "dvc"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("dvc")
    return [found] if found else [sys.executable, "-m", "dvc"]


def dvc_env() -> dict[str, str]:
    """The environment of a ``dvc`` child: this venv first on PATH (the stages call
    ``sewerbench``), no analytics, unbuffered Python output."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ----------------------------------------------------------------------------- planning
@dataclasses.dataclass(frozen=True)
class Plan:
    """The stages to run, in DVC's topological order, and the planned stages each waits for."""
    stages: tuple[str, ...]
    needs: Mapping[str, frozenset[str]]

    def __len__(self) -> int:
        return len(self.stages)

    def depths(self) -> dict[str, int]:
        """Length of the longest chain of planned stages that ends at each stage (0: needs none)."""
        depth: dict[str, int] = {}
        for s in self.stages:   # topological: a stage's needs come before it
            depth[s] = 1 + max((depth[n] for n in self.needs[s]), default=-1)
        return depth

    def bottom_levels(self, cost: Mapping[str, float]) -> dict[str, float]:
        """Seconds of the costliest chain of planned stages that starts at each stage (its own
        ``cost`` included; a stage missing from ``cost`` counts 0): how long the plan takes
        after the stage starts, however many cores there are."""
        after: dict[str, list[str]] = {s: [] for s in self.stages}
        for s in self.stages:
            for n in self.needs[s]:
                after[n].append(s)
        level: dict[str, float] = {}
        for s in reversed(self.stages):   # a stage's dependents come after it
            level[s] = float(cost.get(s, 0.0)) + max((level[t] for t in after[s]), default=0.0)
        return level

    def order(self, cost: Mapping[str, float] | None = None) -> list[str]:
        """The order in which ready stages start: deepest first (a finished training's evaluate
        before the next training, so a broken downstream stage shows after the first run), then
        the costliest remaining chain first (long trainings start early and short ones fill the
        end instead of one long run finishing alone), then DVC's order."""
        depth = self.depths()
        level = self.bottom_levels(cost or {})
        index = {s: i for i, s in enumerate(self.stages)}
        return sorted(self.stages, key=lambda s: (-depth[s], -level[s], index[s]))


# ----------------------------------------------------------------------------- stage costs
#: Stage seconds of the last runs, written into the log folder after each ``sewerbench repro``.
STAGE_SECONDS = "stage_seconds.json"


def read_stage_seconds(path: str | os.PathLike) -> dict[str, float]:
    """``{stage: seconds}`` from a JSON file; a missing file is empty, and an unreadable or
    malformed one is skipped with a warning naming it (the costs only order the stages)."""
    import json

    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("%s: ignored, not a JSON file of stage seconds (%s)", path, type(exc).__name__)
        return {}
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            for k, v in data.items()):
        log.warning("%s: ignored, expected an object of stage name -> seconds >= 0", path)
        return {}
    return {k: float(v) for k, v in data.items()}


def estimate_costs(stages: Iterable[str], known: Mapping[str, float]) -> dict[str, float]:
    """Seconds of each stage: its measured seconds, else the median of the measured stages of
    its kind (the name before ``@``: a new run costs what a typical training costs), else the
    median of all measured stages (0 without any)."""
    import statistics

    by_kind: dict[str, list[float]] = {}
    for name, sec in known.items():
        by_kind.setdefault(name.split("@", 1)[0], []).append(sec)
    overall = statistics.median(known.values()) if known else 0.0
    out = {}
    for s in stages:
        if s in known:
            out[s] = float(known[s])
        else:
            kind = by_kind.get(s.split("@", 1)[0])
            out[s] = statistics.median(kind) if kind else overall
    return out


def write_stage_seconds(path: str | os.PathLike, results: Sequence["StageResult"]) -> None:
    """Merge the succeeded stages' seconds into ``path`` (atomically; stages not run keep theirs)."""
    from benchmark.io import atomic_write_json

    merged = read_stage_seconds(path)
    merged.update({r.stage: round(r.seconds, 1) for r in results if r.returncode == 0})
    atomic_write_json(path, dict(sorted(merged.items())), indent=1)


def plan_stages(deps: Mapping[str, Iterable[str]], changed: Iterable[str]) -> Plan:
    """Stages to run: ``changed`` and every stage downstream of one. ``deps`` maps each stage
    to the stages whose outputs it reads (DVC's graph); the order is topological (a stage after
    all of its dependencies) and otherwise follows ``deps``' order."""
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(deps)
    for s, ds in deps.items():
        for d in ds:
            if d not in deps:
                raise SewerbenchError(f"stage {s} depends on an unknown stage {d}")
            graph.add_edge(d, s)          # d's outputs feed s
    changed = list(changed)
    unknown = sorted(set(changed) - set(deps))
    if unknown:
        raise SewerbenchError(f"dvc status names stages the graph lacks: {', '.join(unknown)}")
    todo = set(changed).union(*(nx.descendants(graph, s) for s in changed))
    index = {s: i for i, s in enumerate(deps)}
    try:
        order = [s for s in nx.lexicographical_topological_sort(graph, key=index.__getitem__) if s in todo]
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(graph)
        raise SewerbenchError(f"the stage graph has a cycle through {cycle[0][0]}") from None
    return Plan(tuple(order), {s: frozenset(d for d in deps[s] if d in todo) for s in order})


def dvc_graph(project: str | os.PathLike) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """(stage -> the stages it depends on, the stages ``dvc status`` reports changed) of the
    DVC project, from DVC's Python API (the graph and status that ``dvc repro`` uses)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:   # stage names (addressing) are relative to the working directory
        with contextlib.chdir(project), Repo(".") as repo:
            graph = repo.index.graph
            deps = {st.addressing: tuple(d.addressing for d in graph.successors(st))
                    for st in graph.nodes}
            changed = [name for name in repo.status() if name in deps]
    except DvcException as exc:
        raise SewerbenchError(f"{project}: dvc: {' '.join(str(exc).split())}") from None
    return deps, changed


# ----------------------------------------------------------------------------- running
@dataclasses.dataclass
class StageResult:
    stage: str
    returncode: int
    seconds: float
    log: Path


def stage_log(log_dir: Path, stage: str) -> Path:
    """``<log_dir>/<stage>.log`` (``@`` kept; path separators of a nested dvc.yaml become ``__``)."""
    safe = stage.replace(os.sep, "__").replace(":", "__")
    return log_dir / f"{safe}.log"


def _start(stage: str, project: Path, log_path: Path) -> tuple[subprocess.Popen, Any]:
    fh = open(log_path, "w", encoding="utf-8")
    fh.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] $ dvc --wait-for-lock repro --single-item {stage}\n")
    fh.flush()
    # its own process group: Ctrl-C reaches this process only, which then stops each stage's
    # whole group (DVC and the stage's command), see _stop
    proc = subprocess.Popen([*dvc_command(), "--wait-for-lock", "repro", "--single-item", stage],
                            cwd=project, env=dvc_env(), stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, fh


def _stop(proc) -> None:
    """Stop a running stage: SIGTERM to its process group (SIGKILL after 10 s)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (AttributeError, TypeError, ProcessLookupError, PermissionError):
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_plan(plan: Plan, project: str | os.PathLike, jobs: int, log_dir: str | os.PathLike,
             start: Callable[[str, Path, Path], tuple[Any, Any]] = _start,
             poll_seconds: float = 0.2, verbose: bool = True,
             cost: Mapping[str, float] | None = None,
             seconds_file: str | os.PathLike | None = None) -> list[StageResult]:
    """Run ``plan``'s stages, each once all the planned stages it needs have succeeded, at most
    ``jobs`` at a time, ready stages in :meth:`Plan.order` (``cost``: estimated seconds per
    stage; ``seconds_file``: where the seconds of the stages that succeeded are merged, also
    after a failure, to order the next repro). ``start(stage, project, log)`` launches one
    (``poll()`` / ``wait()`` like a Popen, and a file to close). ``verbose``: a line per stage
    start and finish. On a failure no new stage starts; the running ones finish.
    Returns the results of the stages that ran (finish order); raises on a failure."""
    from tqdm.auto import tqdm

    if jobs < 1:
        raise SewerbenchError(f"--jobs: {jobs}: must be at least 1")
    project, log_dir = Path(project), Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    pending = plan.order(cost)
    done: set[str] = set()
    running: dict[str, tuple[Any, Any, float, Path]] = {}
    results: list[StageResult] = []
    failed: list[StageResult] = []
    bar = tqdm(total=len(plan), desc="stages", unit="stage", disable=None)
    try:
        while pending or running:
            if not failed:
                for stage in list(pending):
                    if len(running) >= jobs:
                        break
                    if plan.needs[stage] <= done:
                        pending.remove(stage)
                        path = stage_log(log_dir, stage)
                        proc, fh = start(stage, project, path)
                        running[stage] = (proc, fh, time.perf_counter(), path)
                        if verbose:
                            bar.write(f"[{time.strftime('%H:%M:%S')}] start  {stage}  (log {path})")
            if not running:   # all done, or a failure and nothing left running
                break
            finished = [s for s, (p, *_rest) in running.items() if p.poll() is not None]
            if not finished:
                time.sleep(poll_seconds)
                continue
            for stage in finished:
                proc, fh, t0, path = running.pop(stage)
                fh.close()
                res = StageResult(stage, int(proc.wait()), time.perf_counter() - t0, path)
                results.append(res)
                bar.update(1)
                if res.returncode == 0:
                    done.add(stage)
                    if verbose:
                        bar.write(f"[{time.strftime('%H:%M:%S')}] done   {stage}  {res.seconds:.1f} s")
                else:
                    failed.append(res)
                    if verbose:
                        bar.write(f"[{time.strftime('%H:%M:%S')}] FAILED {stage}  (exit {res.returncode})")
    finally:
        for stage, (proc, fh, _t0, _path) in running.items():   # only on an exception (Ctrl-C)
            _stop(proc)
            fh.close()
        bar.close()
        if seconds_file is not None and results:
            write_stage_seconds(seconds_file, results)
    if failed:
        first = failed[0]
        tail = _last_line(first.log)
        skipped = len(pending)
        raise SewerbenchError(
            f"{first.log}: stage {first.stage} failed (exit {first.returncode}): {tail}"
            + (f"; {len(failed) - 1} more failed" if len(failed) > 1 else "")
            + (f"; {skipped} stage(s) not started" if skipped else ""))
    return results


def _last_line(path: Path) -> str:
    """The last meaningful line of a stage log (DVC's ERROR line when there is one)."""
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errors = [ln for ln in lines if ln.startswith("ERROR") or "error:" in ln]
    return (errors or lines or ["no output"])[-1][:300]


def final_repro(project: str | os.PathLike, log_dir: str | os.PathLike) -> None:
    """A plain ``dvc repro``: confirms that nothing is left (it runs whatever is)."""
    path = Path(log_dir) / "dvc_repro.log"
    with open(path, "w", encoding="utf-8") as fh:
        rc = subprocess.run([*dvc_command(), "repro"], cwd=project, env=dvc_env(),
                            stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc:
        raise SewerbenchError(f"{path}: the final dvc repro failed (exit {rc}): {_last_line(path)}")


# ----------------------------------------------------------------------------- jobs
def auto_jobs(params: Mapping[str, Any], cpus: int) -> int:
    """How many stages to run side by side for ``--jobs auto``: on a CPU profile with a fixed
    torch thread count ``t``, ``cpus // t`` (at least 1); one otherwise (a GPU profile trains
    one run at a time on its devices; a profile without ``threads`` lets torch use every
    core)."""
    from benchmark.matrix import profile

    prof = (params.get("profiles") or {}).get(profile(params)) or {}
    threads = prof.get("threads")
    if str(prof.get("device", "auto")) != "cpu" or not isinstance(threads, int) or threads < 1:
        return 1
    return max(1, cpus // threads)


def parse_jobs(value: str, params: Mapping[str, Any], cpus: int) -> int:
    if str(value) == "auto":
        return auto_jobs(params, cpus)
    try:
        jobs = int(value)
    except ValueError:
        raise SewerbenchError(f"--jobs: {value!r}: expected a positive integer or auto") from None
    if jobs < 1:
        raise SewerbenchError(f"--jobs: {jobs}: must be at least 1")
    return jobs


def summarise(results: Sequence[StageResult], wall: float) -> str:
    busy = sum(r.seconds for r in results)
    return (f"{len(results)} stage(s) in {wall:.1f} s wall ({busy:.1f} s of stage time, "
            f"{busy / wall if wall > 0 else 0:.2f} stages at a time on average)")
