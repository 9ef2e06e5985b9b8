"""`sewerbench tune --workers K` on one study: SQLite, Optuna's file journal and a real PostgreSQL
server started here (initdb / pg_ctl in a temporary folder; skipped only where the server
binaries or psycopg cannot be had).

- 2 workers finish with the requested trial count and no duplicate trial numbers;
- the whole command SIGKILLed mid-trial leaves the study consistent (the killed trial stays
  RUNNING until its heartbeat goes stale, never forever), and the same command resumes: the
  lost trial is failed and retried, the count is completed, nothing is left RUNNING.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import pytest
import torch
import yaml

import tinyrun
from benchmark import tune
from benchmark.cli import main

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
STUDY = "tiny-mAP"


@pytest.fixture(autouse=True)
def _workers_import_tinyrun(monkeypatch):
    """Worker processes started by an in-process `tune --workers 2` must import tests/tinyrun."""
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("tune_workers")
    root = tinyrun.make_dataset(tmp / "data", n_train=32, n_val=16, n_test=8)
    params = tinyrun.params(root, epochs=2)
    params["tune"] = {"seed": 0, "objective": "mAP", "poll_seconds": 0.3,
                      "heartbeat": {"interval": 1, "grace": 3, "max_retry": 3},
                      "sampler": {"n_startup_trials": 3},
                      "pruner": {"name": "none"}, "plots": False,
                      "spaces": {}}
    for family in ("tiny", "q2l"):  # tiny_cnn's family, or q2l's with a model_target
        params["tune"]["spaces"][family] = {
            "optimizer.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
            "loss.gamma_neg": {"type": "float", "low": 0.0, "high": 4.0}}
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _args(params_path, out, storage, trials, workers):
    args = ["tune", "--params", str(params_path), "--run", "tiny", "--trials", str(trials),
            "--workers", str(workers), "--out", str(out)]
    return args + (["--storage", storage] if storage else [])


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _load(storage):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = tune.parse_storage(storage, ".")
    return optuna.load_study(study_name=STUDY, storage=tune.open_storage(spec, {"interval": 1, "grace": 3}))


def _check_complete(study, trials):
    all_trials = study.get_trials()
    numbers = [t.number for t in all_trials]
    assert len(numbers) == len(set(numbers)) and sorted(numbers) == list(range(len(numbers)))
    t = tune.tally(all_trials)
    assert t["done"] == trials, t
    assert t["running"] == 0 and t["waiting"] == 0, t
    return all_trials, t


def test_two_workers_on_one_sqlite_study(setup, tmp_path):
    out = tmp_path / "out"
    # trials long enough (30 epochs, ~2-3 s each) that worker 0 cannot finish the study alone
    # while worker 1 is still starting (imports take seconds on a loaded machine)
    assert main(_args(setup, out, None, 8, 2) + ["--set", "epochs=30"]) == 0
    trials, t = _check_complete(_load(f"sqlite:///{out / 'study.db'}"), 8)
    assert t["complete"] == 8 and len(trials) == 8
    workers = {tr.user_attrs["worker"].split("@")[0] for tr in trials}
    assert workers == {"w0", "w1"}, workers  # both processes ran trials
    assert (out / "best.yaml").is_file() and (out / "summary.md").is_file()


def _kill_mid_trial(cmd, storage, out, timeout=180):
    """Start ``cmd``; SIGKILL its whole process group once a trial has reported an epoch (and
    at most half of its 12, so that it cannot finish before the kill lands)."""
    proc = subprocess.Popen(cmd, env=_env(), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    try:
        while time.time() - t0 < timeout:
            time.sleep(0.2)
            if proc.poll() is not None:
                pytest.fail(f"tune exited before it could be killed: {proc.stderr.read()[-2000:]}")
            if not (out / "trials").is_dir():  # the study (and its tables) exist once a trial trains
                continue
            try:
                running = [t for t in _load(storage).get_trials(deepcopy=False)
                           if t.state == optuna.trial.TrialState.RUNNING
                           and 0 < len(t.intermediate_values) <= 6]
            except Exception:  # noqa: BLE001 - the study may not exist yet
                continue
            if running:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return running[0].number
        pytest.fail("no trial started in time")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# trials long enough (12 epochs) that the one seen mid-trial is still running when the kill lands
# (2-epoch trials could finish between the poll and the SIGKILL)
LONG = ["--set", "epochs=12"]


def _sigkill_and_resume(setup, out, storage, trials=4, workers=1):
    cmd = [sys.executable, "-m", "benchmark"] + _args(setup, out, storage, trials, workers) + LONG
    mid = _kill_mid_trial(cmd, storage, out)
    study = _load(storage)
    before = study.get_trials()
    numbers = [t.number for t in before]
    assert len(numbers) == len(set(numbers))
    killed = [t.number for t in before if t.state == optuna.trial.TrialState.RUNNING]
    assert mid in killed and tune.tally(before)["done"] < trials
    # the same command again: the dead worker's trials go stale, are failed and retried
    assert main(_args(setup, out, storage, trials, workers) + LONG) == 0
    after, t = _check_complete(_load(storage), trials)
    for n in killed:
        assert after[n].state == optuna.trial.TrialState.FAIL and tune.classify(after[n]) == "lost"
        retries = [x for x in after if x.system_attrs.get("failed_trial") == n]
        assert retries and retries[0].params == after[n].params
    assert t["lost"] == len(killed)
    assert "lost (worker died, retried) %d" % len(killed) in (out / "summary.md").read_text()


def test_sigkill_mid_trial_then_resume(setup, tmp_path):
    out = tmp_path / "out"
    _sigkill_and_resume(setup, out, f"sqlite:///{out / 'study.db'}")


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(setup, tmp_path):
    """SIGINT mid-trial: exit 130, the trial closed (FAIL, interrupted) and queued again, nothing
    RUNNING, the outputs written; the rerun trains the queued parameters and completes."""
    out = tmp_path / "out"
    storage = f"sqlite:///{out / 'study.db'}"
    cmd = [sys.executable, "-m", "benchmark"] + _args(setup, out, None, 3, 1) + ["--set", "epochs=6"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 180:
            time.sleep(0.2)
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            if not (out / "trials").is_dir():
                continue
            if any(t.state == optuna.trial.TrialState.RUNNING and t.intermediate_values
                   for t in _load(storage).get_trials(deepcopy=False)):
                break
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert "run the same command again to resume" in err
    trials = _load(storage).get_trials()
    t = tune.tally(trials)
    assert t["running"] == 0 and t["interrupted"] == 1 and t["waiting"] == 1, t
    stopped = next(x for x in trials if tune.classify(x) == "interrupted")
    queued = next(x for x in trials if x.state == optuna.trial.TrialState.WAITING)
    assert queued.user_attrs["retry_of"] == stopped.number
    assert (out / "summary.md").is_file()
    assert main(_args(setup, out, None, 3, 1) + ["--set", "epochs=6"]) == 0
    after, _ = _check_complete(_load(storage), 3)
    assert after[queued.number].state == optuna.trial.TrialState.COMPLETE
    assert after[queued.number].params == stopped.params


def test_journal_storage_heartbeat_fails_and_retries_a_silent_trial(setup, tmp_path):
    """Optuna's file journal has no heartbeat of its own: sewerbench's fails a RUNNING trial
    whose worker went silent (here: one that never beats) and retries its parameters."""
    out, storage = tmp_path / "out", f"journal://{tmp_path / 'shared' / 'study.log'}"
    assert main(_args(setup, out, storage, 1, 1)) == 0
    study = _load(storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with optimize": the point
        orphan = study.ask()  # RUNNING, no worker behind it
    orphan.suggest_float("optimizer.lr", 1e-3, 3e-2, log=True)
    orphan.suggest_float("loss.gamma_neg", 0.0, 4.0)
    time.sleep(3.5)  # > grace
    assert main(_args(setup, out, storage, 3, 1)) == 0
    after, t = _check_complete(_load(storage), 3)
    assert tune.classify(after[orphan.number]) == "lost" and t["lost"] == 1
    retry = [x for x in after if x.system_attrs.get("failed_trial") == orphan.number]
    assert retry and retry[0].params == after[orphan.number].params
    assert retry[0].state == optuna.trial.TrialState.COMPLETE


# ----------------------------------------------------------------------------- PostgreSQL
def _pg_bindir() -> Path | None:
    found = shutil.which("initdb")
    cands = ([found] if found else []) + sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    for c in cands:
        d = Path(c).resolve().parent
        if os.access(d / "initdb", os.X_OK) and os.access(d / "pg_ctl", os.X_OK):
            return d
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL server (trust auth on 127.0.0.1); yields its SQLAlchemy URL."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    pytest.importorskip("psycopg", reason="psycopg not installed: pip install 'psycopg[binary]'")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run initdb as")
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root and runuser is not available to run initdb as 'postgres'")
        prefix = [runuser, "-u", "postgres", "--"]
    tmp = Path(tempfile.mkdtemp(prefix="sewerbench-pg-"))
    if owner is not None:
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
    data, port = tmp / "data", _free_port()
    try:
        subprocess.run(prefix + [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                 "-E", "UTF8", "--no-sync"], cwd=tmp, check=True, capture_output=True, timeout=120)
        subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(tmp / "server.log"), "-w",
                                 "-t", "60", "-o", f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off",
                                 "start"], cwd=tmp, check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = (tmp / "server.log").read_text() if (tmp / "server.log").exists() else ""
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL: {getattr(exc, 'stderr', b'')!r} {log[-1000:]}") from exc
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       cwd=tmp, capture_output=True, timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


def test_postgresql_two_workers_sigkill_and_resume(setup, tmp_path, postgres):
    """The multi-machine set-up on one machine: every worker talks to the server; a bare
    postgresql:// URL works too (psycopg 3 is picked when psycopg2 is absent)."""
    out = tmp_path / "out"
    _sigkill_and_resume(setup, out, postgres, workers=2)
    md = (out / "summary.md").read_text()
    assert "postgresql+psycopg://postgres@127.0.0.1" in md
    assert tune.parse_storage(postgres.replace("+psycopg", ""), out).url.startswith(("postgresql+psycopg://",
                                                                                     "postgresql://"))
