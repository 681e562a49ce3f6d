"""How a candidate's training stages stopped reaches the user, as the baseline's does: one line
per stage in `autoprumux evaluate` (and the record in its --json), the stages' params, curves and
a JSON artefact on each search trial's MLflow run (and the trial's attributes), and a "Training
stages" section in an export's card and manifest."""

from __future__ import annotations

import json
from pathlib import Path

from test_converged_baseline import pipeline, texts_data
from test_search_samplers import ReplayEvaluator, replay_settings

from autoprumux.cli import main
from autoprumux.config import Candidate, ThroughputConfig
from autoprumux.deploy import CARD_FILE, read_manifest
from autoprumux.evaluation import stage_runs
from autoprumux.training import PlateauStop

TP = ThroughputConfig(batch_size=8, seq_len=16, repeats=1, warmup=0)


def summary(cap: int, *points: tuple[int, float], patience: int = 2) -> dict:
    stop = PlateauStop(patience)
    for step, metric in points:
        stop.update(step, metric, train_loss=0.5)
    return stop.summary(cap)


CONVERGED = summary(50, (2, 50.0), (4, 70.0), (6, 60.0), (8, 55.0))
CAPPED = summary(6, (2, 50.0), (4, 60.0), (6, 61.0))
UNVALIDATED = {**PlateauStop(5).summary(5), "steps": 5, "unvalidated": "no validation split"}


def test_a_record_flattens_to_one_named_stage_each_in_the_order_they_trained():
    early = stage_runs({"mux": CONVERGED, "recovery": [CAPPED, UNVALIDATED]})
    assert [(s.key, s.name, s.stopped) for s in early] == [
        ("mux", "mux fine-tune", "converged"),
        ("recovery.1", "recovery stage 1/2", "cap"),
        ("recovery.2", "recovery stage 2/2", "unvalidated"),
    ]
    # a late mux model is pruned first: its recoveries come before its fine-tune
    late = stage_runs({"recovery": [CAPPED], "mux": None})
    assert [(s.key, s.stopped) for s in late] == [("recovery.1", "cap"), ("mux", "unrecorded")]
    students = stage_runs({"students": [CONVERGED, CAPPED], "stacking": CONVERGED})
    assert [s.key for s in students] == ["student.1", "student.2", "stacking"]
    assert [s.cap_field for s in students] == [
        "student_steps",
        "student_steps",
        "student_stacking_steps",
    ]
    assert stage_runs({}) == [] and stage_runs(None) == []
    capped = early[1]
    assert "raise recovery_steps" in capped.describe("accuracy")
    assert "unvalidated (no validation split)" in early[2].describe("accuracy")
    assert "convergence unknown" in late[1].describe("accuracy")
    brief = capped.brief("accuracy")
    assert "curve" not in brief and (brief["steps"], brief["cap"]) == (6, 6)
    assert not brief["converged"] and brief["line"] == capped.describe("accuracy")


def test_evaluate_prints_a_line_per_stage_and_its_json_holds_the_record(
    tmp_path, tiny_checkpoint, capsys
):
    data = texts_data(tmp_path / "data", rows=200)
    out_json = tmp_path / "ev.json"
    code = main(
        [
            "evaluate", "--data", str(data.location), "--model", tiny_checkpoint,
            "--sparsity", "0.3", "--mux", "2", "--batch-size", "8", "--max-seq-len", "16",
            "--finetune-steps", "2", "--mux-warmup-steps", "0", "--mux-finetune-steps", "6",
            "--recovery-steps", "4", "--prune-stages", "1", "--eval-every", "2",
            "--patience", "5", "--cache-dir", str(tmp_path / "cache"), "--tp-repeats", "1",
            "--tp-batch", "8", "--tp-seq-len", "16", "--json", str(out_json),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    mux = [line for line in out.splitlines() if line.startswith("(mux fine-tune")]
    recovery = [line for line in out.splitlines() if line.startswith("(recovery stage 1/1")]
    # patience 5 is never reached within caps of 6 and 4 steps evaluated every 2
    assert len(mux) == 1 and "NOT converged" in mux[0] and "raise mux_finetune_steps" in mux[0]
    assert len(recovery) == 1 and "cap of 4 steps" in recovery[0]
    record = json.loads(out_json.read_text())["stage_training"]
    assert [st["stage"] for st in record] == ["mux", "recovery.1"]
    assert [p["step"] for p in record[0]["curve"]] == [2, 4, 6]
    assert record[1]["stopped"] == "cap" and record[1]["cap"] == 4


def test_each_search_trial_logs_its_stages_to_its_mlflow_run(tmp_path):
    from autoprumux.cli._evaluate import _trial_report
    from autoprumux.search import Searcher, SearchSpace

    class StagedReplay(ReplayEvaluator):
        def _evaluation(self, config, loss, speed, tp):
            ev = super()._evaluation(config, loss, speed, tp)
            record = {"mux": CONVERGED, "recovery": [CAPPED, UNVALIDATED]}
            return type(ev)(**{**ev.__dict__, "stage_training": record})

    space = SearchSpace.from_dict(
        {"name": "tiny", "task": "sst2", "model": None, "params": {"mux": {"choices": [2]}}}
    )
    searcher = Searcher(
        replay_settings(space, tmp_path, trials=1), evaluator=lambda v: StagedReplay()
    )
    searcher.run()
    (trial,) = searcher.finished()
    assert trial.state.name == "COMPLETE"
    run_id = trial.user_attrs["mlflow_run_id"]
    params = searcher.client.get_run(run_id).data.params
    assert params["stage.mux.stopped"] == "converged" and params["stage.mux.converged"] == "True"
    assert (params["stage.mux.steps"], params["stage.mux.cap"]) == ("8", "50")
    assert params["stage.recovery.1.stopped"] == "cap" and params["stage.recovery.1.steps"] == "6"
    assert params["stage.recovery.2.stopped"] == "unvalidated"
    curve = searcher.client.get_metric_history(run_id, "stage.recovery.1.validation_metric")
    assert [(m.step, m.value) for m in curve] == [(2, 50.0), (4, 60.0), (6, 61.0)]
    best = searcher.client.get_metric_history(run_id, "stage.mux.best_validation_metric")
    assert [m.value for m in best] == [70.0]
    path = searcher.client.download_artifacts(run_id, "stage_training.json", str(tmp_path))
    logged = json.loads(Path(path).read_text())
    assert [st["stage"] for st in logged] == ["mux", "recovery.1", "recovery.2"]
    assert "curve" not in logged[0] and logged[0]["line"].startswith("mux fine-tune converged")
    # the trial keeps them too: `evaluate --study` prints their lines
    assert [st["stopped"] for st in trial.user_attrs["stage_training"]] == [
        "converged",
        "cap",
        "unvalidated",
    ]
    report = _trial_report(searcher, trial)
    assert "  mux fine-tune converged" in report and "recovery stage 1/2 NOT converged" in report


def test_a_failure_to_log_the_stages_does_not_fail_the_trial(tmp_path, monkeypatch, caplog):
    from autoprumux import tracking
    from autoprumux.search import Searcher, SearchSpace

    class StagedReplay(ReplayEvaluator):
        def _evaluation(self, config, loss, speed, tp):
            ev = super()._evaluation(config, loss, speed, tp)
            return type(ev)(**{**ev.__dict__, "stage_training": {"mux": CONVERGED}})

    def refuse(*args, **kwargs):
        raise RuntimeError("the tracking server went away")

    monkeypatch.setattr(tracking, "log_stage_training", refuse)
    space = SearchSpace.from_dict(
        {"name": "tiny", "task": "sst2", "model": None, "params": {"mux": {"choices": [2]}}}
    )
    searcher = Searcher(
        replay_settings(space, tmp_path, trials=1), evaluator=lambda v: StagedReplay()
    )
    searcher.run()
    (trial,) = searcher.finished()
    assert trial.state.name == "COMPLETE"
    assert "could not log the training stages" in caplog.text


def test_an_export_card_and_manifest_name_the_training_stages(tmp_path, tiny_checkpoint):
    from autoprumux.export import export_model

    pipe = pipeline(
        tmp_path, tiny_checkpoint, finetune_steps=2, mux_warmup_steps=0,
        mux_finetune_steps=6, recovery_steps=4, prune_stages=1, importance_examples=16,
        eval_every=2, patience=5,
    )  # fmt: skip
    out = tmp_path / "export"
    export_model(pipe, Candidate(sparsity=0.3, mux=2), out, throughput=TP, command="pytest")
    card = (out / CARD_FILE).read_text()
    assert "## Training stages" in card
    assert "| mux fine-tune | its cap, not converged (raise `mux_finetune_steps`) | 6 / 6 |" in card
    assert (
        "| recovery stage 1/1 | its cap, not converged (raise `recovery_steps`) | 4 / 4 |" in card
    )
    stages = read_manifest(out).measurement.stage_training
    assert [(st["stage"], st["stopped"], st["steps"], st["cap"]) for st in stages] == [
        ("mux", "cap", 6, 6),
        ("recovery.1", "cap", 4, 4),
    ]
    # the baseline's own shape trains no stage: no section
    base = tmp_path / "base"
    export_model(pipe, Candidate(), base, throughput=TP, command="pytest")
    assert "## Training stages" not in (base / CARD_FILE).read_text()
    assert read_manifest(base).measurement.stage_training == []
