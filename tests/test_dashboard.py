"""`autoprumux ui` opens MLflow's runs page on the study's trials: a saved view on the
experiment (MLflow 3's `mlflow.sharedViewState.<key>` tag, opened by `viewStateShareKey`) whose
columns are the keys the trials logged, ordered by speedup so that MLflow lists them flat; and
the study's run holds the Pareto plot, linked beside it. A replayed search: nothing trains."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_search_samplers import ReplayEvaluator, replay_searcher, replay_settings

from autoprumux import tracking
from autoprumux.cli import _serve, main
from autoprumux.config import Candidate
from autoprumux.search import SearchSpace

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


class ValidatedReplay(ReplayEvaluator):
    """A replay whose trials also score on a validation split (half their dev loss there)."""

    validation_size = 400

    def _evaluation(self, config: Candidate, loss: float, speed: float, tp: Any) -> Any:
        ev = super()._evaluation(config, loss, speed, tp)
        return replace(
            ev,
            baseline=replace(ev.baseline, validation_metric=91.0),
            candidate=replace(ev.candidate, validation_metric=91.0 - loss / 2),
        )


def space(**params: Any) -> SearchSpace:
    return SearchSpace.from_dict(
        {
            "name": "dash",
            "task": "sst2",
            "model": None,
            "recipe": {"prune_stages": 1},
            "params": params
            or {
                "sparsity": {"choices": [0.0, 0.5]},
                "mux": {"choices": [1, 2]},
                "precision": {"choices": ["fp32", "int8"]},
            },
        }
    )


def ui_output(monkeypatch, capsys, uri: str) -> str:
    """What `autoprumux ui` prints over the store `uri` (the server itself is not started)."""
    started: list[list[str]] = []
    monkeypatch.setattr(_serve, "_exec", lambda cmd, env: started.append(cmd) or 0)
    capsys.readouterr()
    assert main(["ui", "--port", "5999", "--tracking-uri", uri]) == 0
    (cmd,) = started
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    return capsys.readouterr().out


def saved_view(cl: Any, experiment_id: str, key: str) -> tuple[dict, dict]:
    """The saved view `key` as MLflow's UI reads it: the envelope and its parsed state."""
    tag = cl.get_experiment(experiment_id).tags[f"mlflow.sharedViewState.{key}"]
    envelope = json.loads(tag)
    assert isinstance(envelope["name"], str) and isinstance(envelope["createdAt"], int)
    assert isinstance(envelope["state"], str)  # a JSON string (or "deflate;" + base64)
    return envelope, json.loads(envelope["state"])


def test_ui_opens_on_the_trials_with_their_columns_and_the_pareto_front(
    tmp_path, monkeypatch, capsys
):
    s = replay_settings(space(), tmp_path, sampler="grid", trials=4, budget=50.0)
    searcher = replay_searcher(s, ValidatedReplay())
    searcher.run()
    cl = tracking.client(s.tracking_uri)
    exp = searcher.experiment_id
    # the search ends with the Pareto plot on the study's run and the view on its experiment
    assert tracking.PARETO_FIGURE in {a.path for a in cl.list_artifacts(searcher.parent_run_id)}
    envelope, state = saved_view(cl, exp, tracking.TRIALS_VIEW)

    out = ui_output(monkeypatch, capsys, s.tracking_uri)
    base = "http://127.0.0.1:5999/#/experiments"
    page = re.search(r"the latest study's trials: (\S+)", out).group(1)
    assert page == (
        f"{base}/{exp}/runs?workflowType=machine_learning&viewStateShareKey={tracking.TRIALS_VIEW}"
    )
    pareto = re.search(r"its Pareto front: (\S+)", out).group(1)
    assert pareto == (
        f"{base}/{exp}/runs/{searcher.parent_run_id}/artifacts/pareto_front.png"
        "?workflowType=machine_learning"
    )
    # `ui` found the view current: not rewritten
    assert saved_view(cl, exp, tracking.TRIALS_VIEW) == (envelope, state)

    # ordered by a metric, so MLflow lists the trials flat (not folded under the study's run)
    assert state["orderByKey"] == "metrics.`speedup`" and state["orderByAsc"] is False
    assert state["searchFilter"] == ""
    # the columns: the losses (validation and dev), speedup, sparsity, N and precision, each a
    # key every trial run logged; the dimensions the trials share (technique) are left out
    assert state["selectedColumns"] == [
        "metrics.`validation_loss`",
        "metrics.`accuracy_loss`",
        "metrics.`speedup`",
        "params.`sparsity`",
        "params.`mux`",
        "params.`precision`",
    ]
    assert state["columnOrder"] == state["selectedColumns"]
    runs = cl.search_runs([exp], "tags.`autoprumux.role` = 'trial'")
    assert len(runs) == 4
    for col in state["selectedColumns"]:
        kind, key = re.fullmatch(r"(metrics|params)\.`(.+)`", col).groups()
        assert all(key in getattr(r.data, kind) for r in runs), col
    # the chart view: speedup against each loss, every run shown, in the view's own section
    (section,) = state["compareRunSections"]
    charts = state["compareRunCharts"]
    assert [(c["type"], c["xaxis"]["key"], c["yaxis"]["key"]) for c in charts] == [
        ("SCATTER", "validation_loss", "speedup"),
        ("SCATTER", "accuracy_loss", "speedup"),
    ]
    assert all(c["metricSectionId"] == section["uuid"] for c in charts)
    assert state["runsHiddenMode"] == "SHOW_ALL"


def test_the_view_follows_the_keys_a_study_logged(tmp_path, monkeypatch, capsys):
    """Students beside PruMUX and no validation split: the technique and K become columns,
    the validation loss is not one; a study without trials opens on its plain runs page."""
    s = replay_settings(
        space(
            technique={"choices": ["prumux", "students"]},
            sparsity={"choices": [0.0, 0.5]},
            students={"choices": [1, 2]},
        ),
        tmp_path,
        sampler="grid",
        trials=4,
        budget=50.0,
    )
    searcher = replay_searcher(s)
    searcher.run()
    cl = tracking.client(s.tracking_uri)
    _, state = saved_view(cl, searcher.experiment_id, tracking.TRIALS_VIEW)
    assert state["selectedColumns"] == [
        "metrics.`accuracy_loss`",
        "metrics.`speedup`",
        "params.`technique`",
        "params.`sparsity`",
        "params.`mux`",
        "params.`precision`",
        "params.`students`",
    ]

    # a study whose search has not run a trial yet
    (tmp_path / "empty").mkdir()
    empty = replay_searcher(replay_settings(space(), tmp_path / "empty"))
    out = ui_output(monkeypatch, capsys, empty.s.tracking_uri)
    assert f"{empty.experiment_id}/runs?workflowType=machine_learning\n" in out
    assert "viewStateShareKey" not in out and "Pareto" not in out


def test_the_screenshot_script_replays_the_recorded_main_job(tmp_path, monkeypatch, capsys):
    """benchmarks/dashboard_screenshot.py --replay: the recorded trials, in their order, with
    their recorded losses and speedups, in a store `ui` opens on the trials view."""
    monkeypatch.syspath_prepend(str(BENCH))
    import dashboard_screenshot

    record = BENCH / "results" / "main_job_sst2_cpu.json"
    dashboard_screenshot.replay_store(tmp_path, record)
    recorded = json.loads(record.read_text())["trials"]
    uri = tracking.default_tracking_uri(tmp_path)
    cl = tracking.client(uri)
    runs = cl.search_runs(
        [e.experiment_id for e in cl.search_experiments()], "tags.`autoprumux.role` = 'trial'"
    )
    by_number = {int(r.data.tags["autoprumux.trial_number"]): r for r in runs}
    assert sorted(by_number) == [t["number"] for t in recorded]
    for t in recorded:
        r = by_number[t["number"]]
        assert float(r.data.params["sparsity"]) == t["config"]["sparsity"]
        assert r.data.params["precision"] == t["config"]["precision"]
        for key in ("accuracy_loss", "validation_loss", "speedup"):
            assert r.data.metrics[key] == pytest.approx(t[key], abs=1e-9), key
    out = ui_output(monkeypatch, capsys, uri)
    pages = dashboard_screenshot.printed_pages(out.splitlines())
    assert pages["trials"].endswith(f"viewStateShareKey={tracking.TRIALS_VIEW}")
    assert pages["pareto"].endswith("/artifacts/pareto_front.png?workflowType=machine_learning")
