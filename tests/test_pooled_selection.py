"""An answer among measured configurations reads their validation losses pooled along sparsity:
a sparser configuration whose validation loss dips below a denser one's is read as the split's
luck, not as a gain (`autoprumux._selection.pooled_selection_losses`), in the study's own best
trial, in `recommend` and in the served recommender."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest
from test_validation_choice import S5, S7, add_study

from autoprumux._selection import (
    DEV,
    VALIDATION,
    PathPoint,
    RecordedLosses,
    pooled_selection_losses,
    pooled_validation_losses,
)
from autoprumux.config import Candidate
from autoprumux.meta import build_recommender
from autoprumux.search._record import pooled_trial_losses, trial_loss
from autoprumux.search._report import trials_table
from autoprumux.serving._pyfunc import RecommenderModel

S3 = Candidate(sparsity=0.3)
# s=0.7 dips below s=0.5 on validation: per configuration it is within 2 points (1.0 + 0.5),
# pooled with s=0.5 both read 1.7 + 0.5 = 2.2, so s=0.3 answers
LUCKY = [(S3, 0.4, 0.2, 2.0, 0.3), (S5, 2.2, 2.4, 6.0, 0.5), (S7, 3.0, 1.0, 9.0, 0.5)]


def point(kind, s, val, se, dev=0.0):
    return PathPoint(kind, s, RecordedLosses(dev, val, DEV if val is None else VALIDATION, se))


def test_a_dip_is_averaged_with_its_denser_neighbour_by_their_weights():
    got = pooled_validation_losses(
        [point("a", 0.3, 0.2, 0.3), point("a", 0.5, 2.4, 0.5), point("a", 0.7, 1.0, 1.0)]
    )
    # weights 1/SE^2: 4 and 1, so (4 * 2.4 + 1.0) / 5
    assert got == pytest.approx([0.2, 2.12, 2.12])
    # already non-decreasing: unchanged; a kind of its own is never pooled with another
    flat = [point("a", 0.3, 0.5, 0.3), point("a", 0.5, 0.9, 0.5), point("b", 0.7, 0.1, 0.5)]
    assert pooled_validation_losses(flat) == pytest.approx([0.5, 0.9, 0.1])
    # a standard error of 0 still weighs finitely: the fit is not pinned to that one draw
    zero = pooled_validation_losses([point("a", 0.0, 1.0, 0.0), point("a", 0.5, 0.0, 0.1)])
    assert zero == pytest.approx([0.5, 0.5])


def test_the_dev_loss_chooses_unpooled_where_there_is_no_validation_loss():
    pts = [point("a", 0.3, None, None, dev=2.0), point("a", 0.5, None, None, dev=1.0)]
    assert pooled_validation_losses(pts) == [None, None]
    assert pooled_selection_losses(pts) == [2.0, 1.0]
    # the margin is a parameter: 2 standard errors on the pooled loss
    one = pooled_selection_losses([point("a", 0.3, 1.0, 0.4)])
    two = pooled_selection_losses([point("a", 0.3, 1.0, 0.4)], standard_errors=2.0)
    assert (one, two) == (pytest.approx([1.4]), pytest.approx([1.8]))


def test_recommend_and_the_served_model_refuse_the_lucky_dip(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    st = add_study(url, "lucky", LUCKY)
    # each trial alone: s=0.7 is within 2 points
    assert [trial_loss(t) for t in st.get_trials()] == pytest.approx([0.5, 2.9, 1.5])
    assert pooled_trial_losses(st.get_trials()) == pytest.approx([0.5, 2.2, 2.2])
    rec = build_recommender(url).recommend(2.0)
    assert (rec.sparsity, rec.speedup) == (0.3, 2.0)
    assert rec.validation_loss == 0.2  # the measured loss is reported as measured
    out = RecommenderModel(build_recommender(url)).predict(None, pd.DataFrame({"budget": [2.0]}))
    assert list(out["sparsity"]) == [0.3]
    # beyond the pooled loss, the fastest answers; the table says what it was chosen on
    assert build_recommender(url).recommend(2.5).sparsity == 0.7
    trials = st.get_trials()
    table = trials_table(trials, trials[2], 2.5)
    assert "best within 2.5 points: #2 " in table
    assert "(pooled along sparsity: chosen on 2.20)" in table
    assert "pooled" not in trials_table(trials, trials[0], 2.0)


def test_trials_of_another_configuration_kind_or_machine_are_not_pooled(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    int8 = Candidate(sparsity=0.7, precision="int8")
    st = add_study(url, "kinds", [(S5, 2.2, 2.4, 6.0, 0.5), (int8, 3.0, 1.0, 9.0, 0.5)])
    assert pooled_trial_losses(st.get_trials()) == pytest.approx([2.9, 1.5])
    two = optuna.create_study(storage=url, study_name="machines", direction="maximize")
    for cfg, val, machine in ((S5, 2.4, {"cpu": "a"}), (S7, 1.0, {"cpu": "b"})):
        attrs = {
            "config": cfg.to_dict(),
            "accuracy_loss": 2.0,
            "validation_loss": val,
            "validation_loss_se": 0.5,
            "chosen_on": "validation",
            "machine": machine,
        }
        two.add_trial(optuna.trial.create_trial(value=3.0, user_attrs=attrs))
    assert pooled_trial_losses(two.get_trials()) == pytest.approx([2.9, 1.5])
