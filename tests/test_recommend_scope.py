"""`recommend`, the served recommender and `search --export` answer for one (task, model,
device) and one machine: several are refused with the choices listed, never resolved by a
silent pick; figures from two machines are never averaged; the suggestion's command measures the
configuration as a new trial of its study.

The stores are Optuna studies written directly (user attributes as a search records them), so
no training runs."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from autoprumux.cli import main
from autoprumux.config import Candidate
from autoprumux.errors import ConfigError
from autoprumux.evaluation import _machine
from autoprumux.evaluation._machine import Machine
from autoprumux.meta import Recommender, build_recommender
from autoprumux.meta._recommend import RECOMMENDER_FORMAT, evaluate_command
from autoprumux.serving._pyfunc import OUTPUT_COLUMNS, RecommenderModel, input_example
from autoprumux.tracking import default_storage

DESCRIPTORS = {
    "task_num_labels": 2,
    "task_pair": 0,
    "task_mcc": 0,
    "task_log_train": math.log(8000),
    "model_layers": 6,
    "model_hidden": 384,
    "model_log_params": math.log(1.8e7),
    "device_cuda": 0,
}
A = Machine(
    cpu="CPU A",
    cpu_id="family 6 model 85",
    isa=("avx2", "avx512_vnni"),
    threads=2,
    gpu=None,
    torch="2.5.0",
    autoprumux="0.1.0",
)
B = replace(A, cpu="CPU B", cpu_id="family 25 model 1", isa=("avx2",))


def add_study(
    url: str,
    name: str,
    task: str,
    rows: list[tuple[Candidate, float, float, Machine | None]],
    *,
    device: str = "cpu",
    model: str = "minilm",
    machine: Machine | None = None,
) -> None:
    """A finished study as a search records it: (config, loss, speedup, trial's machine)."""
    st = optuna.create_study(study_name=name, storage=url, direction="maximize")
    attrs = {
        "space": {"name": "prumux"},
        "task": task,
        "model": model,
        "device": device,
        "descriptors": {**DESCRIPTORS, "device_cuda": int(device == "cuda")},
    }
    if machine is not None:
        attrs["machine"] = machine.to_dict()
    for k, v in attrs.items():
        st.set_user_attr(k, v)
    for cfg, loss, speedup, m in rows:
        ua = {
            "config": cfg.to_dict(),
            "accuracy_loss": loss,
            "speedup": speedup,
            "baseline_metric": 85.0,
        }
        if m is not None:
            ua["machine"] = m.to_dict()
        st.add_trial(optuna.trial.create_trial(value=speedup, user_attrs=ua))


def sparsity_rows(points, machine: Machine | None = A):
    return [(Candidate(sparsity=s, mux=1), loss, sp, machine) for s, loss, sp in points]


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory):
    """SST-2 on the CPU (3 configurations), SST-2 on CUDA (2), MRPC on the CPU (5: the most,
    which the old rule answered with)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('mixed') / 'studies.db'}"
    add_study(
        url, "sst2-cpu", "sst2", sparsity_rows([(0.3, 0.4, 1.4), (0.5, 1.2, 2.0), (0.7, 4.0, 3.0)])
    )
    add_study(
        url, "sst2-cuda", "sst2", sparsity_rows([(0.3, 0.3, 1.2), (0.5, 1.1, 1.6)]), device="cuda"
    )
    add_study(
        url,
        "mrpc-cpu",
        "mrpc",
        sparsity_rows([(0.2, 0.5, 1.2), (0.4, 1.0, 1.5), (0.5, 1.8, 1.9), (0.6, 3.0, 2.4), (0.8, 9.0, 3.5)]),
    )  # fmt: skip
    return url, build_recommender(url)


def test_several_tasks_or_devices_are_refused_with_the_flags_that_pick_one(mixed_store, capsys):
    url, rec = mixed_store
    with pytest.raises(ConfigError) as e:
        rec.recommend(2.0)
    msg = str(e.value)
    assert "3 (task, model, device)" in msg
    for part in ("(mrpc, minilm, cpu)", "(sst2, minilm, cpu)", "(sst2, minilm, cuda)"):
        assert part in msg
    assert "--task" in msg and "--device" in msg and "--study" in msg
    # a CUDA user does not get the CPU study's answer, nor the other way round
    with pytest.raises(ConfigError, match=r"2 \(task, model, device\).*sst2-cpu.*sst2-cuda"):
        rec.recommend(2.0, "sst2")
    cuda = rec.recommend(2.0, "sst2", device="cuda")
    assert (cuda.task, cuda.device, cuda.study, cuda.speedup) == ("sst2", "cuda", "sst2-cuda", 1.6)
    cpu = rec.recommend(2.0, "sst2", device="cpu")
    assert (cpu.study, cpu.sparsity, cpu.speedup) == ("sst2-cpu", 0.5, 2.0)
    assert rec.recommend(2.0, study="mrpc-cpu").task == "mrpc"
    assert rec.recommend(2.0, model="mini", task="mrpc").study == "mrpc-cpu"
    # the command line: exit 2 with the same message, and --study picks one
    assert main(["recommend", "--budget", "2", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "--task, --model, --device or --study" in err
    assert main(["recommend", "--budget", "2", "--storage", url, "--study", "sst2-cuda"]) == 0
    out = capsys.readouterr().out
    assert "on sst2 (minilm, cuda)" in out and "measured on CPU A" in out


def test_the_served_model_takes_task_model_and_device_and_refuses_an_ambiguous_row(mixed_store):
    _, rec = mixed_store
    served = RecommenderModel(rec)
    with pytest.raises(MlflowException) as e:
        served.predict(None, pd.DataFrame({"budget": [2.0]}))
    msg = e.value.message
    assert msg.startswith("row 0: ") and "3 (task, model, device)" in msg
    assert '"task"' in msg and '"device"' in msg and "--task" not in msg
    with pytest.raises(MlflowException, match="sst2-cpu.*sst2-cuda"):
        served.predict(None, pd.DataFrame({"budget": [2.0], "task": ["sst2"]}))
    out = served.predict(
        None, pd.DataFrame({"budget": [2.0, 2.0], "task": ["sst2", "mrpc"], "device": ["cuda", None]})
    )  # fmt: skip
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    assert list(out["study"]) == ["sst2-cuda", "mrpc-cpu"]
    assert list(out["machine_key"]) == [A.key, A.key]
    # the input example names the columns a client of a mixed store must send, and is answered
    example = input_example(rec)
    assert {"budget", "task", "model", "device"} <= set(example.columns)
    assert len(served.predict(None, example)) == 1


@pytest.fixture(scope="module")
def machines_store(tmp_path_factory):
    """One SST-2 study resumed on a second machine: s=0.5 ran 2.8x on A and 1.4x on B; one of
    A's trials predates trials recording their machine (its study records A). A CoLA study
    from before studies recorded machines."""
    url = f"sqlite:///{tmp_path_factory.mktemp('machines') / 'studies.db'}"
    rows = [
        *sparsity_rows([(0.3, 0.3, 1.5), (0.5, 0.8, 2.8)], A),
        *sparsity_rows([(0.5, 0.8, 2.6)], None),  # recorded no machine: its study's, A
        *sparsity_rows([(0.3, 0.3, 1.2), (0.5, 0.9, 1.4)], B),
    ]
    add_study(url, "resumed", "sst2", rows, machine=A)
    add_study(url, "old-cola", "cola", sparsity_rows([(0.3, 0.5, 1.3), (0.5, 2.0, 1.8)], None))
    return url, build_recommender(url)


def _here(machine: Machine):
    return lambda device="cpu": machine


def test_two_machines_figures_are_never_averaged(machines_store, monkeypatch, capsys):
    url, rec = machines_store
    on_b = rec.recommend(2.0, "sst2", machine=B.key)
    assert (on_b.sparsity, on_b.speedup, on_b.measured.repeats) == (0.5, 1.4, 1)
    assert on_b.machine_key == B.key and on_b.machine == B.describe()
    on_a = rec.recommend(2.0, "sst2", machine=A.key)
    # A's two trials (one recorded its machine, one its study's) and nothing of B's
    assert on_a.speedup == pytest.approx(2.7) and on_a.measured.repeats == 2
    assert "mean of 2 trials" in on_a.describe()
    assert f"measured on {A.describe()} (machine {A.key}, study resumed)" in on_a.describe()
    # none chosen: this machine's, when it is one of them
    monkeypatch.setattr(_machine, "this_machine", _here(B))
    assert rec.recommend(2.0, "sst2") == on_b
    monkeypatch.setattr(_machine, "this_machine", _here(replace(A, threads=64)))
    with pytest.raises(ConfigError) as e:
        rec.recommend(2.0, "sst2")
    msg = str(e.value)
    assert f"{A.key}: {A.describe()}" in msg and f"{B.key}: {B.describe()}" in msg
    assert "none of them this one" in msg and "--machine KEY" in msg
    # a prediction does not depend on the machine: no refusal
    med, _, _ = rec.predict([Candidate(sparsity=0.4, mux=1)], "sst2")
    assert med.shape == (1, 2)
    # the command line: exit 2 with the machines listed, --machine picks one
    assert main(["recommend", "--budget", "2", "--storage", url, "--task", "sst2"]) == 2
    assert B.key in capsys.readouterr().err
    assert (
        main(["recommend", "--budget", "2", "--storage", url, "--machine", B.key, "--task", "sst2"])
        == 0
    )
    assert "speedup 1.40x" in capsys.readouterr().out
    # a study from before machines were recorded answers from the unknown machine
    old = rec.recommend(50.0, "cola")
    assert old.machine_key == "unknown" and "unknown machine" in old.describe()
    # the served model never takes its own machine for the client's
    monkeypatch.setattr(_machine, "this_machine", _here(A))
    served = RecommenderModel(rec)
    with pytest.raises(MlflowException, match='2 machines.*"machine" column'):
        served.predict(None, pd.DataFrame({"budget": [2.0], "task": ["sst2"]}))
    out = served.predict(
        None, pd.DataFrame({"budget": [2.0], "task": ["sst2"], "machine": [B.key]})
    )
    assert (out["speedup"][0], out["machine_key"][0]) == (1.4, B.key)
    assert input_example(rec)["machine"][0] in (A.key, B.key)


def test_the_stored_recommender_keeps_the_machines_and_refuses_an_older_format(machines_store):
    _, rec = machines_store
    d = json.loads(json.dumps(rec.to_dict()))
    assert d["format"] == RECOMMENDER_FORMAT == "autoprumux.recommender/5"
    again = Recommender.from_dict(d)
    for key in (A.key, B.key):
        assert again.recommend(2.0, "sst2", machine=key) == rec.recommend(2.0, "sst2", machine=key)
    # a /4 recommender (no chosen_on, no validation losses) chose on dev, and says so
    old = {
        **d,
        "format": "autoprumux.recommender/4",
        "entries": [
            {
                **{k: v for k, v in e.items() if k != "chosen_on"},
                "measured": [
                    {k: v for k, v in m.items() if k not in ("selection_loss", "validation_loss")}
                    for m in e["measured"]
                ],
            }
            for e in d["entries"]
        ],
    }
    answer = Recommender.from_dict(old).recommend(2.0, "sst2", machine=A.key)
    assert answer.chosen_on == "dev (no validation loss recorded)"
    assert "(chosen on dev: no validation loss recorded" in answer.describe()
    with pytest.raises(ValueError, match="not a autoprumux.recommender/5"):
        Recommender.from_dict({**d, "format": "autoprumux.recommender/3"})
    no_machine = {
        **d,
        "entries": [{k: v for k, v in d["entries"][0].items() if k != "machine_key"}],
    }
    with pytest.raises(ValueError, match="machine_key"):
        Recommender.from_dict(no_machine)


def test_the_suggestion_measures_the_configuration_as_a_new_trial_of_its_study(tmp_path):
    late = Candidate(sparsity=0.5, mux=2, mux_layers=2, mux_combiner="concat", precision="int8")
    url = f"sqlite:///{tmp_path / 'my studies.db'}"
    assert evaluate_command(late, "prumux-sst2", url) == (
        f"autoprumux evaluate --study prumux-sst2 --storage '{url}' --sparsity 0.5 --mux 2 "
        "--mux-variant gaussian --mux-layers 2 --mux-combiner concat --precision int8"
    )
    students = Candidate(technique="students", students=3, student_depth=1)
    assert evaluate_command(students, "combined", default_storage()) == (
        "autoprumux evaluate --study combined --students 3 --student-depth 1"
    )
    assert evaluate_command(Candidate(sparsity=0.4, mux=1), "a b") == (
        "autoprumux evaluate --study 'a b' --sparsity 0.4 --mux 1 --mux-variant gaussian"
    )


def test_a_recommendations_suggestion_names_its_study_and_storage(tmp_path):
    from test_search_space import _issue_trials

    url = f"sqlite:///{tmp_path / 'other.db'}"
    rec = Recommender(_issue_trials(), storage=url)
    suggestions = [r.suggestion for b in (2.0, 20.0, 50.0) if (r := rec.recommend(b)).suggestion]
    assert suggestions, "the issue's trials leave something worth measuring"
    for sg in suggestions:
        assert sg.command.startswith(f"autoprumux evaluate --study s --storage {url} --sparsity ")
        assert "--task" not in sg.command


def test_search_export_answers_for_the_study_just_run_on_this_machine(
    machines_store, monkeypatch, capsys, tmp_path
):
    """`search --export` prints the recommendation of the study it ran, from this machine's
    trials, and the `recommend` command that gives it again names the study."""
    import autoprumux.export as export
    from autoprumux.cli._search import _export_recommendation

    url, _ = machines_store
    monkeypatch.setattr(_machine, "this_machine", _here(B))
    chosen = {}

    def from_budget(storage, study, budget):
        chosen.update(storage=storage, study=study, budget=budget)
        return SimpleNamespace(config=Candidate(sparsity=0.5, mux=1), source=None)

    measurement = SimpleNamespace(
        metric_name="accuracy", metric_label="accuracy", metric=84.0, accuracy_loss=0.9, speedup=1.4
    )
    monkeypatch.setattr(export, "from_budget", from_budget)
    monkeypatch.setattr(
        export,
        "export_model",
        lambda *a, **kw: SimpleNamespace(
            path=tmp_path / "out", manifest=SimpleNamespace(measurement=measurement)
        ),
    )
    searcher = SimpleNamespace(
        name="resumed",
        storage_url=url,
        tracking_uri=None,
        s=SimpleNamespace(budget=2.0, throughput=None),
        pipeline=lambda variant: None,
    )
    args = SimpleNamespace(export=str(tmp_path / "out"), no_register=True, argv=[])
    _export_recommendation(args, searcher)
    out = capsys.readouterr().out
    assert "budget 2 pts on sst2" in out and "speedup 1.40x" in out
    assert f"machine {B.key}, study resumed" in out
    assert chosen == {"storage": url, "study": "resumed", "budget": 2.0}
    assert f"autoprumux recommend --study resumed --storage {url} --budget 2" in out
