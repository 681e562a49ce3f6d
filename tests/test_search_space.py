"""Search spaces as data, the meta-model's contract and budget validation (no training)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from autoprumux.config import Candidate, check_budget
from autoprumux.errors import ConfigError
from autoprumux.meta import FEATURES, MetaModel
from autoprumux.meta._model import features, training_table
from autoprumux.search import SearchSpace, pareto_points

REPO = Path(__file__).resolve().parents[1]
GOOD = {
    "name": "t",
    "task": "sst2",
    "params": {"sparsity": {"low": 0.0, "high": 0.9, "step": 0.3}, "mux": {"choices": [1, 2]}},
}


def test_the_shipped_space_loads_into_optuna_distributions():
    import optuna

    space = SearchSpace.from_yaml(REPO / "search_spaces" / "prumux.yaml")
    d = space.distributions()
    assert isinstance(d["sparsity"], optuna.distributions.FloatDistribution)
    assert d["sparsity"].step == pytest.approx(0.05) and d["sparsity"].high == pytest.approx(0.95)
    assert d["mux"].choices == (1, 2, 4)
    grid = space.grid()
    assert len(grid) == 20 * 3 * 2
    assert {g.mux for g in grid} == {1, 2, 4} and {g.precision for g in grid} == {"fp32", "int8"}
    assert max(g.sparsity for g in grid) == pytest.approx(0.95)
    # round trip through its own dict form
    assert SearchSpace.from_dict(space.to_dict()).grid() == grid


def test_a_space_fixes_task_model_and_recipe():
    space = SearchSpace.from_dict({**GOOD, "recipe": {"recovery_steps": 7}, "model": "x"})
    assert space.recipe.recovery_steps == 7 and space.model == "x"
    assert space.with_task("cola").task == "cola"
    assert space.grid()[0] == Candidate()  # the baseline first
    assert space.grid()[0].to_dict() == {
        "technique": "prumux",
        "sparsity": 0.0,
        "mux": 1,
        "mux_variant": "gaussian",
        "students": 0,
        "student_depth": 0,
        "precision": "fp32",
        "mux_layers": 0,
        "mux_combiner": "binding",
    }


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"colour": 1}, r"unknown key 'colour'; allowed keys are \['name', 'task'"),
        ({"task": "imdb"}, r"'task' is 'imdb'; allowed values are \['cola', 'mrpc'"),
        ({"recipe": {"lr2": 1}}, r"unknown key 'recipe.lr2'; allowed keys are"),
        ({"recipe": {"batch_size": 0}}, r"batch_size"),
        ({"params": {"depth": {"choices": [1]}}}, r"unknown key 'params.depth'"),
        (
            {"params": {"mux": {"choices": [0, 2]}}},
            r"'params.mux.choices' \(0\) must be an integer",
        ),
        ({"params": {"mux": {"choices": []}}}, r"'params.mux.choices' must be a non-empty list"),
        ({"params": {"mux": {"low": 1}}}, r"unknown key 'params.mux.low'"),
        (
            {"params": {"sparsity": {"low": 0.0, "high": 1.0, "step": 0.1}}},
            r"'params.sparsity.high' \(1.0\) must be a number in \[0, 1\)",
        ),
        (
            {"params": {"sparsity": {"low": 0.0, "high": 0.5, "step": 0.2}}},
            r"must be a multiple of step",
        ),
        ({"params": {"sparsity": {"low": 0.0, "high": 0.5}}}, r"is missing \['step'\]"),
        ({"params": {"mux_variant": {"choices": ["fft"]}}}, r"must be one of \['gaussian'"),
        ({"params": {}}, r"'params' must be a non-empty mapping"),
    ],
)
def test_bad_spaces_name_the_key_and_the_allowed_values(patch, match):
    with pytest.raises(ConfigError, match=match):
        SearchSpace.from_dict({**GOOD, **patch})


def test_malformed_yaml_names_the_line(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nparams:\n  mux: {choices: [1, 2\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        SearchSpace.from_yaml(p)
    with pytest.raises(ConfigError, match="does not exist"):
        SearchSpace.from_yaml(tmp_path / "missing.yaml")


@pytest.mark.parametrize("bad", [-0.5, float("nan"), 100.5, "abc", None, [2], True, False])
def test_bad_budgets_are_refused(bad):
    with pytest.raises(ConfigError, match="budget"):
        check_budget(bad)


def test_good_budgets_pass():
    assert check_budget("2.5") == 2.5 and check_budget(0) == 0.0 and check_budget(100) == 100.0


def test_pareto_points():
    rows = [(0.0, 1.0), (1.0, 2.0), (2.0, 1.5), (0.5, 0.9), (3.0, 4.0)]
    assert pareto_points(rows) == [0, 1, 4]


CTX = {
    "task_num_labels": 2,
    "task_pair": 0,
    "task_mcc": 0,
    "task_log_train": math.log(8000),
    "baseline_metric": 83.0,
    "model_layers": 6,
    "model_hidden": 384,
    "model_log_params": math.log(1.8e7),
    "device_cuda": 0,
}


def _synthetic(n_points: int = 30, seed: int = 0):
    """A known response surface: loss and speedup rise with sparsity and N, plus noise."""
    rng = np.random.default_rng(seed)
    rows, y = [], []
    for _ in range(n_points):
        s = float(rng.choice(np.arange(0, 0.95, 0.05)))
        n = int(rng.choice([1, 2, 4]))
        loss = 10 * s**3 + 4 * math.log2(n) + rng.normal(0, 0.2)
        speed = (1 / (1 - 0.9 * s)) * (1 + 0.8 * math.log2(n)) * math.exp(rng.normal(0, 0.03))
        rows.append(features(Candidate(sparsity=s, mux=n), CTX))
        y.append([loss, speed])
    return np.array(rows), np.array(y)


def test_meta_model_follows_the_estimator_contract_and_learns_a_surface():
    X, y = _synthetic()
    m = MetaModel(n_estimators=60, learning_rate=0.2)
    assert clone(m).get_params() == m.get_params()
    with pytest.raises(Exception, match="not fitted"):
        m.predict(X)
    assert m.fit(X, y) is m
    Xt, yt = _synthetic(40, seed=1)
    pred = m.predict(Xt)
    assert pred.shape == (40, 2)
    assert np.mean(np.abs(pred[:, 0] - yt[:, 0])) < 1.5  # loss in points
    assert np.mean(np.abs(np.log(pred[:, 1] / yt[:, 1]))) < 0.2
    lo, hi = m.predict_interval(Xt)
    assert (lo <= pred + 1e-9).all() and (pred <= hi + 1e-9).all()
    inside = ((yt >= lo) & (yt <= hi)).mean(axis=0)
    assert inside.min() >= 0.5, inside


def test_meta_model_is_monotone_in_sparsity_and_n():
    X, y = _synthetic()
    m = MetaModel(n_estimators=60, learning_rate=0.2).fit(X, y)
    grid = np.array([features(Candidate(sparsity=s, mux=2), CTX) for s in np.arange(0, 0.95, 0.05)])
    p = m.predict(grid)
    assert (np.diff(p[:, 0]) >= -1e-9).all() and (np.diff(p[:, 1]) >= -1e-9).all()
    by_n = m.predict(np.array([features(Candidate(sparsity=0.5, mux=n), CTX) for n in (1, 2, 4)]))
    assert (np.diff(by_n, axis=0) >= -1e-9).all()


def test_meta_model_refuses_bad_targets():
    X, y = _synthetic(5)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        MetaModel().fit(X, y[:, 0])
    with pytest.raises(ValueError, match="at least 2"):
        MetaModel().fit(X[:1], y[:1])
    with pytest.raises(ValueError, match=rf"X must be \(n, {len(FEATURES)}\) with columns"):
        MetaModel().fit(X[:, :3], y)


def test_spaces_across_techniques_load_and_keep_each_techniques_dimensions_apart():
    root = Path(__file__).resolve().parents[1] / "search_spaces"
    combined = SearchSpace.from_yaml(root / "combined.yaml")
    grid = combined.grid()
    prumux = [g for g in grid if g.technique == "prumux"]
    students = [g for g in grid if g.technique == "students"]
    assert len(prumux) == 20 * 3 * 2 and len(students) == 4 * 3 * 2 and len(grid) == 144
    assert all(g.sparsity == 0.0 and g.mux == 1 for g in students)
    assert all(g.students == 0 and g.student_depth == 0 for g in prumux)
    only = SearchSpace.from_yaml(root / "students.yaml")
    assert {(g.students, g.student_depth) for g in only.grid()} == {
        (k, d) for k in (1, 2, 3, 4) for d in (1, 2, 3)
    }


def test_the_path_space_asks_for_the_levels_of_its_path_and_nothing_else():
    """search_spaces/path.yaml reads the default recipe's path: every sparsity it asks for is a
    level of that path (or 0), and every level is asked for."""
    space = SearchSpace.from_yaml(Path(__file__).resolve().parents[1] / "search_spaces/path.yaml")
    assert space.recipe.recovery == "path"
    asked = {round(g.sparsity, 4) for g in space.grid()}
    assert asked == {0.0, *(round(level, 4) for level in space.recipe.path_grid)}
    assert {g.mux for g in space.grid()} == {1}


@pytest.mark.parametrize(
    "params, match",
    [
        ({"students": {"choices": [2]}}, r"params.students.*technique 'students'"),
        ({"technique": {"choices": ["prumux", "quantize"]}}, r"params.technique.choices"),
        (
            {"technique": {"choices": ["students"]}, "students": {"choices": [0]}},
            r"params.students.choices.*\[1, 16\]",
        ),
        (
            {"technique": {"choices": ["students"]}, "student_depth": {"choices": [4]}},
            r"params.student_depth.choices.*\[1, 2, 3\]",
        ),
        (
            {"technique": {"choices": ["students"]}, "sparsity": {"choices": [0.5]}},
            r"params.sparsity.*technique 'prumux'",
        ),
    ],
)
def test_bad_technique_dimensions_name_the_key(params, match):
    with pytest.raises(ConfigError, match=match):
        SearchSpace.from_dict({**GOOD, "params": params})


def test_meta_model_keeps_students_monotone():

    rng = np.random.default_rng(0)
    rows = []
    for _ in range(40):
        k, d = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        loss = 6.0 / (k * d) + rng.normal(0, 0.3)
        speed = 6.0 / (k * d) * (1 + rng.normal(0, 0.05))
        rows.append(
            (Candidate(technique="students", students=k, student_depth=d), CTX, loss, speed)
        )
    X, y = training_table(rows)
    m = MetaModel().fit(X, y)
    for d in (1, 2, 3):
        p = m.predict(
            np.array(
                [
                    features(Candidate(technique="students", students=k, student_depth=d), CTX)
                    for k in (1, 2, 3, 4)
                ]
            )
        )
        assert all(np.diff(p[:, 0]) <= 1e-9) and all(np.diff(p[:, 1]) <= 1e-9), p


def test_recipe_presets_in_the_api_the_cli_and_a_space():
    from autoprumux.cli import _recipe, build_parser
    from autoprumux.config import RECIPE_PRESETS, Recipe

    assert Recipe.preset() == Recipe()
    acc = Recipe.preset("accurate")
    assert acc != Recipe() and all(
        getattr(acc, k) == v for k, v in RECIPE_PRESETS["accurate"].items()
    )
    # explicit fields win over the preset, in the API, the CLI and a space file
    assert Recipe.preset("accurate", mux_finetune_steps=7).mux_finetune_steps == 7
    args = build_parser().parse_args(["evaluate", "--preset", "accurate", "--seed", "3"])
    assert _recipe(args) == Recipe.preset("accurate", seed=3)
    assert _recipe(build_parser().parse_args(["evaluate"])) == Recipe()
    space = SearchSpace.from_dict({**GOOD, "recipe": {"preset": "accurate", "recovery_steps": 7}})
    assert space.recipe == Recipe.preset("accurate", recovery_steps=7)
    with pytest.raises(ConfigError, match=r"preset 'slow' is unknown; use one of \['accurate'"):
        Recipe.preset("slow")
    with pytest.raises(ConfigError, match=r"bad 'recipe'.*preset 'slow'"):
        SearchSpace.from_dict({**GOOD, "recipe": {"preset": "slow"}})


def _issue_trials() -> list[dict]:
    """The five trials of a guided SST-2 search (loss in points, speedup), as load_trials gives
    them."""
    ctx = {**CTX, "baseline_metric": 85.21}
    measured = {(0.5, 1): (0.46, 2.00), (0.6, 1): (2.52, 2.52), (0.65, 1): (4.93, 2.73),
                (0.75, 1): (7.57, 3.77), (0.0, 2): (9.40, 2.14)}  # fmt: skip
    space = {
        "name": "prumux",
        "task": "sst2",
        "model": None,
        "recipe": {},
        "params": {
            "sparsity": {"low": 0.0, "high": 0.95, "step": 0.05},
            "mux": {"choices": [1, 2, 4]},
        },
    }
    return [
        {
            "study": "s",
            "number": i,
            "task": "sst2",
            "model": "m",
            "device": "cpu",
            "candidates": SearchSpace.from_dict(space).grid(),
            "config": Candidate(sparsity=s, mux=n),
            "context": ctx,
            "accuracy_loss": loss,
            "speedup": sp,
            "mlflow_run_id": None,
        }
        for i, ((s, n), (loss, sp)) in enumerate(measured.items())
    ]


def test_recommend_answers_with_the_fastest_measured_configuration_within_each_budget():
    from autoprumux.meta import Recommender

    rec = Recommender(_issue_trials())
    want = {0.3: (0.0, 1), 0.5: (0.5, 1), 1: (0.5, 1), 2: (0.5, 1), 3: (0.6, 1), 5: (0.65, 1),
            8: (0.75, 1), 10: (0.75, 1)}  # fmt: skip
    for budget, cfg in want.items():
        r = rec.recommend(budget)
        assert (r.sparsity, r.mux) == cfg, budget
        if cfg == (0.0, 1):  # the baseline is what it is by definition
            assert r.source == "baseline" and r.measured is None
            assert (r.accuracy_loss, r.speedup) == (0.0, 1.0)
            assert "by definition" in r.describe()
        else:
            assert r.source == "measured" and r.accuracy_loss <= budget
            assert r.speedup == r.measured.speedup and "measured (trial" in r.describe()
        sg = r.suggestion
        if sg is not None:  # a suggestion is unmeasured, pessimistically within the budget
            assert sg.accuracy_loss_interval.high <= budget
            assert sg.predicted_speedup >= 1.1 * r.speedup
            assert "not the answer" in r.describe()


def test_the_meta_model_knows_the_baseline_and_that_n_and_sparsity_cost_and_pay():
    from autoprumux.meta import Recommender

    rec = Recommender(_issue_trials())
    pts = [Candidate(sparsity=s, mux=n) for s, n in
           ((0.0, 1), (0.3, 1), (0.5, 1), (0.75, 1), (0.0, 2), (0.0, 4))]  # fmt: skip
    med, _, _ = rec.predict(pts)
    base, s3, s5, s75, n2, n4 = med
    assert abs(base[0]) < 0.5 and base[1] == pytest.approx(1.0, rel=0.1)
    assert s3[1] < s5[1] < s75[1] and s3[0] <= s5[0] < s75[0]  # sparsity: faster, less accurate
    assert n2[0] > base[0] + 3 and n2[1] > base[1] * 1.3  # N has an effect
    assert n4[0] >= n2[0] and n4[1] >= n2[1]


def test_every_list_of_a_configurations_fields_derives_from_candidate():
    """Adding a Candidate field is one edit: the search space's dimensions, its defaults and
    neutral values, the served recommender's columns and the recommendation's record each name
    every field of `Candidate` (and nothing else), so none of them can drift from it."""
    from dataclasses import fields

    import optuna
    import pandas as pd

    from autoprumux.config import (
        CANDIDATE_FIELDS,
        MUX_SHAPE_FIELDS,
        SAMPLING_ORDER,
        TECHNIQUE_FIELDS,
        TECHNIQUES,
    )
    from autoprumux.meta import Recommendation, Recommender
    from autoprumux.search._space import EARLY_MIXING, NEUTRAL, PARAMS
    from autoprumux.serving._pyfunc import OUTPUT_COLUMNS, RecommenderModel

    names = [f.name for f in fields(Candidate)]
    assert list(CANDIDATE_FIELDS) == names
    assert sorted(SAMPLING_ORDER) == sorted(names) and len(SAMPLING_ORDER) == len(names)
    assert SAMPLING_ORDER[0] == "technique"  # it decides which of the others apply
    # the search space: a dimension and a default per field; a technique's configurations hold
    # every other technique's fields at Candidate's defaults
    assert PARAMS == SAMPLING_ORDER
    owned = {n for t in TECHNIQUES for n in TECHNIQUE_FIELDS[t]}
    assert owned <= set(names) and set(MUX_SHAPE_FIELDS) <= owned
    for t in TECHNIQUES:
        assert set(NEUTRAL[t]) == owned - set(TECHNIQUE_FIELDS[t])
        assert all(v == getattr(Candidate(), k) for k, v in NEUTRAL[t].items())
    assert {k: getattr(Candidate(), k) for k in MUX_SHAPE_FIELDS} == EARLY_MIXING
    defaults = SearchSpace.from_dict(GOOD).defaults()
    assert list(defaults) == names
    every = {k: {"choices": [v]} for k, v in defaults.items()}
    every["technique"] = {"choices": list(TECHNIQUES)}
    space = SearchSpace.from_dict({**GOOD, "params": every})
    assert set(space.params) == set(names)
    for c in space.grid():  # each configuration, back from the params a trial samples for it
        assert space.suggest(optuna.trial.FixedTrial(space.params_of(c))) == c
    # the served recommender: a column per field, in sampling order
    i = OUTPUT_COLUMNS.index(SAMPLING_ORDER[0])
    assert OUTPUT_COLUMNS[i : i + len(names)] == SAMPLING_ORDER
    # the recommendation holds its Candidate (no copy of its fields) and writes them flat
    assert not set(names) & {f.name for f in fields(Recommendation)}
    rec = Recommender(_issue_trials())
    r = rec.recommend(2.0)
    d = r.to_dict()
    i = list(d).index(names[0])
    assert list(d)[i : i + len(names)] == names and "candidate" not in d
    assert Candidate.from_dict({k: d[k] for k in names}) == r.config() == r.candidate
    assert all(getattr(r, k) == d[k] for k in names)
    with pytest.raises(AttributeError, match="no attribute 'sparsityy'"):
        _ = r.sparsityy
    row = RecommenderModel(rec).predict(None, pd.DataFrame({"budget": [2.0]})).to_dict("records")
    assert Candidate.from_dict({k: row[0][k] for k in names}) == r.config()


def test_a_space_over_the_pruning_path_samples_its_levels_only():
    quick = SearchSpace.from_yaml(REPO / "search_spaces" / "quick.yaml")
    assert quick.recipe.recovery == "path"
    levels = quick.recipe.path_grid
    assert {g.sparsity for g in quick.grid()} - {0.0} <= set(levels)
    off = {**GOOD, "recipe": {"recovery": "path", "path_step": 0.2, "path_max_sparsity": 0.6}}
    with pytest.raises(
        ConfigError, match=r"samples \[0\.3, 0\.9\], which are not levels .*\[0\.2, 0\.4, 0\.6\]"
    ):
        SearchSpace.from_dict(off)
    on = {**off, "params": {"sparsity": {"low": 0.0, "high": 0.6, "step": 0.2}}}
    assert SearchSpace.from_dict(on).values("sparsity")[-1] == pytest.approx(0.6)
    # the same space prunes each point on its own with the recipe's recovery 'separate'
    SearchSpace.from_dict({**off, "recipe": {**off["recipe"], "recovery": "separate"}})
