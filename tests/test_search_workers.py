"""Scale-out and reliability of the search, with real processes:

* three worker processes share one PostgreSQL study (127.0.0.1:5432) and one MLflow server;
* a worker killed with SIGKILL mid-trial loses no finished trial; the stale trial is failed
  (by its dead pid here, by the heartbeat elsewhere) and retried when the study resumes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import GLUE_DIR as DATA
from test_search import AT_CHANCE, TINY_RECIPE, TP_ARGS, _free_port, _wait_http

from autoprumux import tracking

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


@pytest.fixture
def pg_url():
    import psycopg

    try:
        conn = psycopg.connect(dbname="postgres", connect_timeout=3, autocommit=True, **PG)
    except psycopg.OperationalError as e:
        pytest.skip(f"PostgreSQL is unreachable on 127.0.0.1:5432 ({e}); start it to run this test")
    name = f"autoprumux_test_{uuid.uuid4().hex[:10]}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()


def _space_file(tmp: Path, model: str, recipe: dict | None = None) -> Path:
    p = tmp / "space.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "task": "sst2",
                "model": model,
                "recipe": recipe or TINY_RECIPE,
                "params": {
                    "sparsity": {"low": 0.0, "high": 0.6, "step": 0.3},
                    "mux": {"choices": [1, 2]},
                },
            }
        )
    )
    return p


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "AUTOPRUMUX_PROGRESS": "0",
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "autoprumux.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_for_study(storage: str, name: str, procs: list, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        for p in procs:
            if p.poll() not in (None, 0):
                raise AssertionError(f"process failed:\n{p.stdout.read()}")
        try:
            optuna.load_study(study_name=name, storage=storage)
            return
        except Exception:  # noqa: BLE001 - not created yet
            time.sleep(0.5)
    raise AssertionError("study never appeared")


def _finish(procs: list, timeout: float = 600) -> list[str]:
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, out
        outs.append(out)
    return outs


def test_three_workers_share_a_postgresql_study_and_one_mlflow_server(
    tiny_checkpoint, tmp_path, pg_url
):
    port = _free_port()
    server = _cli(
        "ui",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--port",
        str(port),
        cwd=tmp_path,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", server)
        mlflow_uri = f"http://127.0.0.1:{port}"
        common = ["--storage", pg_url, "--study-name", "shared", "--tracking-uri", mlflow_uri]
        common += ["--budget", "50", "--no-register", "--data-dir", str(DATA)]
        common += ["--cache-dir", str(tmp_path / "cache"), *TP_ARGS, *AT_CHANCE]
        space = _space_file(tmp_path, tiny_checkpoint)
        first = _cli("search", "--space", str(space), "--trials", "9", *common, cwd=tmp_path)
        _wait_for_study(pg_url, "shared", [first])
        workers = [_cli("worker", *common, cwd=tmp_path) for _ in range(2)]
        _finish([first, *workers])

        study = optuna.load_study(study_name="shared", storage=pg_url)
        trials = study.get_trials()
        numbers = [t.number for t in trials]
        assert len(numbers) == len(set(numbers))
        done = [t for t in trials if t.state.name == "COMPLETE"]
        assert not [t for t in trials if t.state.name == "FAIL"]
        # the workers count each other's running trials: the study ends at its target exactly
        assert len(done) == 9, [t.state.name for t in trials]
        assert len({t.user_attrs["worker"] for t in done}) == 3  # every process ran trials
        cl = tracking.client(mlflow_uri)
        exp = cl.get_experiment_by_name("autoprumux/shared")
        runs = cl.search_runs(
            [exp.experiment_id], filter_string="tags.`autoprumux.role` = 'trial'", max_results=1000
        )
        for t in done:  # every finished trial is in MLflow exactly once
            mine = [r for r in runs if r.data.tags["autoprumux.trial_number"] == str(t.number)]
            assert len(mine) == 1 and mine[0].info.run_id == t.user_attrs["mlflow_run_id"]
            assert mine[0].info.status == "FINISHED"
        parents = cl.search_runs(
            [exp.experiment_id], filter_string="tags.`autoprumux.role` = 'study'"
        )
        assert len(parents) == 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_dead_workers_trials_are_failed_by_heartbeat_or_pid_and_retried_once(tmp_path):
    """Without processes: a trial whose worker on another host stopped beating is failed once
    the grace period (2 x the heartbeat) has passed, the stale callback sees it (the search
    closes its MLflow run there), and it is retried once with the same parameters; a trial
    still beating is left alone; a trial of a dead process on this host fails at once."""
    import socket

    from autoprumux.search._workers import fail_dead_trials

    seen: list[int] = []
    storage = tracking.make_storage(
        f"sqlite:///{tmp_path / 'study.db'}", 1, lambda study, t: seen.append(t.number)
    )
    study = optuna.create_study(storage=storage, study_name="heartbeats")
    x = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    silent, beating = study.ask(x), study.ask(x)
    for t in (silent, beating):
        t.set_user_attr("worker", "elsewhere:1")
        storage.record_heartbeat(t._trial_id)
    fail_dead_trials(study, storage)
    assert [t.state.name for t in study.get_trials()] == ["RUNNING", "RUNNING"]  # within grace
    time.sleep(3.5)  # past the 2 s grace even at SQLite's whole-second timestamps
    storage.record_heartbeat(beating._trial_id)
    fail_dead_trials(study, storage)
    states = {t.number: t for t in study.get_trials()}
    assert states[silent.number].state.name == "FAIL" and seen == [silent.number]
    assert states[beating.number].state.name == "RUNNING"
    (retry,) = [t for t in states.values() if t.state.name == "WAITING"]
    assert retry.system_attrs["failed_trial"] == silent.number
    assert retry.params == states[silent.number].params
    # a worker process on this host that is gone: no need to wait for its heartbeat
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = study.ask(x)
    orphan.set_user_attr("worker", f"{socket.gethostname()}:{gone.pid}")
    storage.record_heartbeat(orphan._trial_id)
    fail_dead_trials(study, storage)
    assert study.get_trials()[orphan.number].state.name == "FAIL"
    assert study.get_trials()[beating.number].state.name == "RUNNING"


def test_a_worker_killed_mid_trial_loses_no_finished_trial(tiny_checkpoint, tmp_path):
    """End to end with SIGKILL; the rerun starts at once (the dead worker's pid tells; the
    heartbeat path is the test above)."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    slow = {**TINY_RECIPE, "recovery_steps": 400}  # a pruned trial takes seconds: room to kill
    space = _space_file(tmp_path, tiny_checkpoint, slow)
    args = ["search", "--space", str(space), "--trials", "4", "--storage", storage]
    args += ["--tracking-uri", mlflow_uri, "--study-name", "killme", "--budget", "50"]
    args += ["--heartbeat", "60", "--no-register", "--data-dir", str(DATA)]
    args += ["--cache-dir", str(tmp_path / "cache"), *TP_ARGS, *AT_CHANCE]
    proc = _cli(*args, cwd=tmp_path)
    _wait_for_study(storage, "killme", [proc])
    # wait until at least one trial finished and another is running, then SIGKILL the worker
    t0 = time.time()
    while time.time() - t0 < 300:
        st = optuna.load_study(study_name="killme", storage=storage)
        trials = st.get_trials()
        states = [t.state.name for t in trials]
        # a trial that has started its work (its configuration is recorded)
        if "COMPLETE" in states and states[-1] == "RUNNING" and "config" in trials[-1].user_attrs:
            break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    else:
        raise AssertionError("never saw a running trial after a finished one")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {
        t.number: t.user_attrs["mlflow_run_id"]
        for t in optuna.load_study(study_name="killme", storage=storage).get_trials()
        if t.state.name == "COMPLETE"
    }
    assert before
    _finish([_cli(*args, cwd=tmp_path)])

    st = optuna.load_study(study_name="killme", storage=storage)
    trials = st.get_trials()
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(failed) == 1  # the killed trial, failed (its worker pid is gone) ...
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert retried and retried[0].params == failed[0].params  # ... and retried
    done = {t.number: t.user_attrs["mlflow_run_id"] for t in trials if t.state.name == "COMPLETE"}
    assert before.items() <= done.items()  # nothing finished was lost or redone
    assert len(done) + len(failed) >= 4
    cl = tracking.client(mlflow_uri)
    exp = cl.get_experiment_by_name("autoprumux/killme")
    runs = cl.search_runs([exp.experiment_id], filter_string="tags.`autoprumux.role` = 'trial'")
    for n, rid in done.items():
        mine = [r for r in runs if r.data.tags["autoprumux.trial_number"] == str(n)]
        assert len(mine) == 1 and mine[0].info.run_id == rid
    # nothing is left RUNNING; the killed trial's run, if it got as far as opening one, is
    # closed as failed
    assert not [t for t in trials if t.state.name == "RUNNING"]
    if "mlflow_run_id" in failed[0].user_attrs:
        (dead,) = [r for r in runs if r.info.run_id == failed[0].user_attrs["mlflow_run_id"]]
        assert dead.info.status == "FAILED"
