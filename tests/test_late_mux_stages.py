"""A pruned late-multiplexed model is finished after one reported step (its N = 1 candidate is
pruned first, then multiplexed on top): the search measures it, whatever the recipe's number of
pruning stages, instead of stopping it at a step it took for an intermediate one."""

from __future__ import annotations

from test_search import TINY_RECIPE, mlflow_trial_runs, settings

from autoprumux.config import Candidate, Recipe
from autoprumux.pipeline import last_stage
from autoprumux.search import Searcher, SearchSpace


def test_last_stage_is_the_last_step_the_pipeline_reports():
    r = Recipe(prune_stages=3)
    assert last_stage(r, Candidate(mux=2)) == 0  # unpruned: the N-way model only
    assert last_stage(r, Candidate(sparsity=0.5)) == 3
    assert last_stage(r, Candidate(sparsity=0.5, mux=2)) == 3  # early mixing, pruned after
    late = Candidate(sparsity=0.5, mux=2, mux_layers=1)
    assert last_stage(r, late) == 1  # pruned at N = 1, then multiplexed: one step
    assert last_stage(Recipe(prune_stages=3, late_mux_freeze_backbone=False), late) == 3


def test_a_pruned_late_model_above_the_budget_is_measured_not_stopped(tiny_checkpoint, tmp_path):
    """Budget 0, margin 0, a baseline forced to 100 points: any intermediate step would stop
    the trial. The pruned late model reports one step (stage 1) under a two-stage recipe; it is
    its last, so the trial completes with its speedup, built or cached alike."""
    space = SearchSpace.from_dict(
        {
            "name": "late-stages",
            "task": "sst2",
            "model": tiny_checkpoint,
            "recipe": {**TINY_RECIPE, "prune_stages": 2},
            "params": {
                "sparsity": {"choices": [0.3]},
                "mux": {"choices": [2]},
                "mux_layers": {"choices": [1]},
            },
        }
    )
    for name in ("built", "cached"):
        s = settings(space, tmp_path, trials=1, budget=0.0, prune_margin=0.0, study_name=name)
        searcher = Searcher(s)
        searcher.pipeline("gaussian")._baseline_metrics = {"metric": 100.0, "accuracy": 100.0}
        searcher.run()
        (t,) = searcher.study.get_trials()
        assert t.state.name == "COMPLETE", (name, t.state.name)
        assert list(t.intermediate_values) == [1], name
        assert t.user_attrs["config"]["mux_layers"] == 1
        assert t.user_attrs["speedup"] > 0 and t.user_attrs["accuracy_loss"] > 0
        (run,) = mlflow_trial_runs(s.tracking_uri, searcher.name)
        assert run.info.status == "FINISHED" and "speedup" in run.data.metrics
