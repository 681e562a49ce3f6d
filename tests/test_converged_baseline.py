"""A converged baseline when autoprumux trains it: all training examples, a validation split held
out of train (stratified, its own seed, never dev, never trained on), training that stops on the
split's plateau or the cap and keeps its best weights, the learning curve in the cache entry,
the stopping rule in the cache keys, and one line saying whether the baseline converged."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from conftest import tiny_encoder

from autoprumux.cli import main
from autoprumux.config import RECIPE_PRESETS, Candidate, Recipe
from autoprumux.data import DataSource, Example, validation_size, validation_split
from autoprumux.errors import ConfigError
from autoprumux.models import MuxConfig, MuxSequenceClassifier
from autoprumux.training import (
    AnnealOnPlateau,
    PlateauStop,
    TrainConfig,
    describe_convergence,
    train_until_plateau,
)

# ---- the plateau rule --------------------------------------------------------------------------


def test_stopping_fires_on_a_plateau_of_a_synthetic_curve():
    stop = PlateauStop(patience=3, min_delta=0.1)
    curve = [50.0, 60.0, 65.0, 65.05, 64.0, 63.0, 99.0]  # 65.05: within min_delta of 65
    seen = []
    for i, metric in enumerate(curve, start=1):
        seen.append(stop.update(i * 10, metric, train_loss=1.0 / i))
        if stop.stopped:
            break
    assert seen == [True, True, True, False, False, False]  # 99 never seen: it stopped
    s = stop.summary(cap=1000)
    assert s["converged"] and s["steps"] == 60 and s["best_step"] == 30
    assert s["best_metric"] == 65.0 and s["last_gain"] == 5.0 and s["steps_since_best"] == 30
    assert [p["metric"] for p in s["curve"]] == curve[:6]
    assert "converged" in describe_convergence(s, "accuracy")
    assert "NOT" not in describe_convergence(s, "accuracy")


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_patience_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="patience"):
        PlateauStop(patience=bad)


def tiny_classifier() -> MuxSequenceClassifier:
    torch.manual_seed(0)
    return MuxSequenceClassifier(tiny_encoder()[0], num_labels=2, mux=MuxConfig(n=1))


def tiny_items(n: int = 64):
    from autoprumux.data import Encoded

    g = random.Random(0)
    out = []
    for i in range(n):
        ids = (2, *(g.randint(5, 98) for _ in range(g.randint(3, 12))))
        out.append(Encoded(ids, (0,) * len(ids), i % 2))
    return out


def test_training_stops_on_the_plateau_and_keeps_the_best_weights():
    model, items = tiny_classifier(), tiny_items()
    curve = iter([50.0, 70.0, 60.0, 55.0, 65.0, 80.0])  # best at the 2nd evaluation
    snapshots = []

    def validate(m):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(curve)

    stats = train_until_plateau(
        model, items, TrainConfig(steps=100, batch_size=8), validate, PlateauStop(3), 4
    )
    s = stats["stopping"]
    assert s["converged"] and s["steps"] == 20 and stats["steps"] == 20.0  # 5 evaluations
    assert s["best_step"] == 8 and len(snapshots) == 5
    final = model.state_dict()
    assert all(torch.equal(final[k], snapshots[1][k]) for k in final)  # the best, not the last
    assert not all(torch.equal(final[k], snapshots[-1][k]) for k in final)


def test_training_respects_the_cap_and_says_it_did_not_converge():
    model, items = tiny_classifier(), tiny_items()
    rising = iter(float(x) for x in range(50, 100))

    stats = train_until_plateau(
        model, items, TrainConfig(steps=10, batch_size=8), lambda m: next(rising), PlateauStop(2), 4
    )
    s = stats["stopping"]
    assert not s["converged"] and s["steps"] == 10 == stats["steps"]
    assert [p["step"] for p in s["curve"]] == [4, 8, 10]  # the cap is always evaluated
    assert s["best_step"] == 10 and s["last_gain"] == 1.0
    line = describe_convergence(s, "accuracy")
    assert "\n" not in line and "NOT converged" in line and "cap of 10 steps" in line
    assert "accuracy on the stopping split" in line  # the split that stopped it, by its name
    assert "+1.00 points" in line


# ---- the validation split ----------------------------------------------------------------------


def texts_data(root: Path, rows: int = 400, pos_every: int = 4) -> DataSource:
    """`rows` distinct texts, 1 of `pos_every` of them 'pos', the rest 'neg'; a dev file of its
    own."""
    rng = random.Random(0)
    words = ["good", "plot", "scene", "actor", "music", "dull", "bright"]

    def write(name: str, start: int, count: int) -> None:
        lines = ["text,label"]
        for i in range(start, start + count):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 10)))
            lines.append(f"{text} {i},{'pos' if i % pos_every == 0 else 'neg'}")
        (root / name).write_text("\n".join(lines) + "\n")

    root.mkdir(parents=True, exist_ok=True)
    write("train.csv", 0, rows)
    write("dev.csv", rows, 80)
    return DataSource(root)


def pipeline(tmp_path: Path, checkpoint: str, **recipe):
    from autoprumux.pipeline import PruMuxPipeline

    fields = {"batch_size": 8, "max_seq_len": 16, "finetune_steps": 40, **recipe}
    return PruMuxPipeline(
        data=texts_data(tmp_path / "data"),
        model=checkpoint,
        recipe=Recipe(**fields),
        cache_dir=tmp_path / "cache",
    )


def test_the_validation_split_is_stratified_fixed_and_never_dev_or_trained_on(
    tmp_path, tiny_checkpoint
):
    pipe = pipeline(tmp_path, tiny_checkpoint)
    held = pipe.validation_items
    assert len(held) == 40 and len(pipe.stopping_items) == 40  # 10% of 400, and as many to stop
    assert len(pipe.train_items) == 320
    assert sum(it.label == pipe.task.label_names.index("pos") for it in held) == 10  # 1 in 4
    ids = [tuple(it.input_ids) for it in held]
    assert not set(ids) & {tuple(it.input_ids) for it in pipe.train_items}
    assert not set(ids) & {tuple(it.input_ids) for it in pipe.dev_items}
    # the same on every run, whatever the recipe's seed
    again = pipeline(tmp_path / "again", tiny_checkpoint, seed=5)
    assert [tuple(it.input_ids) for it in again.validation_items] == ids


def test_a_stopping_split_stands_apart_and_alone_stops_training(
    tmp_path, tiny_checkpoint, monkeypatch
):
    import autoprumux.pipeline._baseline as baseline_mod

    shared = pipeline(tmp_path / "shared", tiny_checkpoint, stopping_examples=0)
    assert shared.stopping_items is shared.validation_items  # 0: one split does both
    assert len(shared.train_items) == 360
    pipe = pipeline(
        tmp_path, tiny_checkpoint, eval_every=3, patience=2,
        recovery_steps=6, prune_stages=1, importance_examples=16,
    )  # fmt: skip
    ids = lambda items: {tuple(it.input_ids) for it in items}  # noqa: E731
    stop, val = ids(pipe.stopping_items), ids(pipe.validation_items)
    assert len(pipe.stopping_items) == len(pipe.validation_items) == 40  # as many as it holds
    assert len(pipe.train_items) == 320 and val == ids(shared.validation_items)
    assert not stop & val and not stop & ids(pipe.train_items) and not stop & ids(pipe.dev_items)
    again = pipeline(tmp_path / "again", tiny_checkpoint, seed=5)
    assert ids(again.stopping_items) == stop  # fixed, whatever the recipe's seed
    assert "stopping: 40 of the" in pipe.validation_note
    scored: list[set] = []
    real = baseline_mod.paired_predictions

    def spy(model, items, *a, **kw):
        scored.append(ids(items))
        return real(model, items, *a, **kw)

    monkeypatch.setattr(baseline_mod, "paired_predictions", spy)
    pipe.baseline()
    assert len(scored) >= 2 and all(s == stop for s in scored)  # every plateau evaluation
    scored.clear()
    pipe.candidate(Candidate(sparsity=0.5))  # recovery stops on it, the stage record chooses
    assert stop in scored and val in scored and scored[-1] == val
    assert pipe.entry_key() != shared.entry_key()
    with pytest.raises(ConfigError, match=r"stopping_examples \(5\) needs a validation split"):
        Recipe(stopping_examples=5, validation_examples=0)
    with pytest.raises(ConfigError, match=r"stopping_examples \(355\).*set 0 \(the validation"):
        pipeline(tmp_path / "big", tiny_checkpoint, stopping_examples=355)
    Recipe(validation_examples=0)  # the default asks for no stopping split then
    # the default gives way where train cannot spare a second split, and says so
    small = pipeline(tmp_path / "small", tiny_checkpoint, batch_size=340)  # 360 left
    assert small.stopping_items is small.validation_items
    assert "none held out for stopping_examples" in small.validation_note
    assert "the validation split stops training too" in small.validation_note


def test_the_split_size_rule():
    labels = [i % 3 for i in range(30_000)]
    assert validation_size(labels, None, 32)[0] == 2000  # at most 2,000
    assert validation_size(labels[:300], None, 32)[0] == 30  # 10%
    assert validation_size(labels[:90], None, 32)[0] == 24  # at least 8 per class
    assert validation_size(labels[:40], None, 32)[0] == 0  # too few to spare a batch
    assert validation_size(labels, 0, 32)[0] == 0
    with pytest.raises(ConfigError, match="validation_examples \\(290\\)"):
        validation_size(labels[:300], 290, 32)
    rows = [Example(f"text {i}", None, label) for i, label in enumerate(labels[:300])]
    split = validation_split(rows, None, 32)
    assert split == validation_split(rows, None, 32)
    assert sorted(split.trained + split.held) == list(range(300)) and len(split.held) == 30


def test_all_training_examples_by_default_and_the_quick_demo_stays_small():
    assert Recipe().max_train_examples is None
    assert Recipe.preset("quick").max_train_examples == 4000
    assert Recipe.preset("quick").finetune_steps < Recipe().finetune_steps
    assert "max_train_examples" not in RECIPE_PRESETS["accurate"]
    with pytest.raises(ConfigError, match="recipe field patience"):
        Recipe(patience=0)


# ---- the pipeline's baseline -------------------------------------------------------------------


def test_the_baseline_stops_on_a_plateau_and_records_its_curve(tmp_path, tiny_checkpoint):
    # a gain must exceed 100 points: the first evaluation is the best, then `patience` more
    pipe = pipeline(
        tmp_path, tiny_checkpoint, eval_every=3, patience=2, min_delta=100.0, plateau_anneal=0.0
    )
    pipe.baseline()
    meta = pipe.cache.meta(pipe.baseline_entry())
    s = meta["stopping"]
    assert s["converged"] and s["steps"] == 9 < pipe.recipe.finetune_steps
    assert meta["train"]["steps"] == 9.0 and s["best_step"] == 3
    assert s["plateau_step"] == 9 and s["anneal_steps"] == 0
    assert [p["step"] for p in s["curve"]] == [3, 6, 9]
    assert all({"step", "train_loss", "metric"} <= set(p) for p in s["curve"])
    assert pipe.baseline_training() == s


def test_the_baseline_anneals_its_lr_from_the_plateau_then_stops(tmp_path, tiny_checkpoint):
    # plateau at step 9 (as above); 0.5 x 9 steps rounds up to two 3-step intervals of decay
    pipe = pipeline(
        tmp_path, tiny_checkpoint, eval_every=3, patience=2, min_delta=100.0, plateau_anneal=0.5
    )
    pipe.baseline()
    s = pipe.cache.meta(pipe.baseline_entry())["stopping"]
    assert s["converged"] and s["plateau_step"] == 9 and s["anneal_steps"] == 6
    assert [p["step"] for p in s["curve"]] == [3, 6, 9, 12, 15] and s["steps"] == 15
    assert "then the LR decayed to 0 over 6 steps" in describe_convergence(s, "accuracy")


def test_the_anneal_decays_linearly_from_the_plateau_lr_to_zero():
    cfg = TrainConfig(steps=1000, warmup_ratio=0.1)
    schedule = AnnealOnPlateau(cfg)
    assert schedule(50) == pytest.approx(0.51) and schedule(400) == pytest.approx(2 / 3)
    schedule.begin(400, 200)
    assert schedule.end == 600
    assert [schedule(s) for s in (400, 500, 600, 700)] == pytest.approx([2 / 3, 1 / 3, 0, 0])


def test_the_best_weights_of_the_anneal_are_kept():
    # a flat metric plateaus at step 6, then the decay's last evaluation is the best: its
    # weights are the ones the model ends with, and the run stops at the decay's end
    model, items = tiny_classifier(), tiny_items()
    seen: list[dict[str, torch.Tensor]] = []
    metrics = iter([50.0, 50.0, 50.0, 50.0, 60.0])

    def validate(m: MuxSequenceClassifier) -> float:
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(metrics)

    stats = train_until_plateau(
        model, items, TrainConfig(steps=100, batch_size=8), validate, PlateauStop(2), 2,
        anneal=0.5,
    )  # fmt: skip
    s = stats["stopping"]
    assert (s["plateau_step"], s["anneal_steps"], s["steps"], s["best_step"]) == (6, 4, 10, 10)
    assert all(torch.equal(v, seen[-1][k]) for k, v in model.state_dict().items())


def test_cache_keys_hold_the_stopping_rule_and_the_split(tmp_path, tiny_checkpoint):
    base = pipeline(tmp_path, tiny_checkpoint).entry_key()
    for i, change in enumerate(
        [
            {"patience": 7},
            {"eval_every": 5},
            {"min_delta": 0.5},
            {"validation_examples": 50},
            {"plateau_anneal": 0.0},
        ]
    ):
        other = pipeline(tmp_path / str(i), tiny_checkpoint, **change).entry_key()
        assert other != base, change
    assert base["validation"][0] == 40


def test_the_cli_says_the_capped_baseline_is_not_converged(tmp_path, tiny_checkpoint, capsys):
    data = texts_data(tmp_path / "data", rows=200)
    code = main(
        [
            "evaluate", "--data", str(data.location), "--model", tiny_checkpoint,
            "--sparsity", "0", "--mux", "1", "--batch-size", "8", "--max-seq-len", "16",
            "--finetune-steps", "6", "--eval-every", "2", "--patience", "5",
            "--cache-dir", str(tmp_path / "cache"), "--tp-repeats", "1",
            "--tp-batch", "8", "--tp-seq-len", "16",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    lines = [line for line in out.splitlines() if "converged" in line]
    assert len(lines) == 1 and "NOT converged" in lines[0] and "cap of 6 steps" in lines[0]


# ---- MLflow and the search's output --------------------------------------------------------


def test_the_search_logs_the_baseline_curve_to_its_parent_run(tmp_path):
    from test_search_samplers import ReplayEvaluator, replay_settings

    from autoprumux.search import Searcher, SearchSpace

    stop = PlateauStop(patience=2)
    for step, metric in ((100, 80.0), (200, 85.0), (300, 84.0)):
        stop.update(step, metric, train_loss=0.5)

    class TrainedReplay(ReplayEvaluator):
        def baseline_training(self):
            return stop.summary(cap=300)

    space = SearchSpace.from_dict(
        {"name": "tiny", "task": "sst2", "model": None, "params": {"mux": {"choices": [1]}}}
    )
    searcher = Searcher(
        replay_settings(space, tmp_path, trials=1), evaluator=lambda v: TrainedReplay()
    )
    searcher.run()
    assert "NOT converged" in searcher.baseline_convergence
    history = searcher.client.get_metric_history(
        searcher.parent_run_id, "baseline_validation_metric"
    )
    assert [(m.step, m.value) for m in history] == [(100, 80.0), (200, 85.0), (300, 84.0)]
    params = searcher.client.get_run(searcher.parent_run_id).data.params
    assert params["baseline_converged"] == "False" and params["baseline_steps"] == "300"
