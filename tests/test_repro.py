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


def test_bottom_levels_are_the_costliest_chain_from_each_stage():
    plan = repro.plan_stages(GRAPH, ["a", "e"])
    cost = {"a": 1.0, "b": 5.0, "c": 2.0, "d": 3.0, "e": 4.0}
    assert plan.bottom_levels(cost) == {"a": 9.0, "b": 8.0, "c": 5.0, "d": 3.0, "e": 4.0}
    assert plan.bottom_levels({}) == dict.fromkeys(plan.stages, 0.0)


def test_longest_trainings_start_first_and_evaluates_still_follow_their_training(tmp_path):
    """Among ready trainings the costliest chain starts first (LPT), so on 2 jobs the long
    training does not start last and finish alone; a finished training's evaluate still
    starts before the next training."""
    graph = {"prep": (), "t_short1": ("prep",), "t_short2": ("prep",), "t_long": ("prep",),
             "e_short1": ("t_short1",), "e_short2": ("t_short2",), "e_long": ("t_long",),
             "tables": ("e_short1", "e_short2", "e_long")}
    polls = {"prep": 1, "t_short1": 3, "t_short2": 3, "t_long": 8, "e_short1": 1, "e_short2": 1,
             "e_long": 1, "tables": 1}
    plan = repro.plan_stages(graph, ["prep"])
    cost = {k: float(v) for k, v in polls.items()}
    assert plan.order().index("t_short2") < plan.order().index("t_long")      # DVC's order
    assert plan.order(cost).index("t_long") < plan.order(cost).index("t_short1")

    def starts(cost_arg):
        world = World(polls=polls)
        repro.run_plan(plan, tmp_path, 2, tmp_path / "logs", start=world.start, poll_seconds=0,
                       verbose=False, cost=cost_arg)
        for stage, needs in plan.needs.items():             # dependencies hold either way
            for n in needs:
                assert world.events.index(("end", n)) < world.events.index(("start", stage))
        return [s for kind, s in world.events if kind == "start"]
    assert starts(None)[1:4] == ["t_short1", "t_short2", "e_short1"]   # t_long waits for a free job
    with_cost = starts(cost)
    assert with_cost[1:3] == ["t_long", "t_short1"]
    assert with_cost.index("e_short1") < with_cost.index("t_short2")    # evaluate first


def test_stage_costs_measured_else_the_median_of_their_kind(tmp_path):
    known = {"train@a": 100.0, "train@b": 300.0, "train@c": 200.0, "evaluate@a": 10.0}
    est = repro.estimate_costs(["train@a", "train@new", "evaluate@new", "tables", "train_seed@x"], known)
    assert est == {"train@a": 100.0, "train@new": 200.0, "evaluate@new": 10.0, "tables": 150.0,
                   "train_seed@x": 150.0}
    assert repro.estimate_costs(["a"], {}) == {"a": 0.0}


def test_stage_seconds_are_merged_and_a_bad_file_is_ignored_with_a_warning(tmp_path, caplog):
    path = tmp_path / "stage_seconds.json"
    ok = [repro.StageResult("b", 0, 2.25, tmp_path), repro.StageResult("c", 1, 9.0, tmp_path)]
    path.write_text(json.dumps({"a": 5, "b": 1.0}))
    repro.write_stage_seconds(path, ok)
    assert json.loads(path.read_text()) == {"a": 5, "b": 2.2}   # the failed c is not recorded
    for bad in ("{not json", json.dumps([1, 2]), json.dumps({"a": -1}), json.dumps({"a": "x"})):
        path.write_text(bad)
        caplog.clear()
        assert repro.read_stage_seconds(path) == {}
        assert str(path) in caplog.text and "ignored" in caplog.text
    assert repro.read_stage_seconds(tmp_path / "missing.json") == {}


def test_run_plan_records_the_seconds_of_what_ran_also_after_a_failure(tmp_path):
    world = World(polls={"b": 1, "c": 6}, rc={"b": 3})
    seconds = tmp_path / "logs" / "stage_seconds.json"
    with pytest.raises(SewerbenchError):
        repro.run_plan(repro.plan_stages(GRAPH, ["a"]), tmp_path, 2, tmp_path / "logs", start=world.start,
                       poll_seconds=0, verbose=False, seconds_file=seconds)
    assert set(json.loads(seconds.read_text())) == {"a", "c"}


def test_the_committed_stage_seconds_cover_the_default_pipeline():
    """`make repro` on a fresh clone orders its stages by the committed reference repro's
    seconds: every stage of dvc.yaml is in it."""
    names = set(repro.dvc_graph(ROOT)[0])
    assert "train@maq2l_full" in names and "tables" in names
    known = repro.read_stage_seconds(ROOT / "results" / "reference" / "stage_seconds.json")
    assert names <= set(known), sorted(names - set(known))[:5]


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
