"""Whatever is chosen by measurement is chosen on the validation split; the dev set only reports
(`autoprumux._selection`): `recommend`, the served recommender and the search's best trial pick
on the validation loss and print the dev loss beside it; an Evaluation scores the validation
split (held out of train, never dev) as it scores dev; without a split the dev loss chooses and
every output says so in one line; a study recorded before trials stored their validation loss is
not resumed."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
from test_converged_baseline import texts_data as converged_texts
from test_late_mux_plumbing import _manifest as late_mux_manifest
from test_recommend_scope import DESCRIPTORS

from autoprumux._selection import DEV_CHOSEN, SELECTION_STANDARD_ERRORS, describe_losses
from autoprumux.cli import main
from autoprumux.cli._evaluate import format_table
from autoprumux.config import Candidate, Recipe
from autoprumux.data import DataSource
from autoprumux.errors import ConfigError
from autoprumux.evaluation import (
    ThroughputConfig,
    paired_dev_metrics,
    paired_loss_se,
    paired_predictions,
)
from autoprumux.meta import build_recommender
from autoprumux.search._record import check_recorded, trial_loss
from autoprumux.search._report import trials_table
from autoprumux.serving._pyfunc import RecommenderModel

S5, S7 = Candidate(sparsity=0.5), Candidate(sparsity=0.7)


def add_study(url: str, name: str, rows, *, validation: bool | None = True) -> optuna.Study:
    """A finished study as a search records it: rows of (config, dev loss, validation loss,
    speedup[, validation loss's standard error]); `validation=False`: a recipe without a
    validation split (chosen on dev); None: as an older autoprumux recorded it (no
    `chosen_on`)."""
    st = optuna.create_study(study_name=name, storage=url, direction="maximize")
    attrs = {
        "space": {"name": "prumux"},
        "task": "sst2",
        "model": "minilm",
        "device": "cpu",
        "descriptors": DESCRIPTORS,
    }
    for k, v in attrs.items():
        st.set_user_attr(k, v)
    for cfg, dev, val, speedup, *se in rows:
        ua = {"config": cfg.to_dict(), "accuracy_loss": dev, "speedup": speedup}
        if se:
            ua["validation_loss_se"] = se[0]
        ua["baseline_metric"] = 85.0
        if validation is not None:
            ua["chosen_on"] = "validation" if validation else "dev"
        if validation:
            ua["validation_loss"] = val
        st.add_trial(optuna.trial.create_trial(value=speedup, user_attrs=ua))
    return st


def test_recommend_chooses_on_validation_and_reports_dev(tmp_path, capsys):
    """Validation and dev disagree: s=0.7 is within 1 point on dev (0.2) but not on validation
    (2.5); s=0.5 the other way round. The answer is s=0.5, and its dev loss (3.0) is what is
    printed as the figure to expect."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    st = add_study(url, "val", [(S5, 3.0, 0.5, 3.0), (S7, 0.2, 2.5, 5.0)])
    rec = build_recommender(url).recommend(1.0)
    assert (rec.sparsity, rec.source, rec.chosen_on) == (0.5, "measured", "validation")
    assert rec.accuracy_loss == 3.0 and rec.validation_loss == 0.5 and rec.speedup == 3.0
    assert rec.measured.accuracy_loss == 3.0 and rec.measured.validation_loss == 0.5
    text = rec.describe()
    assert "loss 0.50 pts on validation (chosen on), 3.00 on dev (expected)" in text
    assert "loss on validation" in text and "chosen on dev" not in text
    # the command line prints the same; the JSON carries both losses
    assert main(["recommend", "--budget", "1", "--storage", url]) == 0
    assert "0.50 pts on validation (chosen on), 3.00 on dev" in capsys.readouterr().out
    # the served recommender: both columns, chosen on validation
    out = RecommenderModel(build_recommender(url)).predict(
        None, pd.DataFrame({"budget": [1.0, 3.0]})
    )
    assert list(out["sparsity"]) == [0.5, 0.7]
    assert list(out["chosen_on"]) == ["validation", "validation"]
    assert list(out["validation_loss"]) == [0.5, 2.5]
    assert list(out["accuracy_loss"]) == [3.0, 0.2]
    assert list(out["measured_validation_loss"]) == [0.5, 2.5]
    # the study's best within the budget and its table read the same loss
    trials = st.get_trials()
    assert [trial_loss(t) for t in trials] == [0.5, 2.5]
    table = trials_table(trials, trials[0], 1.0)
    assert "val loss" in table and "dev loss" in table and "chosen on dev" not in table
    assert "best within 1 points: #0 " in table and describe_losses(3.0, 0.5) in table


def test_without_a_validation_split_dev_chooses_and_every_output_says_so(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    st = add_study(url, "dev", [(S5, 3.0, None, 3.0), (S7, 0.2, None, 5.0)], validation=False)
    rec = build_recommender(url).recommend(1.0)
    assert (rec.sparsity, rec.chosen_on, rec.validation_loss) == (0.7, "dev", None)
    assert f"({DEV_CHOSEN})" in rec.describe()
    assert main(["recommend", "--budget", "1", "--storage", url]) == 0
    assert DEV_CHOSEN in capsys.readouterr().out
    out = RecommenderModel(build_recommender(url)).predict(None, pd.DataFrame({"budget": [1.0]}))
    assert out["chosen_on"][0] == "dev" and math.isnan(out["validation_loss"][0])
    trials = st.get_trials()
    assert f"({DEV_CHOSEN})" in trials_table(trials, trials[1], 1.0)


def test_a_study_recorded_before_validation_losses_is_not_resumed_and_recommend_says_dev(
    tmp_path, capsys
):
    old = [SimpleNamespace(number=0, user_attrs={"accuracy_loss": 1.0, "speedup": 2.0})]
    with pytest.raises(ConfigError, match="another --study-name"):
        check_recorded(old, "old-study")
    check_recorded([SimpleNamespace(number=0, user_attrs={"config": {}})], "fresh")  # no loss yet
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    add_study(url, "old", [(S5, 0.4, None, 2.0)], validation=None)
    rec = build_recommender(url).recommend(1.0)
    assert rec.chosen_on.startswith("dev") and "chosen on dev: no validation loss" in rec.describe()


# ---- the Evaluation scores the validation split -------------------------------------------


def texts_data(root: Path, rows: int = 400) -> DataSource:
    return converged_texts(root, rows, pos_every=3)


TINY = {
    "batch_size": 8,
    "max_seq_len": 16,
    "finetune_steps": 6,
    "eval_every": 3,
    "recovery_steps": 2,
    "prune_stages": 1,
    "importance_examples": 16,
}
TP = ThroughputConfig(batch_size=8, seq_len=16, repeats=1, warmup=1)


def pipeline(tmp_path: Path, checkpoint: str, **recipe):
    from autoprumux.pipeline import PruMuxPipeline

    return PruMuxPipeline(
        data=texts_data(tmp_path / "data"),
        model=checkpoint,
        recipe=Recipe(**{**TINY, **recipe}),
        cache_dir=tmp_path / "cache",
    )


def test_an_evaluation_scores_the_validation_split_never_dev_or_train(
    tmp_path, tiny_checkpoint, monkeypatch
):
    import autoprumux.pipeline._baseline as baseline_mod

    pipe = pipeline(tmp_path, tiny_checkpoint)
    held = {tuple(it.input_ids) for it in pipe.validation_items}
    assert len(held) == 40
    assert not held & {tuple(it.input_ids) for it in pipe.train_items}
    assert not held & {tuple(it.input_ids) for it in pipe.dev_items}
    pipe.baseline()  # trained (and stopped on the split) before the spy
    scored: list[tuple[frozenset, int]] = []
    real = baseline_mod.paired_predictions

    def spy(model, items, *a, **kw):
        scored.append((frozenset(tuple(it.input_ids) for it in items), kw["pairings"]))
        return real(model, items, *a, **kw)

    monkeypatch.setattr(baseline_mod, "paired_predictions", spy)
    ev = pipe.evaluate(Candidate(sparsity=0.5), throughput=TP)
    # the baseline's validation predictions (once, not multiplexed) and the candidate's, paired
    # as dev, over the split only
    from autoprumux.pipeline import DEV_PAIRINGS

    dev = frozenset(tuple(it.input_ids) for it in pipe.dev_items)
    assert [x for x in scored if x[0] == frozenset(held)][-1] == (frozenset(held), DEV_PAIRINGS)
    assert [x for x in scored if x[0] != frozenset(held)] == [(dev, DEV_PAIRINGS), (dev, 1)]
    # recovery stops on the split; the candidate is scored once on dev, the baseline once
    cand = pipe.deployable(Candidate(sparsity=0.5))
    want = paired_dev_metrics(
        cand, pipe.validation_items, pipe.task.metric, pairings=DEV_PAIRINGS, device="cpu"
    )
    assert ev.candidate.validation_metric == pytest.approx(want["metric"])
    assert ev.validation_loss == pytest.approx(
        ev.baseline.validation_metric - ev.candidate.validation_metric
    )
    # the paired standard error of the loss, from both models' predictions on the split
    gold = [it.label for it in pipe.validation_items]
    se = paired_loss_se(
        pipe.task.metric,
        paired_predictions(pipe.baseline(), pipe.validation_items, pairings=1),
        paired_predictions(cand, pipe.validation_items, pairings=DEV_PAIRINGS),
        gold,
    )
    assert ev.validation_loss_se == pytest.approx(se)
    dev_se = paired_loss_se(
        pipe.task.metric,
        paired_predictions(pipe.baseline(), pipe.dev_items, pairings=1),
        paired_predictions(cand, pipe.dev_items, pairings=DEV_PAIRINGS),
        [it.label for it in pipe.dev_items],
    )
    assert (
        ev.accuracy_loss_se == pytest.approx(dev_se) and ev.to_dict()["accuracy_loss_se"] == dev_se
    )
    assert ev.chosen_on == "validation"
    assert ev.selection_loss == pytest.approx(
        ev.validation_loss + SELECTION_STANDARD_ERRORS * ev.validation_loss_se
    )
    assert ev.validation_noise.examples == 40 and ev.validation_noise.split == "validation"
    d = ev.to_dict()
    assert d["validation_loss"] == ev.validation_loss and d["chosen_on"] == "validation"
    assert d["validation_loss_se"] == ev.validation_loss_se
    assert d["selection_loss"] == ev.selection_loss
    assert d["accuracy_loss"] == pytest.approx(ev.baseline.metric - ev.candidate.metric)
    table = format_table(ev)
    assert "val loss" in table and "dev loss" in table and DEV_CHOSEN not in table
    assert "40 validation examples" in table


def test_without_a_split_an_evaluation_chooses_on_dev_and_says_so(tmp_path, tiny_checkpoint):
    pipe = pipeline(tmp_path, tiny_checkpoint, validation_examples=0)
    ev = pipe.evaluate(Candidate(sparsity=0.5), throughput=TP)
    assert ev.validation_loss is None and ev.validation_noise is None
    assert ev.chosen_on == "dev" and ev.selection_loss == ev.accuracy_loss
    assert ev.to_dict()["chosen_on"] == "dev"
    assert f"({DEV_CHOSEN})" in format_table(ev)


def test_a_search_stops_a_trial_on_its_validation_loss_never_its_dev_loss(
    tmp_path, tiny_checkpoint, monkeypatch
):
    import json

    import autoprumux.pipeline._baseline as baseline_mod
    from autoprumux._cache import write_manifest

    pipe = pipeline(tmp_path, tiny_checkpoint, prune_stages=2)
    pipe.baseline()
    base_val = baseline_mod.baseline_split_metrics(pipe, "validation")["metric"]
    base_dev = pipe.baseline_metrics()["metric"]
    # each stage's validation metric, told apart from any dev metric
    values = iter([41.0, 37.0])
    monkeypatch.setattr(baseline_mod, "validation_metric", lambda p, m: next(values))
    built: list[tuple] = []
    model = pipe.candidate(Candidate(sparsity=0.5), on_stage=lambda *a: built.append(a))
    (entry,) = (tmp_path / "cache" / "candidate").iterdir()
    meta = json.loads((entry / "meta.json").read_text())
    stages = meta["stages"]
    assert [st["validation_metric"] for st in stages] == [41.0, 37.0]
    assert stages[-1]["dev_metric"] == pytest.approx(pipe.dev_metrics(model)["metric"])
    assert built == [
        (i, pytest.approx(base_dev - st["dev_metric"]), base_val - v)
        for i, st, v in zip((1, 2), stages, (41.0, 37.0), strict=True)
    ]
    # a cache hit reports the recorded losses without scoring again (the spy is spent)
    again: list[tuple] = []
    pipe.candidate(Candidate(sparsity=0.5), on_stage=lambda *a: again.append(a))
    assert again == built
    # an entry recorded before stages held their validation metric reports its last stage only,
    # rescored on the split (its recorded dev metric alone never chooses)
    for st in stages:
        del st["validation_metric"]
    (entry / "meta.json").write_text(json.dumps(meta))
    write_manifest(entry)
    monkeypatch.setattr(baseline_mod, "validation_metric", lambda p, m: 33.0)
    old: list[tuple] = []
    pipe.candidate(Candidate(sparsity=0.5), on_stage=lambda *a: old.append(a))
    assert old == [(2, pytest.approx(built[-1][1]), base_val - 33.0)]
    # without a split the dev loss alone is reported
    dev_pipe = pipeline(tmp_path / "nosplit", tiny_checkpoint, validation_examples=0)
    seen: list[tuple] = []
    m = dev_pipe.candidate(Candidate(sparsity=0.5), on_stage=lambda *a: seen.append(a))
    want = dev_pipe.baseline_metrics()["metric"] - dev_pipe.dev_metrics(m)["metric"]
    assert seen and seen[-1][1:] == (pytest.approx(want), None)


def test_a_trial_stopped_early_records_both_losses_and_its_constraint_reads_validation():
    from autoprumux.search._record import record_stopped

    trial = optuna.create_study().ask()
    record_stopped(trial, dev=9.0, val=6.5, budget=1.0)
    assert trial.user_attrs["accuracy_loss"] == 9.0 and trial.user_attrs["validation_loss"] == 6.5
    assert trial.user_attrs["chosen_on"] == "validation" and trial_loss(trial) == 6.5
    assert trial.constraints == {"accuracy_loss": 5.5}
    alone = optuna.create_study().ask()
    record_stopped(alone, dev=9.0, val=None, budget=1.0)
    assert alone.user_attrs["chosen_on"] == "dev" and "validation_loss" not in alone.user_attrs
    assert alone.constraints == {"accuracy_loss": 8.0} and trial_loss(alone) == 9.0


# ---- the export's manifest and card ---------------------------------------------------------


def _manifest(**validation):
    """The late-mux tests' manifest of S5, its measurement given `validation` fields and a
    source that recorded both losses."""
    from dataclasses import replace as with_fields

    from autoprumux.deploy import ExportSource

    m = late_mux_manifest(S5)
    return with_fields(
        m,
        measurement=with_fields(m.measurement, **validation),
        source=ExportSource("budget", "s", 3, 2.0, {"accuracy_loss": 1.0, "validation_loss": 0.4}),
    )


def test_the_manifest_and_card_carry_both_losses_and_an_old_manifest_still_loads(tiny):
    from autoprumux.deploy import ExportManifest
    from autoprumux.export._card import render_card
    from autoprumux.models import MuxSequenceClassifier

    model = MuxSequenceClassifier(tiny[0], num_labels=2)

    new = _manifest(validation_metric=86.0, baseline_validation_metric=86.5, validation_examples=40)
    d = new.to_dict()
    assert d["measurement"]["validation_loss"] == pytest.approx(0.5)
    assert d["measurement"]["accuracy_loss"] == pytest.approx(1.0)
    again = ExportManifest.from_dict(d)
    assert again.measurement.validation_loss == pytest.approx(0.5)
    card = render_card(new, model)
    assert "Accuracy loss: 1.00 points of accuracy on dev (what to expect)" in card
    assert "On the validation split (40 training examples held out" in card
    assert "loss 0.40 points on validation (chosen on), accuracy loss 1.00 points on dev" in card
    # a manifest written before the validation fields: loads, and the card says dev chose
    old = _manifest().to_dict()
    for k in ("validation_metric", "baseline_validation_metric", "validation_examples"):
        old["measurement"].pop(k)
    old["measurement"].pop("validation_loss")
    loaded = ExportManifest.from_dict(old)
    assert loaded.measurement.validation_loss is None
    assert f"No validation loss ({DEV_CHOSEN})." in render_card(loaded, model)
