"""A choice reads the validation loss raised by its paired standard error: the standard error
itself (`paired_loss_se`), and every place that chooses (an evaluation, a trial's constraint,
`recommend`, the frontier benchmark) or reports (the card, the trials table)."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest
from test_validation_choice import S5, S7, _manifest, add_study

from autoprumux._selection import (
    SELECTION_STANDARD_ERRORS,
    describe_losses,
    recorded_losses,
    selection_loss,
)
from autoprumux.cli import main
from autoprumux.errors import ConfigError
from autoprumux.evaluation import (
    Evaluation,
    Measured,
    PairedPredictions,
    ThroughputConfig,
    paired_loss_se,
)
from autoprumux.meta import build_recommender
from autoprumux.search._record import record_evaluation, trial_loss
from autoprumux.serving._pyfunc import RecommenderModel

GOLD = [1, 1, 0, 0]


def preds(*runs: list[int]) -> PairedPredictions:
    return PairedPredictions([list(r) for r in runs], 2)


def test_the_accuracy_standard_error_is_the_paired_difference_in_correctness():
    # the candidate is wrong on 2 of 4: per-example differences 0, 1, 0, 1 (mean 0.5,
    # sample sd sqrt(1/3)), so the loss's standard error is 100 sqrt(1/3) / 2
    se = paired_loss_se("accuracy", preds(GOLD), preds([1, 0, 0, 1]), GOLD)
    assert se == pytest.approx(100 * math.sqrt(1 / 3) / 2)
    # a multiplexed candidate's correctness is averaged over its pairings first:
    # differences 0, 0.5, 0, 0.5
    se_mux = paired_loss_se("accuracy", preds(GOLD), preds([1, 0, 0, 1], GOLD), GOLD)
    assert se_mux == pytest.approx(100 * math.sqrt(1 / 12) / 2)
    # the same predictions differ nowhere: no noise in the loss, whatever the metric
    for metric in ("accuracy", "f1", "mcc"):
        assert paired_loss_se(metric, preds(GOLD), preds(GOLD), GOLD) == 0.0


def test_the_f1_and_mcc_standard_errors_come_from_a_seeded_paired_bootstrap():
    gold = [i % 2 for i in range(200)]
    base = [g if i % 10 else 1 - g for i, g in enumerate(gold)]  # 90% right

    def flipped(every: int) -> list[int]:
        return [1 - b if i % every == 3 else b for i, b in enumerate(base)]

    for metric in ("f1", "mcc"):
        few = paired_loss_se(metric, preds(base), preds(flipped(10)), gold)
        many = paired_loss_se(metric, preds(base), preds(flipped(4)), gold)
        assert few == paired_loss_se(metric, preds(base), preds(flipped(10)), gold)  # seeded
        # more disagreement with the baseline, a noisier loss
        assert 0 < few < many
    # on this balanced set f1's bootstrap SE is of the accuracy's exact one's size
    acc = paired_loss_se("accuracy", preds(base), preds(flipped(4)), gold)
    assert 0.5 * acc < paired_loss_se("f1", preds(base), preds(flipped(4)), gold) < 2 * acc


@pytest.mark.parametrize("classes", [2, 4])
def test_the_resampled_f1_and_mcc_are_scikit_learns_on_each_resample(classes):
    import numpy as np

    from autoprumux.evaluation import prediction_metrics
    from autoprumux.evaluation._noise import resampled_metric

    rng = np.random.default_rng(3)
    gold = rng.integers(0, classes, 60)
    pred = np.where(rng.random(60) < 0.7, gold, rng.integers(0, classes, 60))
    idx = rng.integers(0, 60, (25, 60))
    idx[0] = np.flatnonzero(gold == 0)[0]  # one class only: f1 and MCC undefined, scored 0
    for metric in ("f1", "mcc"):
        got = resampled_metric(metric, gold, pred, idx, classes, pos_label=1)
        want = [
            prediction_metrics(metric, pred[i].tolist(), gold[i].tolist(), classes, 1)["metric"]
            for i in idx
        ]
        assert got == pytest.approx(want)


def test_the_loss_that_chooses_adds_its_standard_errors():
    assert selection_loss(3.0, 0.5, 0.7) == pytest.approx(0.5 + SELECTION_STANDARD_ERRORS * 0.7)
    assert selection_loss(3.0, 0.5, None) == 0.5  # not recorded: the bare validation loss
    assert selection_loss(3.0, None, 0.7) == 3.0  # no split: the dev loss
    got = recorded_losses(
        {
            "accuracy_loss": 3.0,
            "validation_loss": 0.5,
            "validation_loss_se": 0.7,
            "chosen_on": "validation",
        }
    )
    assert got is not None and got.validation_se == 0.7
    assert got.selection == pytest.approx(selection_loss(3.0, 0.5, 0.7))
    assert describe_losses(3.0, 0.5, 0.7) == (
        f"loss 0.50 pts on validation (+-0.70, chosen on {0.5 + SELECTION_STANDARD_ERRORS * 0.7:.2f}"
        "), 3.00 on dev (expected)"
    )


def _evaluation(dev_loss: float, val_loss: float, se: float | None) -> Evaluation:
    def measured(name: str, loss: float, val: float) -> Measured:
        return Measured(
            name,
            0.5,
            1,
            90 - loss,
            90 - loss,
            100.0,
            1.0,
            10,
            1.0,
            validation_metric=89 - val,
            validation_accuracy=89 - val,
        )

    return Evaluation(
        task="sst2",
        metric_name="accuracy",
        device="cpu",
        baseline=measured("baseline", 0.0, 0.0),
        candidate=measured("s=0.5", dev_loss, val_loss),
        throughput_config=ThroughputConfig(),
        validation_loss_se=se,
    )


def test_a_study_whose_trials_chose_on_the_bare_validation_loss_is_not_resumed():
    from types import SimpleNamespace

    from autoprumux.errors import ConfigError
    from autoprumux.search._record import check_recorded

    bare = {"accuracy_loss": 1.0, "validation_loss": 0.5, "chosen_on": "validation", "speedup": 2}
    with pytest.raises(ConfigError, match="standard error of their validation loss"):
        check_recorded([SimpleNamespace(number=0, user_attrs=bare)], "old-study")
    check_recorded(
        [SimpleNamespace(number=0, user_attrs={**bare, "validation_loss_se": 0.4})], "new"
    )
    # stopped early (no speedup) or chosen on dev: nothing to compare
    stopped = {k: v for k, v in bare.items() if k != "speedup"}
    check_recorded([SimpleNamespace(number=0, user_attrs=stopped)], "stopped")
    dev = {**bare, "chosen_on": "dev", "validation_loss": None}
    check_recorded([SimpleNamespace(number=0, user_attrs=dev)], "dev")


def test_a_dev_loss_is_in_noise_within_two_of_its_paired_standard_errors():
    from dataclasses import replace

    ev = _evaluation(1.5, 0.6, 0.8)
    assert ev.accuracy_loss_se is None and ev.loss_within_noise is None  # nothing known
    assert replace(ev, accuracy_loss_se=0.8).loss_within_noise  # 1.5 <= 1.6
    # int8 of the baseline predicts as it does: 1.5 points is beyond its paired noise
    assert not replace(ev, accuracy_loss_se=0.4).loss_within_noise
    assert replace(ev, accuracy_loss_se=0.4).loss_margin == pytest.approx(0.8)
    trial = optuna.create_study().ask()
    record_evaluation(trial, replace(ev, accuracy_loss_se=0.4), budget=1.0)
    assert trial.user_attrs["accuracy_loss_se"] == 0.4


def test_a_trial_records_the_standard_error_and_its_constraint_reads_the_margin():
    ev = _evaluation(2.0, 0.6, 0.8)
    assert ev.selection_loss == pytest.approx(0.6 + SELECTION_STANDARD_ERRORS * 0.8)
    # within 2 standard errors of no loss: in noise
    assert ev.validation_loss_within_noise
    assert not _evaluation(2.0, 0.6, 0.2).validation_loss_within_noise
    trial = optuna.create_study().ask()
    metrics = record_evaluation(trial, ev, budget=1.0)
    assert metrics["validation_loss_se"] == 0.8 and trial.user_attrs["validation_loss_se"] == 0.8
    assert trial_loss(trial) == pytest.approx(ev.selection_loss)
    assert trial.constraints == {"accuracy_loss": pytest.approx(ev.selection_loss - 1.0)}
    assert ev.to_dict()["selection_loss"] == pytest.approx(ev.selection_loss)


def test_recommend_answers_within_the_budget_plus_the_margin_only(tmp_path, capsys):
    """s=0.5 is within 1 point on validation (0.5) but not one standard error above it (1.3);
    s=0.7 predicts as the baseline does (a small error): the answer at 1 point is s=0.7's
    0.8 +- 0.1, and at 1.5 points s=0.5's, which is faster."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    add_study(url, "se", [(S5, 1.0, 0.5, 5.0, 0.8), (S7, 1.0, 0.8, 3.0, 0.1)])
    rec = build_recommender(url)
    at1, at15 = rec.recommend(1.0), rec.recommend(0.5 + SELECTION_STANDARD_ERRORS * 0.8 + 0.01)
    assert (at1.sparsity, at15.sparsity) == (0.7, 0.5)
    assert at15.measured is not None and at15.measured.validation_loss_se == 0.8
    assert "(+-0.80, chosen on" in at15.describe()
    served = RecommenderModel(rec).predict(None, pd.DataFrame({"budget": [1.0, 1.31]}))
    assert list(served["sparsity"]) == [0.7, 0.5]
    assert list(served["measured_validation_loss_se"]) == [0.1, 0.8]
    assert main(["recommend", "--budget", "1", "--storage", url]) == 0
    assert "(+-0.10, chosen on 0.90)" in capsys.readouterr().out


def test_margin_se_sets_how_sure_the_answer_must_be(tmp_path, capsys):
    """At 1.5 points s=0.5 (0.5 +- 0.8) is within with one standard error (1.3), not with two
    (2.1): then the answer is s=0.7 (0.8 +- 0.1). The served recommender keeps its margin."""
    from autoprumux.meta import Recommender

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    add_study(url, "se", [(S5, 1.0, 0.5, 5.0, 0.8), (S7, 1.0, 0.8, 3.0, 0.1)])
    answers = {}
    for margin in ("1", "2", "0"):
        assert main(["recommend", "--budget", "1.5", "--storage", url, "--margin-se", margin]) == 0
        answers[margin] = capsys.readouterr().out
    assert "sparsity 0.5" in answers["1"] and "sparsity 0.7" in answers["2"], answers
    assert "raised by 2 standard errors" in answers["2"] and "raised by" not in answers["1"]
    # with no margin, 0.5 is within 0.6 points on its loss alone
    assert build_recommender(url, margin_se=0.0).recommend(0.6).sparsity == 0.5
    assert build_recommender(url).recommend(0.6).sparsity == 0.0
    strict = build_recommender(url, margin_se=2.0)
    again = Recommender.from_dict(strict.to_dict())
    assert again.margin_se == 2.0 and again.recommend(1.5).sparsity == 0.7
    served = RecommenderModel(again).predict(None, pd.DataFrame({"budget": [1.5]}))
    assert list(served["sparsity"]) == [0.7]
    # a bad margin is refused before the store is read (nothing created)
    empty = tmp_path / "empty.db"
    with pytest.raises(ConfigError, match=r"--margin-se \(-1\) must be"):
        build_recommender(f"sqlite:///{empty}", margin_se=-1)
    assert not empty.exists()


def test_the_card_shows_the_standard_error_beside_the_validation_loss(tiny):
    from autoprumux.deploy import ExportManifest
    from autoprumux.export._card import render_card
    from autoprumux.models import MuxSequenceClassifier

    m = _manifest(
        validation_metric=86.0,
        baseline_validation_metric=86.5,
        validation_examples=40,
        validation_loss_se=0.35,
    )
    again = ExportManifest.from_dict(m.to_dict())
    assert again.measurement.validation_loss_se == 0.35
    card = render_card(again, MuxSequenceClassifier(tiny[0], num_labels=2))
    assert "0.50 points +-0.35 (paired SE)" in card


def test_the_card_names_both_splits_a_snapshot_was_chosen_on(tiny):
    from autoprumux.deploy import ExportManifest
    from autoprumux.export._card import render_card
    from autoprumux.models import MuxSequenceClassifier

    m = _manifest(
        validation_metric=86.0,
        baseline_validation_metric=86.5,
        validation_examples=80,
        validation_split="validation+stopping",
        validation_loss_se=0.35,
    )
    again = ExportManifest.from_dict(m.to_dict())
    assert again.measurement.validation_split == "validation+stopping"
    card = render_card(again, MuxSequenceClassifier(tiny[0], num_labels=2))
    assert "On the validation and stopping splits (80 training examples held out" in card
