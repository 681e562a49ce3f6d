"""What a search tells the user about its studies: `--prior` says what is true of the storage
(empty, the study being searched, an unknown study, a study without finished trials) and refuses
before any store is created; a failed trial keeps its reason in the study (the Optuna user attr
`error`) and in its MLflow run (the tag `autoprumux.error`). Every search here replays its
evaluations: nothing trains."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from test_search_samplers import SMALL, ReplayEvaluator, replay_searcher, replay_settings

from autoprumux import tracking
from autoprumux.config import Candidate
from autoprumux.errors import ConfigError
from autoprumux.search import SearchSpace

SPACE = {**SMALL, "params": {"sparsity": {"choices": [0.0, 0.5]}, "mux": {"choices": [1, 2]}}}


def _space() -> SearchSpace:
    return SearchSpace.from_dict(SPACE)


class FailingEvaluator(ReplayEvaluator):
    """Every evaluation fails, as a trial out of memory would."""

    def evaluate(self, config: Candidate, *, throughput=None, on_stage=None):
        raise RuntimeError(f"out of memory while training {config.describe()}")


def _search(tmp: Path, name: str, evaluator: ReplayEvaluator | None = None, **kw) -> None:
    settings = replay_settings(_space(), tmp, study_name=name, sampler="guided", trials=3, **kw)
    replay_searcher(settings, evaluator).run()


def _prior_error(tmp: Path, name: str, *prior: str) -> str:
    settings = replay_settings(_space(), tmp, study_name=name, sampler="guided", prior=prior)
    with pytest.raises(ConfigError) as e:
        replay_searcher(settings)
    return str(e.value)


def test_prior_on_an_empty_store_says_so_and_creates_no_store(tmp_path):
    msg = _prior_error(tmp_path, "new", "all")
    assert "--prior all: no other study in" in msg and "(it holds no study yet)" in msg, msg
    assert "no finished trials" not in msg
    msg = _prior_error(tmp_path, "new", "earlier")
    assert "no study earlier in" in msg and "(it holds no study yet)" in msg, msg
    assert list(tmp_path.iterdir()) == []  # no Optuna storage, no MLflow store


def test_prior_says_what_is_true_of_a_store_with_finished_trials(tmp_path):
    _search(tmp_path, "broken", FailingEvaluator())
    msg = _prior_error(tmp_path, "new", "all")
    assert "(the other studies there (broken) have no finished trials yet)" in msg, msg
    msg = _prior_error(tmp_path, "broken", "all")
    assert "(it holds no study but broken)" in msg, msg
    _search(tmp_path, "st1")
    stores = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    cases = [
        # (the study searched, --prior, what the message says)
        ("st1", ("st1",), "--prior st1: that is the study this search runs"),
        ("st2", ("nowhere",), "no study nowhere in"),
        ("st2", ("nowhere",), "(its studies: broken, st1)"),
        ("st2", ("broken",), "--prior: broken has no finished trials in"),
        ("st2", ("st1", "broken"), "--prior: broken has no finished trials"),
    ]
    for name, prior, fragment in cases:
        msg = _prior_error(tmp_path, name, *prior)
        assert fragment in msg, (prior, msg)
        assert "st1 has no finished trials" not in msg, msg
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stores  # untouched
    got = optuna.load_study(study_name="st1", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert sum(t.state.name == "COMPLETE" for t in got.trials) == 3


def test_prior_all_beside_names_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="'all' already takes every other study"):
        replay_settings(_space(), tmp_path, sampler="guided", prior=("all", "st1"))


def test_a_failed_trial_keeps_its_reason_in_the_study_and_its_mlflow_run(tmp_path):
    _search(tmp_path, "broken", FailingEvaluator())
    study = optuna.load_study(study_name="broken", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(failed) == 3
    client = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for t in failed:
        want = f"RuntimeError: out of memory while training {Candidate.from_dict(t.user_attrs['config']).describe()}"
        assert t.user_attrs["error"] == want
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["autoprumux.error"] == want
        assert run.data.tags["autoprumux.state"] == "FAIL" and run.info.status == "FAILED"
