"""Candidates trained with the baseline's care: pruning recovery, the mux fine-tunes and the
students stop on the validation split's plateau (the recipe's step counts their caps) and keep
their best weights; evaluations that could choose nothing are skipped; each stage's record is in
its cache entry and `PruMuxPipeline.stage_training`; the students never read dev; the stopping
rule is in every stage's key."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import random_batch, tiny_encoder
from test_converged_baseline import pipeline

from autoprumux.config import Candidate, MuxShape
from autoprumux.data import Encoded
from autoprumux.models import MuxConfig, MuxSequenceClassifier, StudentConfig
from autoprumux.pipeline._keys import students_key
from autoprumux.training import (
    StoppingRule,
    StudentTrainConfig,
    TrainConfig,
    describe_convergence,
    distill_students,
    prune_in_stages,
    train_late_frozen,
)


def classifier(n: int = 1, layers: int = 2, **mux) -> MuxSequenceClassifier:
    enc, _ = tiny_encoder(0, num_hidden_layers=layers)
    torch.manual_seed(1)
    return MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(n=n, **mux)).eval()


def items(count: int = 64, seed: int = 3) -> list[Encoded]:
    ids, mask, _ = random_batch(count, 12, seed=seed)
    return [
        Encoded(tuple(int(t) for t in row[: int(m.sum())]), (0,) * int(m.sum()), i % 2)
        for i, (row, m) in enumerate(zip(ids, mask, strict=True))
    ]


class Curve:
    """A synthetic validation curve: each call records the model's weights and returns the next
    value."""

    def __init__(self, *values: float):
        self.values = iter(values)
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.models: list[object] = []

    def __call__(self, model) -> float:
        self.models.append(model)
        self.snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(self.values)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


# ---- the rule in each training loop -------------------------------------------------------------


def test_a_recovery_stops_on_a_plateau_and_keeps_its_best_weights():
    model = classifier()
    curve = Curve(50.0, 70.0, 60.0, 55.0, 99.0)  # best at the 2nd evaluation, 99 never seen
    stats = prune_in_stages(
        model,
        0.3,
        items(),
        teacher=copy.deepcopy(model),
        stages=1,
        recovery_steps=50,
        importance_examples=16,
        plan_cost="params",
        seed=0,
        train_cfg=lambda steps: TrainConfig(steps=steps, batch_size=8),
        score=lambda m: {"dev_metric": 0.0},
        special_ids=(),
        device="cpu",
        stopping=StoppingRule(curve, eval_every=2, patience=2),
    )
    stage = stats["stages"][0]
    s = stage["stopping"]
    assert s["converged"] and s["steps"] == 8 < s["cap"] == 50 and stage["train"]["steps"] == 8.0
    assert s["best_step"] == 4 and s["best_metric"] == 70.0
    assert [p["step"] for p in s["curve"]] == [2, 4, 6, 8]
    assert same(model.state_dict(), curve.snapshots[1])  # the best, not the last
    assert not same(model.state_dict(), curve.snapshots[-1])
    assert "recovery stage 1/1 converged" in describe_convergence(
        s, "accuracy", "recovery stage 1/1"
    )


def test_the_cap_is_respected_and_a_capped_stage_says_which_field_to_raise():
    model, rising = classifier(n=2), Curve(*(float(x) for x in range(50, 100)))
    rule = StoppingRule(rising, eval_every=4, patience=2)
    stats = rule.train(
        model,
        items(),
        TrainConfig(steps=10, batch_size=8),
        what="mux fine-tune N=2",
        cap_field="mux_finetune_steps",
    )
    s = stats["stopping"]
    assert not s["converged"] and s["steps"] == 10 == stats["steps"]
    assert [p["step"] for p in s["curve"]] == [4, 8, 10]  # the cap is evaluated too
    line = describe_convergence(s, "accuracy", "mux fine-tune N=2", "mux_finetune_steps")
    assert line.startswith("mux fine-tune N=2 NOT converged") and "raise mux_finetune_steps" in line


def test_evaluations_that_could_choose_nothing_are_not_run():
    def refuse(model):
        raise AssertionError("no evaluation could choose anything here")

    model = classifier()
    # a cap within one evaluation interval: its only evaluation would be its last step
    s = StoppingRule(refuse, eval_every=200, patience=5).train(
        model, items(), TrainConfig(steps=5, batch_size=8), what="recovery", cap_field="x"
    )["stopping"]
    assert s["steps"] == 5 and not s["converged"] and s["curve"] == []
    assert "eval_every 200" in s["unvalidated"]
    assert "trained its cap of 5 steps unvalidated" in describe_convergence(s, "acc", "recovery")
    # no validation split
    s = StoppingRule(None, eval_every=2, patience=5).train(
        model, items(), TrainConfig(steps=6, batch_size=8), what="recovery", cap_field="x"
    )["stopping"]
    assert s["steps"] == 6 and s["unvalidated"] == "no validation split"


def test_a_frozen_late_fine_tune_stops_on_a_plateau_and_keeps_its_best_weights():
    enc, _ = tiny_encoder(0, num_hidden_layers=2)
    teacher = MuxSequenceClassifier(copy.deepcopy(enc), num_labels=2, mux=MuxConfig(n=1)).eval()
    torch.manual_seed(1)
    model = MuxSequenceClassifier(
        enc, num_labels=2, mux=MuxConfig(n=2, layers=1, combiner="concat")
    )
    model.encoder.requires_grad_(False)
    curve = Curve(50.0, 70.0, 60.0, 55.0, 99.0)
    stats = StoppingRule(curve, eval_every=2, patience=2).train(
        model,
        items(),
        TrainConfig(steps=40, batch_size=8, lr=1e-2),
        what="late mux fine-tune",
        cap_field="mux_finetune_steps",
        train_fn=train_late_frozen,
        teacher=teacher,
    )
    s = stats["stopping"]
    assert s["converged"] and s["steps"] == 8 and stats["steps"] == 8.0 and s["best_step"] == 4
    assert same(model.state_dict(), curve.snapshots[1])
    assert not same(model.state_dict(), curve.snapshots[-1])


def test_each_student_and_the_stacking_stop_on_the_ensembles_validation_plateau():
    enc, _ = tiny_encoder(0, num_hidden_layers=2)
    teacher = MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(n=1)).eval()
    seen: list[int] = []
    values = iter([50.0, 70.0, 60.0, 55.0] * 3)

    def validate(ens) -> float:
        seen.append(ens.active_students)
        return next(values)

    tcfg = StudentTrainConfig(steps_per_student=40, stacking_steps=40, batch_size=8)
    ens, stats = distill_students(
        teacher,
        items(),
        StudentConfig(k=2, depth=1),
        tcfg,
        stopping=StoppingRule(validate, eval_every=2, patience=2),
    )
    records = [t["stopping"] for t in stats["student_train"]]
    records.append(stats["stacking_train"]["stopping"])
    for s in records:
        assert s["converged"] and s["steps"] == 8 and s["best_step"] == 4 and s["cap"] == 40
    # the sum of the students so far: student j scores the first j, stacking all of them
    assert seen == [1] * 4 + [2] * 4 + [2] * 4
    assert ens.active_students == 2


# ---- the pipeline ------------------------------------------------------------------------------


def test_the_students_never_read_dev_and_record_how_they_stopped(
    tmp_path, tiny_checkpoint, monkeypatch
):
    import autoprumux.training as training
    import autoprumux.training._students as students

    pipe = pipeline(
        tmp_path, tiny_checkpoint, finetune_steps=2, student_steps=4,
        student_stacking_steps=4, eval_every=2, patience=5,
    )  # fmt: skip
    pipe.baseline()
    dev = {tuple(it.input_ids) for it in pipe.dev_items}
    read: list[tuple[int, ...]] = []

    def spy(real):
        def run(model, data, *args, **kwargs):
            read.extend(tuple(it.input_ids) for it in data)
            return real(model, data, *args, **kwargs)

        return run

    monkeypatch.setattr(students, "predict", spy(students.predict))
    monkeypatch.setattr(students, "train_classifier", spy(students.train_classifier))
    monkeypatch.setattr(training, "predict", spy(training.predict))  # the validation metric
    pipe.students(2, 1)
    assert read and not set(read) & dev
    assert {tuple(it.input_ids) for it in pipe.validation_items} <= set(read)  # validated on
    record = pipe.stage_training(Candidate(technique="students", students=2, student_depth=1))
    assert len(record["students"]) == 2
    assert [p["step"] for p in record["students"][0]["curve"]] == [2, 4]
    assert [p["step"] for p in record["stacking"]["curve"]] == [2, 4]


def test_the_pipelines_mux_fine_tune_and_recovery_record_how_they_stopped(
    tmp_path, tiny_checkpoint
):
    pipe = pipeline(
        tmp_path, tiny_checkpoint, finetune_steps=2, mux_warmup_steps=0,
        mux_finetune_steps=6, recovery_steps=4, prune_stages=1, importance_examples=16,
        eval_every=2, patience=5,
    )  # fmt: skip
    config = Candidate(sparsity=0.3, mux=2)
    assert pipe.stage_training(config) == {}  # nothing built yet, and nothing built here
    pipe.candidate(config)
    record = pipe.stage_training(config)
    assert [p["step"] for p in record["mux"]["curve"]] == [2, 4, 6]
    assert not record["mux"]["converged"] and record["mux"]["cap"] == 6
    (recovery,) = record["recovery"]
    assert [p["step"] for p in recovery["curve"]] == [2, 4] and recovery["cap"] == 4
    # the unpruned N-way model is that same mux entry
    assert pipe.stage_training(Candidate(mux=2)) == {"mux": record["mux"]}


def test_every_stage_key_holds_the_stopping_rule(tmp_path, tiny_checkpoint):
    def keys(pipe) -> list[dict]:
        return [
            pipe.mux_entry_key(MuxShape(2)),
            pipe.candidate_entry_key(0.3, MuxShape()),
            pipe.candidate_entry_key(0.3, MuxShape(2)),
            students_key(pipe, 2, 1),
        ]

    base = keys(pipeline(tmp_path, tiny_checkpoint))
    assert all(k["stages_stop"] == "validation_plateau" for k in base)  # not a fixed-step entry
    changes = [{"patience": 7}, {"eval_every": 5}, {"min_delta": 0.5}, {"validation_examples": 50}]
    for i, change in enumerate(changes):
        other = keys(pipeline(tmp_path / str(i), tiny_checkpoint, **change))
        assert all(a != b for a, b in zip(base, other, strict=True)), change
    # without a split every stage trains its cap: its own entries
    unsplit = keys(pipeline(tmp_path / "none", tiny_checkpoint, validation_examples=0))
    assert all(k["stages_stop"] == "cap" for k in unsplit)


@pytest.mark.parametrize("steps", [0, 3])
def test_a_tiny_recipe_trains_without_evaluations(tmp_path, tiny_checkpoint, monkeypatch, steps):
    import autoprumux.pipeline._baseline as baseline

    pipe = pipeline(
        tmp_path, tiny_checkpoint, finetune_steps=2, mux_warmup_steps=0,
        mux_finetune_steps=steps, recovery_steps=steps, prune_stages=1, importance_examples=16,
    )  # fmt: skip
    pipe.baseline()

    scored: list[object] = []
    real = baseline.validation_metrics

    def count(pipe, model, pairings):
        scored.append(model)
        return real(pipe, model, pairings)

    monkeypatch.setattr(baseline, "validation_metrics", count)
    pipe.candidate(Candidate(sparsity=0.3, mux=2))
    record = pipe.stage_training(Candidate(sparsity=0.3, mux=2))
    assert record["mux"]["steps"] == steps and record["mux"]["curve"] == []
    # a stage whose cap is within eval_every is not validated while it trains: the split scores
    # only the finished pruning stage, for the record a search reads
    assert len(scored) == 1


def _another(value: object, rule) -> object:
    """A valid value of a recipe field other than `value` (its rule says what is valid)."""
    if rule.kind is bool:
        return not value
    if rule.kind is str:
        return next(c for c in rule.choices if c != value)
    if value is None:
        return 40 if rule.kind is int else 0.25
    if rule.kind is int:
        return value + 1
    return value + 0.25 if rule.high is None or value + 0.25 <= rule.high else value / 2


def test_each_key_changes_with_every_field_of_the_recipe_parts_its_stage_reads(
    tmp_path, tiny_checkpoint
):
    import dataclasses

    from autoprumux.pipeline._keys import KEY_VERSION, SHARED_PARTS, int8_key, path_key

    pipe = pipeline(tmp_path, tiny_checkpoint)
    late = MuxShape(2, 1, "concat")
    # each stage, and the recipe parts it reads besides the shared ones
    stages = {
        "baseline": (lambda: pipe.entry_key(), ()),
        "mux": (lambda: pipe.mux_entry_key(MuxShape(2)), ("mux",)),
        "late mux": (lambda: pipe.mux_entry_key(late), ("mux", "late_mux")),
        "candidate": (lambda: pipe.candidate_entry_key(0.3, MuxShape()), ("mux", "recovery")),
        "int8": (lambda: int8_key(pipe, 0.3, MuxShape()), ("mux", "recovery", "int8")),
        "students": (lambda: students_key(pipe, 2, 1), ("students",)),
        "path": (lambda: path_key(pipe, 0.3), ("path",)),
    }
    original = pipe.recipe
    before = {name: key() for name, (key, _) in stages.items()}
    assert all(k["key_version"] == KEY_VERSION for k in before.values())
    for f in dataclasses.fields(original):
        if f.name == "train_autocast":
            continue  # keyed as resolved on the device ("auto" may be "bf16" or "fp32")
        pipe.recipe = dataclasses.replace(
            original, **{f.name: _another(getattr(original, f.name), f.metadata["rule"])}
        )
        for name, (key, parts) in stages.items():
            reads = f.metadata["group"] in (*SHARED_PARTS, *parts)
            assert (key() != before[name]) == reads, f"{name} key and recipe field {f.name}"
    pipe.recipe = original
