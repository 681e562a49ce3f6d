"""The pruning path: one distilled run raising sparsity level by level, its grid and schedule,
snapshots that reload bit-equal, a killed path that resumes at its last saved level, and the
key of its cache entries."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import random_batch
from test_converged_baseline import texts_data
from test_stage_stopping import classifier, items

import autoprumux.pipeline._path as pipeline_path
import autoprumux.training._path as training_path
from autoprumux.config import Recipe
from autoprumux.errors import ConfigError
from autoprumux.models import MuxSequenceClassifier
from autoprumux.pipeline._keys import path_key
from autoprumux.training import TrainConfig, level_steps, path_levels, prune_path

PATH_RECIPE = {
    "batch_size": 8,
    "max_seq_len": 16,
    "finetune_steps": 2,
    "path_max_sparsity": 0.6,
    "path_step": 0.2,
    "path_steps": 6,
    "path_settle_steps": 1,
    "path_importance_examples": 16,
}


def make_pipe(tmp_path: Path, checkpoint: str, rows: int = 400, **recipe):
    from autoprumux.pipeline import PruMuxPipeline

    return PruMuxPipeline(
        data=texts_data(tmp_path / f"data{rows}", rows=rows),
        model=checkpoint,
        recipe=Recipe(**{**PATH_RECIPE, **recipe}),
        cache_dir=tmp_path / "cache",
    )


def logits(model: MuxSequenceClassifier) -> torch.Tensor:
    ids, mask, tt = random_batch(6, 12, seed=7)
    with torch.no_grad():
        return model.eval()(ids, mask, tt)


# ---- the grid and the schedule ----------------------------------------------------------------
def test_the_grid_steps_up_to_the_maximum_which_ends_it():
    assert path_levels(0.9, 0.05) == [round(0.05 * i, 6) for i in range(1, 19)]
    assert path_levels(0.5, 0.2) == [0.2, 0.4, 0.5]
    assert path_levels(0.3, 0.5) == [0.3]
    with pytest.raises(ConfigError, match="step"):
        path_levels(0.9, 0.0)


@pytest.mark.parametrize("schedule", ["cubic", "linear"])
def test_the_schedule_shares_all_the_steps_over_the_levels(schedule):
    shares = level_steps(path_levels(0.9, 0.05), 2000, schedule)
    assert sum(shares) == 2000 and min(shares) >= 0 and len(shares) == 18


def test_cubic_prunes_fast_first_and_slowly_near_the_end():
    grid = path_levels(0.9, 0.1)
    cubic, linear = level_steps(grid, 900, "cubic"), level_steps(grid, 900, "linear")
    assert linear == [100] * 9
    assert cubic == sorted(cubic) and cubic[0] < 100 < cubic[-1]
    with pytest.raises(ConfigError, match="schedule"):
        level_steps(grid, 900, "exponential")


def test_the_recipe_checks_the_path_fields():
    with pytest.raises(ConfigError, match=r"path_step \(0\.0\) must be a finite number in \(0"):
        Recipe(path_step=0.0)
    assert Recipe().path_schedule == "cubic" and Recipe().path_max_sparsity == 0.9


# ---- the path itself ----------------------------------------------------------------------------
def test_a_path_is_monotone_in_measured_sparsity_and_its_snapshots_reload_bit_equal(tmp_path):
    model, teacher = classifier(layers=2), classifier(layers=2)
    data = items(64)
    saved: list[tuple[float, float, Path, torch.Tensor]] = []

    def snapshot(level: float, m: MuxSequenceClassifier, metric: float) -> None:
        d = m.save(tmp_path / f"s{level}")
        saved.append((level, m.sparsity(), d, logits(m)))

    stats = prune_path(
        model,
        data,
        teacher=teacher,
        max_sparsity=0.8,
        step=0.2,
        schedule="cubic",
        steps=8,
        settle_steps=1,
        importance_examples=16,
        plan_cost="time",
        seed=0,
        train_cfg=lambda steps: TrainConfig(steps=steps, batch_size=8, distill_weight=0.5),
        level_metric=lambda m: 50.0,
        snapshot=snapshot,
        special_ids=(),
        device="cpu",
    )
    assert [s[0] for s in saved] == [0.2, 0.4, 0.6, 0.8]
    measured = [s[1] for s in saved]
    assert measured == sorted(measured) and measured[0] > 0
    for (level, got, _, _), st in zip(saved, stats, strict=True):
        assert st["level"] == level and st["sparsity"] == got and got >= level - 0.01
    assert sum(st["steps"] for st in stats) == 8 + 4 * 1
    for _, _, d, at_snapshot in saved:
        assert torch.equal(logits(MuxSequenceClassifier.load(d)), at_snapshot)


class Stop(Exception):
    """Kills a path from its snapshot callback."""


def _watch(monkeypatch, stop_after: int | None = None) -> dict:
    """Record the model's logits at each snapshot the pipeline saves and the training runs
    taken; with `stop_after`, kill the path once that many levels are saved."""
    seen: dict = {"logits": {}, "trained": 0, "lr": []}
    real_path, real_train = training_path.prune_path, training_path.train_classifier

    def path(*args, snapshot, **kw):
        def watched(level, m, metric):
            snapshot(level, m, metric)
            seen["logits"][level] = logits(m)
            if stop_after is not None and len(seen["logits"]) == stop_after:
                raise Stop

        return real_path(*args, snapshot=watched, **kw)

    def train(model, items, cfg, **kw):
        seen["trained"] += 1
        seen["lr"].append(cfg.lr)
        return real_train(model, items, cfg, **kw)

    monkeypatch.setattr(pipeline_path, "prune_path", path)
    monkeypatch.setattr(training_path, "train_classifier", train)
    return seen


def test_the_pipelines_path_is_cached_per_level_and_its_snapshots_reload_bit_equal(
    tmp_path, tiny_checkpoint, monkeypatch
):
    pipe = make_pipe(tmp_path, tiny_checkpoint, path_lr=3e-5)
    pipe.baseline()
    seen = _watch(monkeypatch)
    built = pipe.path()
    assert [lv.level for lv in built] == [0.2, 0.4, 0.6] and seen["trained"] == 3
    assert seen["lr"] == [3e-5] * 3  # the path's own learning rate, not the baseline's
    measured = [lv.sparsity for lv in built]
    assert measured == sorted(measured) and measured[0] > 0
    assert all(lv.scored_on == "validation" for lv in built)
    for lv in built:
        assert torch.equal(logits(pipe.path_snapshot(lv.level)), seen["logits"][lv.level])
    assert pipe.path() == built and seen["trained"] == 3  # read, never trained again
    with pytest.raises(ConfigError, match="not a level of the pruning path"):
        pipe.path_snapshot(0.3)


def test_a_killed_path_resumes_at_its_last_level(tmp_path, tiny_checkpoint, monkeypatch):
    pipe = make_pipe(tmp_path, tiny_checkpoint)
    pipe.baseline()
    seen = _watch(monkeypatch, stop_after=2)
    with pytest.raises(Stop):
        pipe.path()
    assert [pipe.cache.has("path", path_key(pipe, lv)) for lv in (0.2, 0.4, 0.6)] == [
        True,
        True,
        False,
    ]
    first = {lv: pipe.cache.meta(pipe.cache.entry("path", path_key(pipe, lv))) for lv in (0.2, 0.4)}
    seen = _watch(monkeypatch)
    built = pipe.path()
    assert seen["trained"] == 1 and list(seen["logits"]) == [0.6]  # only the missing level
    assert [pipe.cache.meta(lv.entry) for lv in built[:2]] == [first[0.2], first[0.4]]
    # it goes on as an unbroken path would have
    resumed = seen["logits"][0.6]
    whole = make_pipe(tmp_path / "whole", tiny_checkpoint)
    assert torch.equal(logits(whole.path_snapshot(0.6)), resumed)


def test_the_paths_key_follows_the_baseline_the_data_and_the_schedule(tmp_path, tiny_checkpoint):
    pipe = make_pipe(tmp_path, tiny_checkpoint)
    before = path_key(pipe, 0.2)
    assert path_key(pipe, 0.4) != before
    original = pipe.recipe
    for change, changes in [
        ({"finetune_steps": 3}, True),
        ({"path_schedule": "linear"}, True),
        ({"path_steps": 7}, True),
        ({"path_max_sparsity": 0.8}, True),
        ({"path_seed": 3}, True),
        ({"path_plan_cost": "params"}, True),
        ({"path_sublayers_per_level": 1}, True),
        ({"plan_cost": "time"}, False),
        ({"student_steps": 5}, False),
        ({"recovery_steps": 5}, False),
        ({"mux_finetune_steps": 5}, False),
    ]:
        pipe.recipe = dataclasses.replace(original, **change)
        assert (path_key(pipe, 0.2) != before) == changes, change
    pipe.recipe = original
    other = make_pipe(tmp_path, tiny_checkpoint, rows=401)
    assert path_key(other, 0.2) != before


def test_a_new_time_model_rebuilds_every_pruned_model(tmp_path, tiny_checkpoint, monkeypatch):
    """`LAYER_TIME` decides what a plan by time removes: the path's levels and the separate
    recoveries are keyed by it, so a refitted time model never reads a model cut by the old."""
    import autoprumux.pipeline._keys as keys
    from autoprumux.models import LayerTime

    pipe = make_pipe(tmp_path, tiny_checkpoint)
    path_before, recovery_before = path_key(pipe, 0.2), keys.recovery_key(pipe)
    monkeypatch.setattr(keys, "LAYER_TIME", LayerTime(1.0, 0.0, 0.0))
    assert path_key(pipe, 0.2) != path_before
    assert keys.recovery_key(pipe) != recovery_before


def test_a_path_seed_draws_another_path_over_the_same_baseline(
    tmp_path, tiny_checkpoint, monkeypatch
):
    pipe = make_pipe(tmp_path, tiny_checkpoint)
    baseline_logits = logits(pipe.baseline())
    drawn = make_pipe(tmp_path, tiny_checkpoint, path_seed=5)
    seen = _watch(monkeypatch)
    assert torch.equal(logits(drawn.baseline()), baseline_logits)  # read, not trained
    assert not torch.equal(logits(drawn.path_snapshot(0.4)), logits(pipe.path_snapshot(0.4)))
    assert seen["trained"] == 6  # two paths of three levels, no baseline
    # the recipe's own seed named as the path's draws the default path, bit for bit
    same = make_pipe(tmp_path, tiny_checkpoint, path_seed=pipe.recipe.seed)
    assert path_key(same, 0.4) == path_key(pipe, 0.4)  # one entry, never built twice
    assert torch.equal(logits(same.path_snapshot(0.4)), logits(pipe.path_snapshot(0.4)))
    assert seen["trained"] == 6


# ---- snapshots as candidates (the recipe's recovery "path") ----------------------------------
def test_a_path_candidate_is_its_snapshot_and_a_search_over_it_never_retrains(
    tmp_path, tiny_checkpoint, monkeypatch
):
    from autoprumux.config import Candidate
    from autoprumux.evaluation import ThroughputConfig
    from autoprumux.pipeline._mux import last_stage

    pipe = make_pipe(tmp_path, tiny_checkpoint, recovery="path")
    pipe.baseline()
    pipe.path()
    seen = _watch(monkeypatch)  # counts every path training from here on
    cand = Candidate(sparsity=0.4)
    stages: list[tuple[int, float]] = []
    model = pipe.trained(cand, on_stage=lambda s, *m: stages.append((s, m)))
    assert torch.equal(logits(model), logits(pipe.path_snapshot(0.4)))
    assert [s for s, _ in stages] == [last_stage(pipe.recipe, cand)] == [1]
    tp = ThroughputConfig(batch_size=4, seq_len=16, repeats=1, warmup=0)
    for precision in ("fp32", "int8"):
        ev = pipe.evaluate(Candidate(sparsity=0.6, precision=precision), throughput=tp)
        assert ev.candidate.sparsity == pytest.approx(pipe.path()[-1].sparsity, abs=1e-3)
    assert seen["trained"] == 0
    assert not list((tmp_path / "cache").glob("candidate*/*"))  # no recovery of its own


def test_a_path_candidate_off_the_grid_is_refused_before_any_training(tmp_path, tiny_checkpoint):
    from autoprumux.config import Candidate

    pipe = make_pipe(tmp_path, tiny_checkpoint, recovery="path")
    with pytest.raises(ConfigError, match=r"0\.3 is not a level .*\[0\.2, 0\.4, 0\.6\]"):
        pipe.check(Candidate(sparsity=0.3))
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*/*"))
    pipe.check(Candidate(sparsity=0.3, mux=2))  # N > 1 prunes with its own recovery


def test_an_int8_recovery_on_a_path_snapshot_is_keyed_by_the_path(tmp_path, tiny_checkpoint):
    from autoprumux.config import MuxShape
    from autoprumux.pipeline._keys import int8_key

    separate = make_pipe(tmp_path, tiny_checkpoint)
    path = make_pipe(tmp_path / "p", tiny_checkpoint, recovery="path")
    on_path = int8_key(path, 0.4, MuxShape())
    assert on_path != int8_key(separate, 0.4, MuxShape())
    assert on_path["level"] == 0.4 and on_path["technique"] == "path"
    path.recipe = dataclasses.replace(path.recipe, recovery_steps=99)  # the path reads none
    assert int8_key(path, 0.4, MuxShape()) == on_path


def test_a_pruned_late_mux_model_is_built_on_the_paths_snapshot(tmp_path, tiny_checkpoint):
    from autoprumux.config import Candidate
    from autoprumux.pipeline._keys import pruned_late_key

    pipe = make_pipe(tmp_path, tiny_checkpoint, recovery="path", mux_finetune_steps=2)
    late = Candidate(sparsity=0.4, mux=2, mux_layers=1, mux_combiner="concat")
    model = pipe.candidate(late)
    snapshot = pipe.path_snapshot(0.4)
    assert model.encoder.config.heads == snapshot.encoder.config.heads  # the snapshot's shape
    built = [p for p in (tmp_path / "cache" / "candidate").iterdir() if not p.name.startswith(".")]
    assert len(built) == 1  # the late model alone: its N=1 model is the path's, not recovered
    key = pruned_late_key(pipe, 0.4, late.mux_shape)
    assert key["on_pruned"] == path_key(pipe, 0.4) and pipe.cache.has("candidate", key)


def test_students_start_from_a_path_snapshot_keyed_by_its_level(tmp_path, tiny_checkpoint):
    from autoprumux.pipeline._keys import students_key

    steps = {"student_steps": 2, "student_stacking_steps": 2}
    pipe = make_pipe(tmp_path, tiny_checkpoint, student_start=0.2, **steps)
    snapshot = pipe.path_snapshot(0.2)
    first = snapshot.encoder.config
    ens = pipe.students(2, 1)
    assert ens.layer_shapes == [
        (
            first.heads[0] if first.attn_present[0] else None,
            first.ffn[0] if first.ffn_present[0] else None,
        )
    ]
    mine, theirs = ens.students[0].layers[0], snapshot.encoder.layers[0]
    for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
        assert a.shape == b.shape
    from_baseline = make_pipe(tmp_path, tiny_checkpoint, **steps)
    assert from_baseline.students(2, 1).sparsity() < ens.sparsity()
    key = students_key(pipe, 2, 1)
    assert key["start"] == path_key(pipe, 0.2) and key != students_key(from_baseline, 2, 1)
    other_path = make_pipe(tmp_path, tiny_checkpoint, student_start=0.2, path_steps=8, **steps)
    assert students_key(other_path, 2, 1) != key  # another path cuts another snapshot


def test_a_snapshot_recovered_at_its_level_trains_once_keyed_by_the_level_and_its_steps(
    tmp_path, tiny_checkpoint
):
    from autoprumux.config import Candidate, MuxShape
    from autoprumux.pipeline._keys import int8_key, pruned_key, snapshot_key

    pipe = make_pipe(tmp_path, tiny_checkpoint, recovery="path", snapshot_recovery_steps=3)
    config = Candidate(sparsity=0.4)
    assert pipe.recipe.trains_own_model(config)
    assert not dataclasses.replace(pipe.recipe, snapshot_recovery_steps=0).trains_own_model(config)
    model = pipe.candidate(config)
    snapshot = pipe.path_snapshot(0.4)
    assert model.encoder.config.heads == snapshot.encoder.config.heads  # trained at its shape
    assert model.encoder.config.ffn == snapshot.encoder.config.ffn
    assert not torch.equal(logits(model), logits(snapshot))
    recovered = tmp_path / "cache" / "snapshot"
    assert len([p for p in recovered.iterdir() if not p.name.startswith(".")]) == 1
    assert torch.equal(logits(pipe.candidate(config)), logits(model))  # read, not retrained
    assert len([p for p in recovered.iterdir() if not p.name.startswith(".")]) == 1
    key = snapshot_key(pipe, 0.4)
    assert pruned_key(pipe, 0.4, MuxShape()) == ("snapshot", key)
    assert int8_key(pipe, 0.4, MuxShape()).items() >= key.items()
    assert pipe.stage_training(config)["recovery"][0]["steps"] <= 3
    longer = make_pipe(tmp_path, tiny_checkpoint, recovery="path", snapshot_recovery_steps=5)
    assert snapshot_key(longer, 0.4) != key and path_key(longer, 0.4) == path_key(pipe, 0.4)


def test_a_snapshot_is_chosen_on_both_held_out_splits_and_a_trained_candidate_on_validation(
    tmp_path, tiny_checkpoint
):
    from autoprumux.config import Candidate
    from autoprumux.evaluation import ThroughputConfig, paired_loss_se, paired_predictions

    tp = ThroughputConfig(batch_size=4, seq_len=16, repeats=1, warmup=0)
    pipe = make_pipe(tmp_path, tiny_checkpoint, recovery="path")
    both = pipe.validation_items + pipe.stopping_items
    assert len(pipe.validation_items) == len(pipe.stopping_items) == 40
    gold = [it.label for it in both]
    for config in (Candidate(sparsity=0.4), Candidate(sparsity=0.0, precision="int8")):
        ev, model = pipe.evaluate_model(config, throughput=tp)
        assert ev.validation_noise.split == "validation+stopping"
        assert ev.validation_noise.examples == 80
        base = paired_predictions(pipe.baseline(), both, pairings=1)
        cand = paired_predictions(model, both, pairings=1)
        hits = [
            sum(p == g for p, g in zip(pred.labels[0], gold, strict=True)) for pred in (base, cand)
        ]
        assert ev.validation_loss == pytest.approx(100.0 * (hits[0] - hits[1]) / len(both))
        assert ev.validation_loss_se == pytest.approx(
            paired_loss_se(pipe.task.metric, base, cand, gold)
        )
    # a candidate recovered at its own shape stopped on the stopping split: validation alone
    pipe.recipe = dataclasses.replace(pipe.recipe, recovery="separate", recovery_steps=2)
    ev = pipe.evaluate(Candidate(sparsity=0.4), throughput=tp)
    assert (ev.validation_noise.split, ev.validation_noise.examples) == ("validation", 40)
    # without a stopping split the validation split stopped the baseline: validation alone
    alone = make_pipe(tmp_path / "alone", tiny_checkpoint, recovery="path", stopping_examples=0)
    ev = alone.evaluate(Candidate(sparsity=0.4), throughput=tp)
    assert (ev.validation_noise.split, ev.validation_noise.examples) == ("validation", 40)
