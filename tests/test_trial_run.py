"""`tracking.TrialRun`: a trial's MLflow run is created with its tags, params and files, and
ends FINISHED, KILLED (stopped early, with why) or FAILED (with the error), re-raising."""

from __future__ import annotations

import json

import pytest

from autoprumux import tracking


class Stopped(Exception):
    pass


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cl = tracking.client(uri)
    return cl, tracking.experiment_id(cl, "autoprumux/trial-run", uri)


def trial_run(cl, exp: str, n: int) -> tracking.TrialRun:
    return tracking.TrialRun(
        cl,
        exp,
        name=f"trial-{n}",
        tags={"autoprumux.role": "trial"},
        params={"sparsity": 0.5},
        files={"config.json": {"trial": n}, "space.yaml": "task: sst2\n"},
        stopped=(Stopped,),
    )


def artifact(cl, run_id: str, name: str, tmp_path) -> str:
    return open(cl.download_artifacts(run_id, name, str(tmp_path))).read()


def test_a_finished_trial_keeps_its_params_files_and_result(store, tmp_path):
    cl, exp = store
    with trial_run(cl, exp, 0) as run:
        run.record(metrics={"speedup": 2.5}, params={"chosen_on": "validation"})
    got = cl.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "trial-0"
    assert got.data.params == {"sparsity": "0.5", "chosen_on": "validation"}
    assert got.data.metrics == {"speedup": 2.5} and got.data.tags["autoprumux.role"] == "trial"
    assert json.loads(artifact(cl, run.run_id, "config.json", tmp_path)) == {"trial": 0}
    assert artifact(cl, run.run_id, "space.yaml", tmp_path) == "task: sst2\n"
    assert run.seconds > 0 and run.error is None


def test_a_stopped_trial_is_killed_with_why_and_a_failed_one_keeps_its_error(store, tmp_path):
    cl, exp = store
    with pytest.raises(Stopped), trial_run(cl, exp, 1) as stopped:
        raise Stopped("hopeless after stage 1")
    got = cl.get_run(stopped.run_id)
    assert got.info.status == "KILLED" and got.data.tags["autoprumux.state"] == "PRUNED"
    assert artifact(cl, stopped.run_id, "pruned.txt", tmp_path) == "hopeless after stage 1"

    with pytest.raises(ValueError), trial_run(cl, exp, 2) as failed:
        raise ValueError("x" * 600)
    got = cl.get_run(failed.run_id)
    assert got.info.status == "FAILED" and got.data.tags["autoprumux.state"] == "FAIL"
    assert failed.error == ("ValueError: " + "x" * 600)[:500]
    assert got.data.tags["autoprumux.error"] == failed.error
    assert "Traceback" in artifact(cl, failed.run_id, "error.txt", tmp_path)
