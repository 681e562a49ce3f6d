"""Late multiplexing (mux_layers k, mux_combiner) carried through every place a configuration
goes: search spaces and their samplers, the meta-model, the recommendation, the command line,
the export and the records of earlier versions. No real training: a replayed evaluator stands
in for the pipeline where a search runs end to end."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import optuna
import pytest

from autoprumux.cli import main
from autoprumux.config import Candidate, ThroughputConfig
from autoprumux.errors import ConfigError
from autoprumux.search import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
LATE = ROOT / "search_spaces" / "late_mux.yaml"
L = 6  # layers of the replayed model (the packaged MiniLM's)
CTX = {
    "task_num_labels": 2,
    "task_pair": 0,
    "task_mcc": 0,
    "task_log_train": math.log(8000),
    "baseline_metric": 85.0,
    "model_layers": L,
    "model_hidden": 384,
    "model_log_params": math.log(1.8e7),
    "device_cuda": 0,
}


def truth(c: Candidate) -> tuple[float, float]:
    """A monotone response: loss and speedup rise with sparsity and the effective N (fewer
    per-instance layers multiplex more); the learned combiner loses a little less."""
    eff = L / (c.mux_layers + (L - c.mux_layers) / c.mux)
    loss = 12.0 * c.sparsity**2 + 3.0 * math.log2(eff) * (0.7 if c.mux_combiner == "concat" else 1)
    return loss, eff / (1.0 - 0.8 * c.sparsity)


# ---- search spaces ------------------------------------------------------------------------------
def test_the_late_space_grid_holds_the_late_points_and_never_n1_with_k():
    space = SearchSpace.from_yaml(LATE)
    grid = space.grid()
    # N=1: 3 sparsities, early mixing only; N in {2, 4}: 3 x 4 layers x 3 combiners
    assert len(grid) == 3 + 3 * 2 * 4 * 3 == len(set(grid))
    assert all(c.mux_layers == 0 and c.mux_combiner == "binding" for c in grid if c.mux == 1)
    assert Candidate(sparsity=0.7, mux=4, mux_layers=3, mux_combiner="concat") in grid
    assert Candidate(sparsity=0.5, mux=2, mux_layers=0, mux_combiner="concat") in grid
    assert Candidate(sparsity=0, mux=4, mux_layers=2, mux_combiner="concat_skip") in grid
    assert {c.mux_layers for c in grid} == {0, 1, 2, 3} and space.max_mux_layers() == 3
    assert SearchSpace.from_dict(space.to_dict()).grid() == grid  # round trip


def test_spaces_without_the_new_dimensions_are_what_they_were():
    space = SearchSpace.from_yaml(ROOT / "search_spaces" / "prumux.yaml")
    assert "mux_layers" not in space.to_dict()["params"]  # same fingerprint, same study name
    assert all(c.mux_layers == 0 and c.mux_combiner == "binding" for c in space.grid())
    assert space.max_mux_layers() == 0


def test_an_integer_range_of_layers():
    space = SearchSpace.from_dict(
        {"params": {"mux": {"choices": [1, 2]}, "mux_layers": {"low": 0, "high": 3}}}
    )
    p = space.params["mux_layers"]
    assert p.values() == [0, 1, 2, 3] and all(type(v) is int for v in p.values())
    assert isinstance(p.distribution(), optuna.distributions.IntDistribution)
    assert p.to_dict() == {"low": 0, "high": 3, "step": 1}
    assert SearchSpace.from_dict(space.to_dict()).grid() == space.grid()
    assert len(space.grid()) == 1 + 4


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (
            {"mux_layers": {"choices": [-1]}},
            r"'params.mux_layers.choices' \(-1\) must be an integer",
        ),
        ({"mux_layers": {"choices": [1.5]}}, r"\(1.5\) must be an integer.*choices: \[0, 1, 2\]"),
        ({"mux_layers": {"choices": ["two"]}}, r"\('two'\) must be an integer"),
        ({"mux_layers": {"choices": [100]}}, r"\(100\) must be an integer in \[0, 64\]"),
        ({"mux_layers": {"low": 0, "high": 3, "step": 0.5}}, r"step' \(0.5\) must be an integer"),
        (
            {"mux_layers": {"low": 3, "high": 1}},
            r"'params.mux_layers.high' \(1\) is below 'params.mux_layers.low' \(3\)",
        ),
        (
            {"mux_combiner": {"choices": ["sum"]}},
            r"\('sum'\) must be one of \['binding', 'concat', 'concat_skip'\]",
        ),
        ({"mux_combiner": {"low": 0}}, r"unknown key 'params.mux_combiner.low'"),
    ],
)
def test_bad_late_dimensions_name_the_value_and_the_fix(params, match):
    with pytest.raises(ConfigError, match=match):
        SearchSpace.from_dict({"params": {"mux": {"choices": [1, 2]}, **params}})


def test_late_dimensions_need_some_n_above_1():
    for params in ({"mux_layers": {"choices": [0, 2]}}, {"mux_combiner": {"choices": ["concat"]}}):
        with pytest.raises(ConfigError, match=r"multiplexed models only.*params.mux.choices"):
            SearchSpace.from_dict({"params": {"mux": {"choices": [1]}, **params}})
    # the defaults alone are fine with N=1 only
    SearchSpace.from_dict({"params": {"mux_layers": {"choices": [0]}}})


def test_tpe_and_random_sample_layers_and_combiner_only_for_n_above_1():
    space = SearchSpace.from_yaml(LATE)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for sampler in (optuna.samplers.RandomSampler(seed=0), optuna.samplers.TPESampler(seed=0)):
        study = optuna.create_study(sampler=sampler, direction="maximize")
        seen = []
        for _ in range(40):
            trial = study.ask()
            c = space.suggest(trial)
            seen.append(c)
            assert (c.mux == 1) == ("mux_layers" not in trial.params), trial.params
            study.tell(trial, truth(c)[1])
        assert all(c.mux_layers == 0 and c.mux_combiner == "binding" for c in seen if c.mux == 1)
        assert {c.mux for c in seen} == {1, 2, 4}
        assert any(c.mux_shape.late for c in seen) and set(seen) <= set(space.grid())


def test_the_study_refuses_layers_or_a_concat_n_the_model_does_not_have():
    space = SearchSpace.from_yaml(LATE)
    space.check_model(lambda: {"model_layers": 4, "model_hidden": 384})
    with pytest.raises(ConfigError, match=r"reaches 3, but the model has 3 encoder.*0\.\.2"):
        space.check_model(lambda: {"model_layers": 3, "model_hidden": 384})
    with pytest.raises(ConfigError, match=r"hidden size \(90\).*N=4 does not divide it"):
        space.check_model(lambda: {"model_layers": 6, "model_hidden": 90})
    early = SearchSpace.from_yaml(ROOT / "search_spaces" / "prumux.yaml")
    early.check_model(lambda: pytest.fail("an early space does not ask the model"))


def test_guided_search_finds_the_best_late_point_without_measuring_the_grid():
    from autoprumux.search._guided import ScoredConfig, propose

    grid = SearchSpace.from_yaml(LATE).grid()
    budget = 3.0
    best = max(truth(c)[1] for c in grid if truth(c)[0] <= budget)
    seen: list[ScoredConfig] = []
    for _ in range(len(grid)):
        i = propose(grid, seen, budget, context=CTX)
        if i is None:
            break
        assert grid[i] not in {m.config for m in seen}
        seen.append(ScoredConfig(grid[i], *truth(grid[i])))
    found = max(m.speedup for m in seen if m.loss <= budget)
    assert found == pytest.approx(best)
    assert len(seen) < len(grid) - 1, len(seen)


@pytest.mark.parametrize("budget", [1.0, 3.0, 5.0, 8.0])
def test_guided_search_anchors_each_n_not_each_layer_count(budget):
    """One anchor per (combiner, N): the best late point within the budget is measured within
    10 trials of the 51-point grid (an anchor per (N, k) took 15-19 at budgets 3-8)."""
    from autoprumux.search._guided import ScoredConfig, propose

    grid = SearchSpace.from_yaml(LATE).grid()
    best = max(truth(c)[1] for c in grid if truth(c)[0] <= budget)
    seen: list[ScoredConfig] = []
    for _ in range(10):
        i = propose(grid, seen, budget, context=CTX)
        assert i is not None
        seen.append(ScoredConfig(grid[i], *truth(grid[i])))
    assert max(m.speedup for m in seen if m.loss <= budget) == pytest.approx(best)


# ---- the meta-model ---------------------------------------------------------------------------
def test_meta_features_hold_the_layers_with_a_falling_constraint_and_the_combiner_free():
    from autoprumux.meta._model import (
        CONTEXT_KEYS,
        FEATURES,
        MONOTONE_LOSS,
        MONOTONE_SPEEDUP,
        MetaModel,
        features,
    )

    assert set(CONTEXT_KEYS) == set(CTX)
    k, concat = FEATURES.index("mux_layers"), FEATURES.index("combiner_concat")
    assert MONOTONE_LOSS["mux_layers"] == MONOTONE_SPEEDUP["mux_layers"] == -1
    assert MONOTONE_LOSS["log2_mux"] == 1  # the convention: +1 rises with the feature
    assert "combiner_concat" not in MONOTONE_LOSS and "combiner_concat" not in MONOTONE_SPEEDUP
    cons = MetaModel()._make(MONOTONE_LOSS).get_params()["monotone_constraints"]
    assert cons[k] == -1 and cons[concat] == 0 and len(cons) == len(FEATURES)
    row = features(Candidate(sparsity=0.5, mux=4, mux_layers=2, mux_combiner="concat"), CTX)
    assert row[k] == 2.0 and row[concat] == 1.0
    early = features(Candidate(sparsity=0.5, mux=4), CTX)
    assert early[k] == 0.0 and early[concat] == 0.0
    skip = FEATURES.index("combiner_skip")
    assert row[skip] == early[skip] == 0.0 and cons[skip] == 0
    skip_row = features(Candidate(mux=2, mux_layers=2, mux_combiner="concat_skip"), CTX)
    assert skip_row[concat] == skip_row[skip] == 1.0  # a concat combiner, with the skip


def test_the_prior_uses_the_effective_n_of_a_late_model():
    from autoprumux.meta._model import FEATURES, _log2_effective_mux, features

    rows = np.array(
        [
            features(Candidate(mux=4), CTX),
            features(Candidate(mux=2, mux_layers=3), CTX),
            features(Candidate(mux=2, mux_layers=3), {**CTX, "model_layers": 0}),  # unknown L
        ]
    )
    got = _log2_effective_mux(rows)
    assert got[0] == rows[0, FEATURES.index("log2_mux")] == 2.0  # k=0: log2 N exactly
    assert got[1] == pytest.approx(math.log2(6 / (3 + 3 / 2)))
    assert got[2] == 1.0  # L not known: log2 N


def test_the_meta_model_learns_that_per_instance_layers_cost_speed_and_save_accuracy():
    from autoprumux.meta._model import MetaModel, features, training_table

    grid = SearchSpace.from_yaml(LATE).grid()
    rows = [(c, CTX, *truth(c)) for c in grid[::2]]
    m = MetaModel().fit(*training_table(rows))
    for n in (2, 4):
        for combiner in ("binding", "concat"):
            by_k = [
                Candidate(sparsity=0.5, mux=n, mux_layers=k, mux_combiner=combiner)
                for k in range(4)
            ]
            p = m.predict(np.array([features(c, CTX) for c in by_k]))
            assert (np.diff(p[:, 0]) <= 1e-9).all() and (np.diff(p[:, 1]) <= 1e-9).all(), p


# ---- the recommendation -----------------------------------------------------------------------
def _trials() -> list[dict[str, Any]]:
    grid = SearchSpace.from_yaml(LATE).grid()
    picked = [c for c in grid if c.mux == 1 or (c.mux == 2 and c.mux_layers in (0, 2))]
    return [
        {
            "study": "late",
            "number": i,
            "task": "sst2",
            "model": "m",
            "device": "cpu",
            "candidates": grid,
            "config": c,
            "context": CTX,
            "accuracy_loss": truth(c)[0],
            "speedup": truth(c)[1],
            "mlflow_run_id": None,
        }
        for i, c in enumerate(picked)
    ]


def test_commands_and_lines_name_the_layers_and_combiner_of_a_late_model():
    from autoprumux.meta._recommend import config_line, evaluate_command

    late = Candidate(sparsity=0.5, mux=2, mux_layers=2, mux_combiner="concat", precision="int8")
    assert evaluate_command(late, "prumux-sst2") == (
        "autoprumux evaluate --study prumux-sst2 --sparsity 0.5 --mux 2 --mux-variant gaussian "
        "--mux-layers 2 --mux-combiner concat --precision int8"
    )
    assert "2 per-instance layers, concat combiner" in config_line(late)
    early = Candidate(sparsity=0.5, mux=2)
    assert "--mux-layers" not in evaluate_command(early, "sst2")
    assert "per-instance" not in config_line(early)
    # the learned combiner alone (k=0) is late too: the flags say so
    assert "--mux-layers 0 --mux-combiner concat" in evaluate_command(
        Candidate(mux=4, mux_combiner="concat"), "sst2"
    )


def test_the_recommendation_and_the_served_table_carry_the_late_configuration():
    import pandas as pd

    from autoprumux.meta import Recommender
    from autoprumux.meta._recommend import RECOMMENDER_FORMAT
    from autoprumux.serving._pyfunc import OUTPUT_COLUMNS, RecommenderModel

    rec = Recommender(_trials())
    r = rec.recommend(2.0)  # within 2 points: 2 per-instance layers at N=2, 1.5x
    want = max((t for t in _trials() if t["accuracy_loss"] <= 2.0), key=lambda t: t["speedup"])
    assert r.config() == want["config"] and r.config().mux_shape.late
    assert (r.mux_layers, r.mux_combiner) == (2, want["config"].mux_combiner)
    assert r.to_dict()["mux_layers"] == 2
    assert "per-instance layers" in r.describe()
    # stored as data in today's format, and back
    d = rec.to_dict()
    assert d["format"] == RECOMMENDER_FORMAT == "autoprumux.recommender/5"
    assert Recommender.from_dict(d).recommend(2.0).config() == r.config()
    with pytest.raises(ValueError, match="not a autoprumux.recommender/5"):
        Recommender.from_dict({**d, "format": "autoprumux.recommender/3"})
    out = RecommenderModel(rec).predict(None, pd.DataFrame({"budget": [2.0, 0.0]}))
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    for col in ("mux_layers", "mux_combiner", "suggested_mux_layers", "suggested_mux_combiner"):
        assert col in OUTPUT_COLUMNS
    assert OUTPUT_COLUMNS.index("mux_layers") == OUTPUT_COLUMNS.index("mux") + 2
    assert out.loc[0, "mux_layers"] == 2 and out.loc[1, "mux_layers"] == 0
    assert out.loc[1, "mux_combiner"] == "binding"  # the baseline
    for _, row in out.iterrows():  # a suggestion's columns describe a valid configuration
        if row["suggested_mux"] != -1:
            Candidate(
                sparsity=row["suggested_sparsity"],
                mux=int(row["suggested_mux"]),
                mux_layers=int(row["suggested_mux_layers"]),
                mux_combiner=row["suggested_mux_combiner"],
            )


def test_records_written_before_late_multiplexing_still_load():
    from autoprumux.deploy import ExportManifest
    from autoprumux.search._guided import study_evidence

    old = {"technique": "prumux", "sparsity": 0.5, "mux": 2, "mux_variant": "gaussian",
           "students": 0, "student_depth": 0, "precision": "fp32"}  # fmt: skip
    c = Candidate.from_dict(old)
    assert (c.mux_layers, c.mux_combiner) == (0, "binding")
    assert c == Candidate(sparsity=0.5, mux=2)
    new = Candidate(sparsity=0.5, mux=2, mux_layers=1, mux_combiner="concat").to_dict()
    assert new["mux_layers"] == 1 and new["mux_combiner"] == "concat"  # MLflow params, attrs
    trial = SimpleNamespace(
        number=0,
        state=SimpleNamespace(name="COMPLETE"),
        user_attrs={"config": old, "accuracy_loss": 1.0, "speedup": 2.0},
    )
    assert study_evidence([trial])[0][0].config == c
    m = ExportManifest.from_dict({**_manifest(c).to_dict(), "config": old})
    assert m.config == c
    late = _manifest(Candidate.from_dict(new))
    assert ExportManifest.from_dict(late.to_dict()).config.mux_shape == late.config.mux_shape


# ---- export ---------------------------------------------------------------------------------------
def _manifest(c: Candidate) -> Any:
    from autoprumux.deploy import ExportManifest
    from autoprumux.deploy._manifest import Measurement

    meas = Measurement("accuracy", 84.0, 85.0, 84.0, 85.0, 300.0, 100.0, 0.5, 872, 64, 128, "cpu")
    return ExportManifest(
        task="sst2",
        label_names=("negative", "positive"),
        pair=False,
        max_seq_len=64,
        config=c,
        base_model="tiny",
        measurement=meas,
        machine={"cpu": "x"},
        created="2026-11-27T00:00:00Z",
        command="autoprumux export ...",
    )


def test_the_model_card_describes_a_late_model():
    from autoprumux.export._card import _configuration

    c = Candidate(sparsity=0.5, mux=4, mux_layers=2, mux_combiner="concat")
    late = "\n".join(_configuration(_manifest(c)))
    assert "| late multiplexing | k=2, concat: the first 2 encoder layers run on each input" in late
    assert "learned concat combiner" in late
    early = "\n".join(_configuration(_manifest(Candidate(sparsity=0.5, mux=4))))
    assert "late multiplexing" not in early


def test_a_manifest_that_disagrees_with_its_weights_is_refused(tiny):
    from conftest import tiny_encoder

    from autoprumux.deploy._weights import _model_class
    from autoprumux.models import MuxConfig, MuxSequenceClassifier

    enc, _ = tiny_encoder(num_hidden_layers=3)
    model = MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(n=2, layers=1))
    cfg = model.config_dict()
    _model_class(cfg, _manifest(Candidate(sparsity=0.5, mux=2, mux_layers=1)), Path("d"))
    with pytest.raises(
        ConfigError, match=r"manifest describes N=2, mux_layers 0.*weights are N=2, mux_layers 1"
    ):
        _model_class(cfg, _manifest(Candidate(sparsity=0.5, mux=2)), Path("d"))


# ---- the command line -----------------------------------------------------------------------
EXPORT = ["export", "--out", "new", "--sparsity", "0.5", "--no-register"]
BAD_CLI = [
    (["evaluate", "--mux", "2", "--mux-layers", "-1"], "--mux-layers ('-1') must be an integer"),
    (["evaluate", "--mux", "2", "--mux-layers", "two"], "--mux-layers ('two')"),
    (["evaluate", "--mux", "2", "--mux-combiner", "sum"], "--mux-combiner ('sum') must be one of"),
    (["evaluate", "--mux", "1", "--mux-layers", "2"], "--mux-layers 2 apply to multiplexed"),
    (["evaluate", "--mux", "1", "--mux-combiner", "concat"], "--mux-combiner concat apply to"),
    (["evaluate", "--students", "2", "--mux-layers", "1"], "multiplexed models only"),
    (["evaluate", "--mux", "2", "--mux-layers", "6"], "below the model's 6 encoder layers"),
    (EXPORT + ["--mux", "2", "--mux-layers", "6"], "below the model's 6 encoder layers"),
    (EXPORT + ["--mux-layers", "1"], "multiplexed models only"),
    (EXPORT + ["--mux", "2", "--mux-combiner", "avg"], "--mux-combiner ('avg')"),
    (
        ["export", "--out", "new", "--study", "s", "--trial", "0", "--mux-layers", "1"],
        "--mux-layers do not apply with --study",
    ),
]


@pytest.mark.parametrize("argv,message", BAD_CLI, ids=[" ".join(a) for a, _ in BAD_CLI])
def test_cli_bad_late_flags_exit_2_with_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOPRUMUX_CACHE", str(tmp_path / "cache"))
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert message in err, err
    assert err.startswith("autoprumux: error: ") and err.count("\n") == 1, err
    assert out == "" and list(tmp_path.iterdir()) == []  # nothing built or written


def test_cli_parses_the_late_flags():
    from autoprumux.cli import build_parser

    a = build_parser().parse_args(["evaluate", "--mux-layers", "2", "--mux-combiner", "concat"])
    assert (a.mux_layers, a.mux_combiner) == ("2", "concat")
    a = build_parser().parse_args(["evaluate"])
    assert (a.mux_layers, a.mux_combiner) == ("0", "binding")
    a = build_parser().parse_args(["export", "--out", "x"])
    assert (a.mux_layers, a.mux_combiner) == (None, None)  # refused beside --study when given


# ---- a whole search, replayed -------------------------------------------------------------------
class LateReplay:
    """A trial evaluator answering from `truth` (see `autoprumux.search.TrialEvaluator`)."""

    model_id = "replay-late"
    dev_size = 872

    def descriptors(self) -> dict[str, float]:
        return {k: v for k, v in CTX.items() if k != "baseline_metric"}

    def check_lengths(self, n: int, tp: Any = None) -> None:
        pass

    def baseline_metrics(self) -> dict[str, float]:
        return {"metric": 85.0, "accuracy": 85.0}

    def evaluate(self, config: Candidate, *, throughput: Any = None, on_stage: Any = None) -> Any:
        from autoprumux.evaluation import Evaluation, Measured

        loss, speed = truth(config)

        def measured(name: str, metric: float, rate: float) -> Measured:
            return Measured(
                name, config.sparsity, config.mux, metric, metric, rate, 1 / rate, 0, 1 / rate
            )

        return Evaluation(
            task="sst2",
            metric_name="accuracy",
            device="cpu",
            baseline=measured("baseline", 85.0, 1.0),
            candidate=measured(config.describe(), 85.0 - loss, speed),
            throughput_config=throughput or ThroughputConfig(),
        )


def replayed_searcher(tmp_path: Path, trials: int, seed: int = 0) -> Any:
    """A random search of late_mux.yaml answered by `LateReplay`, in SQLite stores."""
    from autoprumux.search import Searcher, SearchSettings

    settings = SearchSettings(
        space=SearchSpace.from_yaml(LATE),
        trials=trials,
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        sampler="random",
        seed=seed,
        budget=3.0,
        show_progress=False,
    )
    return Searcher(settings, evaluator=lambda variant: LateReplay())


def test_a_search_records_tracks_reports_and_recommends_late_configurations(tmp_path):
    from autoprumux.meta import recommend

    searcher = replayed_searcher(tmp_path, trials=6, seed=3)
    settings = searcher.s
    searcher.run()
    trials = [t for t in searcher.study.get_trials() if t.state.name == "COMPLETE"]
    configs = [Candidate.from_dict(t.user_attrs["config"]) for t in trials]
    assert len(trials) == 6 and any(c.mux_shape.late for c in configs)
    late = next(t for t, c in zip(trials, configs, strict=True) if c.mux_shape.late)
    c = Candidate.from_dict(late.user_attrs["config"])
    run = searcher.client.get_run(late.user_attrs["mlflow_run_id"])
    assert run.data.params["mux_layers"] == str(c.mux_layers)
    assert run.data.params["mux_combiner"] == c.mux_combiner
    assert f"{c.describe()} {c.mux_variant}" in searcher.report()  # the trials table
    rec = recommend(3.0, storage=settings.storage)
    assert rec.config() in set(configs) | {Candidate()}


def test_a_trial_started_after_the_last_slot_was_taken_stands_down(tmp_path):
    """Two workers can both see one free slot: the one whose trial came second gives it up
    before sampling, so the study ends at its target and records nothing for it."""
    searcher = replayed_searcher(tmp_path, trials=2)
    searcher.run()
    assert len(searcher.finished()) == 2
    # the race: another worker's check passed too, and its trial exists now
    searcher.study.optimize(searcher.objective, n_trials=1)
    late = searcher.study.get_trials()[-1]
    assert late.state.name == "PRUNED" and late.user_attrs["surplus"] is True
    assert "config" not in late.user_attrs and "mlflow_run_id" not in late.user_attrs
    assert len(searcher.finished()) == 2
    assert searcher.run() == []  # a rerun sees the target met
    # a retried trial of a dead worker is never surplus
    retry = searcher.study.ask()
    searcher.study.tell(retry, state=optuna.trial.TrialState.FAIL)
    optuna.storages.RetryFailedTrialCallback()(searcher.study, searcher.study.get_trials()[-1])
    searcher.run()
    states = [t.state.name for t in searcher.study.get_trials()]
    assert states[-1] == "COMPLETE", states


def test_cli_exports_a_late_model_that_loads_and_says_what_it_is(tiny_checkpoint, tmp_path):
    """End to end on the tiny checkpoint (2 layers): `export --mux-layers 1 --mux-combiner
    concat` builds the late model through the pipeline, the manifest keeps k and the combiner,
    the card describes them and the directory loads and predicts."""
    from conftest import GLUE_DIR

    import autoprumux
    from autoprumux.deploy import read_manifest

    out = tmp_path / "late"
    argv = ["export", "--out", str(out), "--model", tiny_checkpoint, "--no-register"]
    argv += ["--sparsity", "0", "--mux", "2", "--mux-layers", "1", "--mux-combiner", "concat"]
    argv += ["--max-train-examples", "64", "--batch-size", "16", "--max-seq-len", "32"]
    argv += ["--finetune-steps", "2", "--mux-finetune-steps", "2"]
    argv += ["--data-dir", str(GLUE_DIR), "--cache-dir", str(tmp_path / "cache")]
    argv += ["--tp-batch", "8", "--tp-seq-len", "32", "--tp-repeats", "2"]
    assert main(argv) == 0
    m = read_manifest(out)
    assert m.config == Candidate(mux=2, mux_layers=1, mux_combiner="concat")
    card = (out / "README.md").read_text()
    assert "s=0 N=2 k=1 concat" in card and "| late multiplexing | k=1, concat: " in card
    p = autoprumux.load(out)
    assert (p.model.mux_config.layers, p.model.mux_config.combiner) == (1, "concat")
    assert len(p.predict(["a fine film", "a dull one", "so-so"]).labels) == 3


@pytest.mark.parametrize("layers, combiner", [(1, "concat"), (0, "concat"), (0, "concat_skip")])
def test_late_models_under_l2l_are_refused_before_any_training(
    tiny_checkpoint, tmp_path, layers, combiner
):
    """Every late model (per-instance layers or a learned combiner, k=0 included) trains with
    the standard loop: under trainer 'l2l' the pipeline says so up front, and early mixing
    (k=0, binding) stays allowed."""
    from conftest import GLUE_DIR

    from autoprumux.config import Recipe
    from autoprumux.pipeline import PruMuxPipeline

    pipe = PruMuxPipeline(
        task="sst2",
        model=tiny_checkpoint,
        recipe=Recipe(trainer="l2l"),
        data_dir=str(GLUE_DIR),
        cache_dir=tmp_path,
    )
    late = Candidate(mux=2, mux_layers=layers, mux_combiner=combiner)
    with pytest.raises(ConfigError, match=r"trains with the standard loop, not 'l2l'"):
        pipe.check(late)
    pipe.check(Candidate(mux=2))
    assert not any(tmp_path.iterdir())
