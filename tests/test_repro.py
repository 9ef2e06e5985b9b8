"""``sewerbench repro``: the plan from DVC's graph and status, the side-by-side scheduler, and a
real DVC project whose independent stages run at the same time and end up in dvc.lock."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from benchmark import repro
from benchmark.cli import main
from benchmark.errors import SewerbenchError

ROOT = Path(__file__).resolve().parents[1]

#: a -> (b, c) -> d, and e alone (stage -> the stages it depends on)
GRAPH = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c"), "e": ()}


# ----------------------------------------------------------------------------- plan
def test_plan_is_changed_stages_and_everything_downstream_in_topological_order():
    plan = repro.plan_stages(GRAPH, ["b"])
    assert plan.stages == ("b", "d")
    assert plan.needs == {"b": frozenset(), "d": frozenset({"b"})}   # c is up to date
    plan = repro.plan_stages(GRAPH, ["a", "e"])
    assert set(plan.stages) == {"a", "b", "c", "d", "e"}
    pos = {s: i for i, s in enumerate(plan.stages)}
    assert pos["a"] < pos["b"] < pos["d"] and pos["c"] < pos["d"]
    assert plan.needs["d"] == frozenset({"b", "c"})
    assert len(repro.plan_stages(GRAPH, [])) == 0


def test_plan_refuses_unknown_stages_and_cycles():
    with pytest.raises(SewerbenchError, match="lacks: zz"):
        repro.plan_stages(GRAPH, ["zz"])
    with pytest.raises(SewerbenchError, match="unknown stage q"):
        repro.plan_stages({"a": ("q",)}, ["a"])
    with pytest.raises(SewerbenchError, match="cycle"):
        repro.plan_stages({"a": ("b",), "b": ("a",)}, ["a"])


# ----------------------------------------------------------------------------- scheduler
class FakeProc:
    """Finishes after ``polls`` calls of poll() with ``rc``; records the clock of the fake world."""

    def __init__(self, world, stage, polls, rc):
        self.world, self.stage, self.left, self.rc = world, stage, polls, rc
        self.terminated = False

    def poll(self):
        self.left -= 1
        if self.left <= 0:
            self.world.finish(self.stage)
            return self.rc
        return None

    def wait(self, timeout=None):
        return self.rc

    def terminate(self):
        self.terminated = True


class FakeFile:
    def close(self):
        pass


class World:
    def __init__(self, polls=None, rc=None):
        self.polls, self.rc = polls or {}, rc or {}
        self.running, self.max_running, self.events = set(), 0, []

    def start(self, stage, project, log_path):
        log_path.write_text(f"output of {stage}\nERROR: {stage} broke\n" if self.rc.get(stage) else f"ok {stage}\n")
        self.running.add(stage)
        self.max_running = max(self.max_running, len(self.running))
        self.events.append(("start", stage))
        return FakeProc(self, stage, self.polls.get(stage, 2), self.rc.get(stage, 0)), FakeFile()

    def finish(self, stage):
        if stage in self.running:
            self.running.discard(stage)
            self.events.append(("end", stage))


def _run(world, plan, jobs, tmp_path):
    return repro.run_plan(plan, tmp_path, jobs, tmp_path / "logs", start=world.start,
                          poll_seconds=0, verbose=False)


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_scheduler_respects_dependencies_and_the_job_limit(tmp_path, jobs):
    world = World(polls={"b": 5, "c": 2, "e": 7})
    plan = repro.plan_stages(GRAPH, ["a", "e"])
    results = _run(world, plan, jobs, tmp_path)
    assert sorted(r.stage for r in results) == ["a", "b", "c", "d", "e"]
    assert all(r.returncode == 0 for r in results)
    assert world.max_running == min(jobs, 3)        # b, c and e can run together
    ev = world.events
    for stage, needs in plan.needs.items():
        for n in needs:
            assert ev.index(("end", n)) < ev.index(("start", stage)), (n, stage)
    assert (tmp_path / "logs" / "d.log").read_text() == "ok d\n"


def test_downstream_stages_start_as_soon_as_they_can(tmp_path):
    """With one job, each training's evaluate runs right after it, before the next training
    (so a broken evaluate shows after the first run); sorted() is stable: DVC's order otherwise."""
    graph = {"prep": (), "train1": ("prep",), "train2": ("prep",), "train3": ("prep",),
             "eval1": ("train1",), "eval2": ("train2",), "eval3": ("train3",),
             "tables": ("eval1", "eval2", "eval3")}
    plan = repro.plan_stages(graph, ["prep"])
    assert plan.depths() == {"prep": 0, "train1": 1, "train2": 1, "train3": 1,
                             "eval1": 2, "eval2": 2, "eval3": 2, "tables": 3}
    world = World()
    _run(world, plan, 1, tmp_path)
    started = [s for kind, s in world.events if kind == "start"]
    assert started == ["prep", "train1", "eval1", "train2", "eval2", "train3", "eval3", "tables"]


def test_a_failed_stage_stops_new_starts_and_names_its_log(tmp_path):
    world = World(polls={"b": 1, "c": 6}, rc={"b": 3})
    plan = repro.plan_stages(GRAPH, ["a"])
    with pytest.raises(SewerbenchError) as err:
        _run(world, plan, 2, tmp_path)
    msg = str(err.value)
    assert "b.log: stage b failed (exit 3): ERROR: b broke" in msg
    assert "1 stage(s) not started" in msg                   # d
    started = [s for kind, s in world.events if kind == "start"]
    assert "d" not in started and "c" in started             # c, already running, finished
    assert ("end", "c") in world.events


def test_an_interrupt_stops_the_running_stages(tmp_path):
    world = World(polls={"b": 10**9, "c": 10**9})
    procs = []
    start = world.start

    def tracking(stage, project, log_path):
        proc, fh = start(stage, project, log_path)
        procs.append(proc)
        if stage == "c":
            def interrupted():
                raise KeyboardInterrupt
            proc.poll = interrupted
        return proc, fh
    with pytest.raises(KeyboardInterrupt):
        repro.run_plan(repro.plan_stages(GRAPH, ["b", "c"]), tmp_path, 2, tmp_path / "logs",
                       start=tracking, poll_seconds=0, verbose=False)
    assert [p.stage for p in procs] == ["b", "c"] and all(p.terminated for p in procs)


def test_jobs_argument_and_auto():
    smoke = {"profile": "smoke", "profiles": {"smoke": {"device": "cpu", "threads": 1}}}
    assert repro.parse_jobs("auto", smoke, cpus=2) == 2
    assert repro.parse_jobs("auto", smoke, cpus=8) == 8
    two = {"profile": "p", "profiles": {"p": {"device": "cpu", "threads": 2}}}
    assert repro.parse_jobs("auto", two, cpus=8) == 4
    torch_default = {"profile": "p", "profiles": {"p": {"device": "cpu", "threads": None}}}
    assert repro.parse_jobs("auto", torch_default, cpus=8) == 1
    gpu = {"profile": "p", "profiles": {"p": {"device": "cuda", "threads": 1}}}
    assert repro.parse_jobs("auto", gpu, cpus=8) == 1
    assert repro.parse_jobs("3", gpu, cpus=1) == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(SewerbenchError, match="--jobs"):
            repro.parse_jobs(bad, smoke, cpus=2)


def test_the_default_profile_runs_one_stage_per_core():
    """params.yaml's smoke profile fixes one torch thread per run, so `make repro` trains
    two runs at a time on a 2-core machine (and the numbers do not depend on it)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["profiles"]["smoke"]["threads"] == 1
    assert repro.auto_jobs(params, cpus=2) == 2
    assert repro.auto_jobs({**params, "profile": "paper"}, cpus=16) == 1


def test_cli_bad_jobs_is_one_line_exit_2(capsys):
    assert main(["repro", "--jobs", "0", "--params", str(ROOT / "params.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sewerbench: error: --jobs: 0: must be at least 1"]


# ----------------------------------------------------------------------------- real DVC
STAGE = textwrap.dedent("""\
    import json, sys, time
    name, deps = sys.argv[1], sys.argv[2:]
    t0 = time.time()
    for d in deps:
        open(d).read()
    time.sleep({sleep})
    json.dump({{"stage": name, "start": t0, "end": time.time()}}, open(f"out_{{name}}.json", "w"))
    """)


def _dvc_project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    py = sys.executable
    (proj / "stage.py").write_text(STAGE.format(sleep=3))
    stages = {
        "a": {"cmd": f"{py} stage.py a", "deps": ["stage.py"], "outs": ["out_a.json"]},
        "b": {"cmd": f"{py} stage.py b out_a.json", "deps": ["stage.py", "out_a.json"], "outs": ["out_b.json"]},
        "c": {"cmd": f"{py} stage.py c out_a.json", "deps": ["stage.py", "out_a.json"], "outs": ["out_c.json"]},
        "d": {"cmd": f"{py} stage.py d out_b.json out_c.json",
              "deps": ["stage.py", "out_b.json", "out_c.json"], "outs": ["out_d.json"]},
    }
    (proj / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    done = subprocess.run([*repro.dvc_command(), "init", "--no-scm", "-q"], cwd=proj,
                          env=repro.dvc_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return proj


def test_real_dvc_project_independent_stages_run_side_by_side(tmp_path):
    proj = _dvc_project(tmp_path)
    deps, changed = repro.dvc_graph(proj)
    assert {k: set(v) for k, v in deps.items()} == {"a": set(), "b": {"a"}, "c": {"a"}, "d": {"b", "c"}}
    plan = repro.plan_stages(deps, changed)
    assert set(plan.stages) == {"a", "b", "c", "d"}
    results = repro.run_plan(plan, proj, 2, proj / "logs", verbose=False)
    assert [r.returncode for r in results] == [0, 0, 0, 0]
    t = {s: json.loads((proj / f"out_{s}.json").read_text()) for s in "abcd"}
    assert t["b"]["start"] < t["c"]["end"] and t["c"]["start"] < t["b"]["end"]   # side by side
    assert t["a"]["end"] <= min(t["b"]["start"], t["c"]["start"])
    assert max(t["b"]["end"], t["c"]["end"]) <= t["d"]["start"]
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"a", "b", "c", "d"}            # every stage recorded
    assert repro.dvc_graph(proj)[1] == []                          # dvc status: up to date
    repro.final_repro(proj, proj / "logs")                         # a no-op
    assert json.loads((proj / "out_d.json").read_text()) == t["d"]
    # change c's input: only c and d are planned again
    (proj / "out_c.json").unlink()
    deps, changed = repro.dvc_graph(proj)
    assert repro.plan_stages(deps, changed).stages == ("c", "d")
