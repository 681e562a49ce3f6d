"""A study is one machine, one code version, one resolved recipe and one set of search settings
(sampler, budget, prune margin): it records them, a worker takes them, and resuming it with
others is refused. `evaluate --study` measures one configuration as a new trial of it."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any

import optuna
import pytest
from test_search_samplers import ReplayEvaluator, replay_searcher, replay_settings

from autoprumux import tracking
from autoprumux.cli import main
from autoprumux.config import Recipe
from autoprumux.errors import ConfigError
from autoprumux.evaluation import Machine, this_machine
from autoprumux.search import Searcher, SearchSettings, SearchSpace

SPACE = {
    "name": "ident",
    "task": "sst2",
    "model": None,
    "recipe": {"prune_stages": 1},
    "params": {"sparsity": {"choices": [0.0, 0.5]}, "mux": {"choices": [1, 2]}},
}


def space() -> SearchSpace:
    return SearchSpace.from_dict(SPACE)


# the settings of the study `made` makes
SAME = {"study_name": "ident", "sampler": "random", "budget": 3.0, "prune_margin": 1.0}


def made(tmp_path: Path, **kw: Any) -> Searcher:
    """A study of 2 replayed trials (random sampler, budget 3, margin 1 unless told)."""
    searcher = replay_searcher(replay_settings(space(), tmp_path, **{**SAME, "trials": 2, **kw}))
    searcher.run()
    return searcher


def resumed(tmp_path: Path, **change: Any) -> SearchSettings:
    """The settings that resume `made`'s study up to 3 trials, with `change`."""
    return replay_settings(space(), tmp_path, **{**SAME, "trials": 3, **change})


@pytest.fixture
def replayed_pipelines(monkeypatch):
    """Searchers made by the CLI (worker) answer from `ReplayEvaluator` instead of training."""
    ev = ReplayEvaluator()
    monkeypatch.setattr(Searcher, "_pipeline_factory", lambda self, variant: ev)
    return ev


def test_a_study_records_its_machine_recipe_and_settings(tmp_path):
    searcher = made(tmp_path)
    attrs = searcher.study.user_attrs
    here = this_machine("cpu")
    assert attrs["machine"] == here.to_dict()
    assert attrs["recipe"] == dataclasses.asdict(space().recipe)  # every field, not overrides
    assert len(attrs["recipe"]) == len(dataclasses.fields(Recipe))
    assert (attrs["sampler"], attrs["budget"], attrs["prune_margin"]) == ("random", 3.0, 1.0)
    assert attrs["settings"]["throughput"]["repeats"] == searcher.s.throughput.repeats
    cl = tracking.client(searcher.tracking_uri)
    parent = cl.get_run(searcher.parent_run_id).data.params
    assert parent["machine"] == here.describe() and parent["machine_key"] == here.key
    trials = searcher.study.get_trials()
    assert len(trials) == 2
    for t in trials:
        assert t.user_attrs["machine"] == here.to_dict()
        params = cl.get_run(t.user_attrs["mlflow_run_id"]).data.params
        assert (params["machine"], params["machine_key"]) == (here.describe(), here.key)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sampler": "tpe"}, "sampler 'random'; this run asks for 'tpe'. Resume it with --sampler random"),
        ({"budget": 2.0}, "budget 3.0; this run asks for 2.0. Resume it with --budget 3.0"),
        ({"prune_margin": 5.0}, "prune_margin 1.0; this run asks for 5.0. Resume it with --prune-margin 1.0"),
    ],
)  # fmt: skip
def test_resuming_with_another_sampler_budget_or_margin_is_refused(tmp_path, change, message):
    made(tmp_path)
    with pytest.raises(ConfigError, match="--study-name NEW") as e:
        replay_searcher(
            resumed(tmp_path, **change)
        )  # fmt: skip
    assert message in str(e.value)


def test_a_worker_takes_the_studys_sampler_budget_and_margin(
    tmp_path, monkeypatch, capsys, replayed_pipelines
):
    from autoprumux.cli import _search

    searcher = made(tmp_path)
    seen = []
    real = _search._run_search

    def spy(args, settings):
        seen.append(settings)
        return real(args, settings)

    monkeypatch.setattr(_search, "_run_search", spy)
    common = ["worker", "--study-name", "ident", "--storage", searcher.storage_url]
    common += ["--tracking-uri", searcher.tracking_uri, "--no-register"]
    assert main([*common, "--trials", "3"]) == 0
    (s,) = seen
    assert (s.sampler, s.budget, s.prune_margin) == ("random", 3.0, 1.0)
    assert len(searcher.finished()) == 3
    capsys.readouterr()
    for flags, values in (
        (["--sampler", "guided"], ("'random'", "'guided'", "--sampler random")),
        (["--budget", "2"], ("budget 3.0", "2.0", "--budget 3.0")),
        (["--prune-margin", "5"], ("prune_margin 1.0", "5.0", "--prune-margin 1.0")),
    ):
        assert main([*common, "--trials", "4", *flags]) == 2, flags
        err = capsys.readouterr().err
        assert all(v in err for v in values), (flags, err)
    assert len(searcher.finished()) == 3  # nothing ran


def other_machine(**change: Any) -> Machine:
    return dataclasses.replace(this_machine("cpu"), **change)


def test_a_study_refuses_another_machine_or_code_version(
    tmp_path, monkeypatch, capsys, replayed_pipelines
):
    searcher = made(tmp_path)
    again = resumed(tmp_path)
    # the stored study says it ran with other threads
    mine = this_machine("cpu")
    searcher.study.set_user_attr("machine", {**mine.to_dict(), "threads": mine.threads + 7})
    with pytest.raises(ConfigError, match=r"another machine.*threads: .*--study-name NEW"):
        replay_searcher(again)
    searcher.study.set_user_attr("machine", mine.to_dict())
    replay_searcher(again)  # the same machine resumes
    # this process runs on another CPU, or another autoprumux version: search and worker refuse
    for change in ({"cpu": "Another CPU"}, {"autoprumux": "0.0.1"}, {"isa": ("avx2",)}):
        monkeypatch.setattr(
            "autoprumux.evaluation.this_machine", lambda d="cpu", c=change: other_machine(**c)
        )
        with pytest.raises(ConfigError, match=rf"{next(iter(change))}: "):
            replay_searcher(again)
        argv = ["worker", "--study-name", "ident", "--storage", searcher.storage_url]
        assert main([*argv, "--tracking-uri", searcher.tracking_uri, "--no-register"]) == 2
        assert "another machine or code version" in capsys.readouterr().err
    assert len(searcher.finished()) == 2


def test_a_study_from_before_machines_were_recorded_is_refused(tmp_path):
    searcher = made(tmp_path)
    old = optuna.create_study(study_name="old", storage=searcher.storage_url)
    for k, v in searcher.study.user_attrs.items():
        if k not in ("machine", "recipe", "sampler", "prune_margin"):
            old.set_user_attr(k, v)
    with pytest.raises(ConfigError, match="records no machine.*--study-name NEW"):
        replay_searcher(replay_settings(space(), tmp_path, study_name="old", budget=3.0))


def test_a_study_refuses_another_resolved_recipe(tmp_path):
    """The space's overrides are equal, but a recipe default changed: other models."""
    searcher = made(tmp_path)
    stored = dict(searcher.study.user_attrs["recipe"])
    searcher.study.set_user_attr(
        "recipe", {**stored, "finetune_steps": stored["finetune_steps"] + 1}
    )
    with pytest.raises(ConfigError, match=r"another resolved recipe: finetune_steps: \d+ -> \d+"):
        replay_searcher(
            resumed(tmp_path)
        )  # fmt: skip


# ---- evaluate --study: a suggestion measured in its study, end to end on a tiny BERT ----------
def test_evaluate_study_measures_a_configuration_as_a_new_trial(
    tiny_checkpoint, tmp_path, monkeypatch, capsys
):
    """`search` (tpe, then grid), then the command `recommend` suggests: the configuration runs
    as one more trial of the study (past its target), with the study's recipe, data, device and
    throughput timing, tracked under its MLflow run. What the study does not hold is refused."""
    import yaml
    from conftest import GLUE_DIR
    from test_search import AT_CHANCE, TINY_RECIPE, TP_ARGS

    from autoprumux.config import Candidate
    from autoprumux.meta._recommend import evaluate_command

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = {
        "name": "tiny",
        "task": "sst2",
        "model": tiny_checkpoint,
        "recipe": TINY_RECIPE,
        "params": {
            "sparsity": {"choices": [0.0, 0.3]},
            "mux": {"choices": [1, 2]},
            "precision": {"choices": ["fp32", "int8"]},
        },
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(spec))
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    wanted = Candidate(sparsity=0.3, precision="int8")
    for sampler in ("tpe", "grid"):
        study = f"tiny-{sampler}"
        argv = ["search", "--space", "space.yaml", "--trials", "1", "--budget", "50"]
        argv += ["--sampler", sampler, "--study-name", study, "--storage", storage]
        argv += ["--data-dir", str(GLUE_DIR), "--cache-dir", "cache", "--no-register", *TP_ARGS]
        argv += AT_CHANCE
        assert main(argv) == 0
        capsys.readouterr()
        command = evaluate_command(wanted, study, storage)
        assert command.startswith(f"autoprumux evaluate --study {study} --storage ")
        # from another directory: the study's data and cache paths were recorded absolute
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(exist_ok=True)
        monkeypatch.chdir(elsewhere)
        assert main([*shlex.split(command)[1:], "--json", "out.json"]) == 0, capsys.readouterr()
        out = capsys.readouterr().out
        monkeypatch.chdir(tmp_path)
        st = optuna.load_study(study_name=study, storage=storage)
        trials = st.get_trials()
        assert len(trials) == 2, sampler  # one more than the target of 1: it never stands down
        t = trials[-1]
        assert t.state.name == "COMPLETE" and Candidate.from_dict(t.user_attrs["config"]) == wanted
        assert f"trial 1, {wanted.describe()}: COMPLETE" in out and "speedup" in out
        assert t.user_attrs["machine"] == this_machine("cpu").to_dict()
        run = tracking.client(st.user_attrs["tracking_uri"]).get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == st.user_attrs["mlflow_parent_run_id"]
        assert run.data.params["precision"] == "int8" and "speedup" in run.data.metrics
        assert run.data.params["machine_key"] == this_machine("cpu").key
        record = json.loads((elsewhere / "out.json").read_text())
        assert record["trial"] == 1 and record["speedup"] == pytest.approx(t.user_attrs["speedup"])
        assert not (elsewhere / "cache").exists()  # the study's cache was used
    head = ["evaluate", "--study", "tiny-grid", "--storage", storage]
    for argv, message in (
        (["--sparsity", "0.5", "--mux", "1"], "its sparsity 0.5 is not one of [0.0, 0.3]"),
        (["--sparsity", "0", "--mux", "4"], "its mux 4 is not one of [1, 2]"),
        (["--sparsity", "0", "--mux", "2", "--device", "cuda"], "--device given beside --study"),
        (["--sparsity", "0", "--mux", "2", "--finetune-steps", "3"], "--finetune-steps given"),
        (["--students", "2"], "its technique 'students' is not one of ['prumux']"),
        (["--sparsity", "0", "--study", "nope"], "no study 'nope'"),
    ):
        assert main([*head, *argv]) == 2, argv
        assert message in capsys.readouterr().err, argv
    monkeypatch.setattr(
        "autoprumux.evaluation.this_machine", lambda d="cpu": other_machine(threads=999)
    )
    assert main([*head, "--sparsity", "0.3", "--mux", "2"]) == 2
    err = capsys.readouterr().err
    assert "another machine or code version: threads: " in err and "--study-name NEW" in err
    assert len(optuna.load_study(study_name="tiny-grid", storage=storage).get_trials()) == 2
