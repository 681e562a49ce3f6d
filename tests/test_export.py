"""`autoprumux export`, `autoprumux.load` and `autoprumux predict` on tiny random BERTs: an
exported directory predicts exactly what the pipeline predicts (N=1 and N>1, pruned or not,
int8), bad input is refused before any work, the loader needs no search stack, and the
registered pyfunc serves over HTTP."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import GLUE_DIR as DATA
from conftest import pipelines_per_task
from test_search import TINY_RECIPE as SEARCH_RECIPE
from test_search import TP, TP_ARGS

import autoprumux
from autoprumux import Candidate, PruMuxPipeline, Recipe
from autoprumux.cli import main
from autoprumux.deploy import CALIBRATION_FILE, MANIFEST_FILE, read_manifest
from autoprumux.export import export_model, from_budget
from autoprumux.training import predict

# as test_search's recipe, with students: seconds per stage on the tiny model
TINY_RECIPE = {**SEARCH_RECIPE, "student_steps": 2, "student_stacking_steps": 2}
STUDY = "tiny-export"
# the search stack the loader must not import
HEAVY = ("optuna", "mlflow", "lightgbm")
HEAVY_OWN = ("pipeline", "search", "meta", "serving", "tracking", "export", "training")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("export_cache")


@pytest.fixture(scope="module")
def pipes(tiny_checkpoint, cache):
    """One pipeline per task over the tiny checkpoint, sharing a cache."""
    return pipelines_per_task(tiny_checkpoint, Recipe(**TINY_RECIPE), cache)


@pytest.fixture(scope="module")
def exports(pipes, tmp_path_factory):
    """Export directories, one per (task, configuration), made once per module."""
    made: dict[tuple[str, Candidate], Path] = {}
    root = tmp_path_factory.mktemp("exports")

    def get(task: str, config: Candidate) -> Path:
        key = (task, config)
        if key not in made:
            out = root / f"{task}-{len(made)}"
            export_model(pipes(task), config, out, throughput=TP, command="pytest")
            made[key] = out
        return made[key]

    return get


def _texts(pipe: PruMuxPipeline) -> list:
    return [(e.text_a, e.text_b) if pipe.task.pair else e.text_a for e in pipe.data.dev]


def _pipeline_probs(model, items, batch_size: int) -> torch.Tensor:
    return torch.softmax(predict(model, items, batch_size=batch_size), dim=-1)


ROUND_TRIPS = [
    ("sst2", 0.0, 1, "fp32"),
    ("sst2", 0.5, 1, "fp32"),
    ("sst2", 0.5, 2, "fp32"),
    ("sst2", 0.5, 1, "int8"),
    ("sst2", 0.5, 2, "int8"),
    ("mrpc", 0.5, 2, "fp32"),  # text pairs
]


@pytest.mark.parametrize(
    "task,sparsity,n,precision", ROUND_TRIPS, ids=["-".join(map(str, r)) for r in ROUND_TRIPS]
)
def test_a_loaded_export_predicts_what_the_pipeline_predicts(
    pipes, exports, task, sparsity, n, precision
):
    pipe = pipes(task)
    config = Candidate(sparsity=sparsity, mux=n, precision=precision)
    pred = autoprumux.load(exports(task, config))
    assert (pred.n, pred.pair, pred.label_names) == (n, pipe.task.pair, pipe.data.task.label_names)
    model = pipe.converted(pipe.trained(config), precision)  # what `evaluate` scores
    texts = _texts(pipe)
    # the whole dev set in file order (groups of N alike: the predictor batches whole groups),
    # and 7 inputs: an incomplete last group, padded with dummy rows
    for k in (len(texts), 7):
        got = pred.predict(texts[:k])
        want = _pipeline_probs(model, pipe.dev_items[:k], pred.batch_size)
        assert got.label_ids == want.argmax(-1).tolist()
        assert got.labels == [pipe.data.task.label_names[i] for i in got.label_ids]
        torch.testing.assert_close(torch.tensor(got.probabilities), want, atol=1e-5, rtol=0)
    if n > 1:
        # the pipeline's dev metric of one pairing, reproduced through the predictor on the
        # same order of the dev set (see evaluation.paired_dev_metrics)
        items, gold = pipe.dev_items, [x.label for x in pipe.dev_items]
        canonical = sorted(
            range(len(items)), key=lambda i: (items[i].input_ids, items[i].token_type_ids, gold[i])
        )
        g = torch.Generator().manual_seed(0)
        order = torch.tensor(canonical)[torch.randperm(len(canonical), generator=g)].tolist()
        labels = pred.predict([texts[i] for i in order]).label_ids
        accuracy = 100 * sum(p == gold[i] for p, i in zip(labels, order, strict=True)) / len(gold)
        assert accuracy == pytest.approx(pipe.dev_metrics(model, pairings=1)["accuracy"])


def test_students_export_and_predict_like_the_pipeline(pipes, exports):
    pipe = pipes("sst2")
    config = Candidate(technique="students", students=2, student_depth=1, precision="int8")
    pred = autoprumux.load(exports("sst2", config))
    model = pipe.converted(pipe.students(2, 1), "int8")
    got = pred.predict(_texts(pipe))
    want = _pipeline_probs(model, pipe.dev_items, pred.batch_size)
    assert got.label_ids == want.argmax(-1).tolist()
    torch.testing.assert_close(torch.tensor(got.probabilities), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("technique", ["prumux", "students"])
def test_an_int8_exports_labels_do_not_depend_on_the_batch_or_the_order(pipes, exports, technique):
    """Through `load(DIR).predict`, batch 1, 16 and 64, in file order and shuffled: every text
    gets the same label and probabilities (to fp32 rounding), and so the same dev score."""
    pipe = pipes("sst2")
    config = (
        Candidate(technique="students", students=2, student_depth=1, precision="int8")
        if technique == "students"
        else Candidate(sparsity=0.5, precision="int8")
    )
    d = exports("sst2", config)
    texts = _texts(pipe)
    runs = []
    for batch in (1, 16, 64):
        pred = autoprumux.load(d, batch_size=batch)
        for seed in (None, batch):
            order = list(range(len(texts)))
            if seed is not None:
                order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed))
                order = order.tolist()
            got = pred.predict([texts[i] for i in order])
            probs = torch.empty(len(texts), len(pred.label_names))
            probs[order] = torch.tensor(got.probabilities)
            runs.append(probs)
    for r in runs[1:]:
        assert torch.equal(r.argmax(-1), runs[0].argmax(-1))
        torch.testing.assert_close(r, runs[0], atol=1e-5, rtol=0)


def test_the_directory_holds_everything_needed_to_rebuild_the_model(pipes, exports):
    config = Candidate(sparsity=0.5, mux=2, precision="int8")
    d = exports("sst2", config)
    names = {p.name for p in d.iterdir()}
    assert {"model.safetensors", "autoprumux_config.json", MANIFEST_FILE, "README.md"} <= names
    assert CALIBRATION_FILE in names  # the int8 input ranges the export was measured with
    assert "tokenizer_config.json" in names
    arch = json.loads((d / "autoprumux_config.json").read_text())
    pruned = pipes("sst2").trained(config).encoder.config
    assert arch["encoder"]["heads"] == list(pruned.heads) and arch["encoder"]["ffn"] == list(
        pruned.ffn
    )
    assert arch["mux"]["n"] == 2 and arch["mux"]["variant"] == "gaussian"
    raw = json.loads((d / MANIFEST_FILE).read_text())
    assert raw["label_names"] == ["negative", "positive"]
    assert raw["max_seq_len"] == 32 and raw["config"]["precision"] == "int8"
    # int8 is stored as fp32 weights and converted when loaded
    from safetensors.torch import load_file

    weights = load_file(str(d / "model.safetensors")).values()
    assert all(t.dtype == torch.float32 for t in weights if t.is_floating_point())
    assert autoprumux.load(d, precision="fp32").model is not None
    card = (d / "README.md").read_text()
    assert "int8 (stored in fp32, converted when loaded)" in card


def _cli_export(cache, *args: str) -> int:
    return main(
        [
            "export",
            *args,
            "--data-dir",
            str(DATA),
            "--cache-dir",
            str(cache),
            *TP_ARGS,
        ]
    )


def test_cli_export_writes_the_model_card(tiny_checkpoint, cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "model"
    argv = ["--out", str(out), "--sparsity", "0.5", "--mux", "1", "--model", tiny_checkpoint]
    recipe = ["--max-train-examples", "64", "--batch-size", "16", "--max-seq-len", "32"]
    recipe += ["--finetune-steps", "2", "--recovery-steps", "2", "--prune-stages", "1"]
    assert _cli_export(cache, *argv, *recipe, "--no-register") == 0
    m = read_manifest(out)
    card = (out / "README.md").read_text()
    r = m.measurement
    assert "| sparsity (target / measured) | 0.5 / " in card
    assert "| N, inputs per forward pass | 1 (no multiplexing) |" in card
    assert f"| this model | {r.metric:.2f} |" in card and f"{r.speedup:.2f}x |" in card
    assert f"| baseline (N=1, sparsity 0, fp32) | {r.baseline_metric:.2f} |" in card
    assert "attention heads kept per layer" in card and "FFN units kept per layer" in card
    assert f"torch: {torch.__version__}" in card and "- cpu: " in card
    assert f"Exported {m.created} by `autoprumux export --out " in card  # the date (UTC)
    assert dt.datetime.fromisoformat(m.created).tzinfo is not None
    assert "`autoprumux export --out " in card and "--sparsity 0.5" in m.command
    assert "`negative`, `positive`" in card and "at most 32 tokens" in card
    assert not (tmp_path / "mlruns").exists()  # --no-register
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary directory left
    # --force replaces an earlier export, whole
    assert _cli_export(cache, *argv, *recipe, "--no-register", "--force") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert read_manifest(out).created >= m.created


@pytest.fixture(scope="module")
def study(pipes, tmp_path_factory):
    """A study in a SQLite storage with the attributes a search records: two measured
    configurations (the measurements made up) and a failed trial."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from autoprumux.search import SearchSpace

    pipe = pipes("sst2")
    storage = f"sqlite:///{tmp_path_factory.mktemp('study') / 'study.db'}"
    space = SearchSpace.from_dict(
        {
            "name": "tiny",
            "task": "sst2",
            "model": pipe.base.name,
            "recipe": TINY_RECIPE,
            "params": {
                "sparsity": {"low": 0.0, "high": 0.5, "step": 0.5},
                "mux": {"choices": [1, 2]},
            },
        }
    )
    st = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    for k, v in {
        "space": space.to_dict(),
        "task": "sst2",
        "model": pipe.model_id,
        "device": "cpu",
        "descriptors": pipe.descriptors(),
        "candidates": [c.to_dict() for c in space.grid()],
    }.items():
        st.set_user_attr(k, v)
    for config, loss, speedup in (
        (Candidate(sparsity=0.5, mux=1), 1.0, 1.8),
        (Candidate(sparsity=0.5, mux=2), 3.0, 2.5),
    ):
        attrs = {"config": config.to_dict(), "accuracy_loss": loss, "speedup": speedup}
        st.add_trial(create_trial(state=TrialState.COMPLETE, value=speedup, user_attrs=attrs))
    failed = {"config": Candidate(mux=2).to_dict()}
    st.add_trial(create_trial(state=TrialState.FAIL, user_attrs=failed))
    return storage


def test_export_from_a_study_trial_and_budget(study, cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["--study", STUDY, "--storage", study]
    # registered in the default store here (mlruns/mlflow.db) as autoprumux-<task>
    assert _cli_export(cache, "--out", "t0", *common, "--trial", "0") == 0
    m = read_manifest(tmp_path / "t0")
    from mlflow.tracking import MlflowClient

    cl = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (version,) = cl.search_model_versions("name='autoprumux-sst2'")
    run = cl.get_run(version.run_id)
    assert run.data.params["sparsity"] == "0.5" and run.data.tags["autoprumux.source.trial"] == "0"
    assert run.data.metrics["speedup"] == pytest.approx(m.measurement.speedup)
    common.append("--no-register")
    assert (m.config, m.source.kind, m.source.trial) == (
        Candidate(sparsity=0.5, mux=1),
        "trial",
        0,
    )
    assert m.max_seq_len == 32  # the study's recipe
    # within 2 points: trial 0 (loss 1.0); within 50: the faster trial 1 (N=2)
    choice = from_budget(study, STUDY, 2.0)
    assert (choice.config, choice.source.trial, choice.source.budget) == (m.config, 0, 2.0)
    assert _cli_export(cache, "--out", "b50", *common, "--budget", "50") == 0
    m = read_manifest(tmp_path / "b50")
    assert (m.source.kind, m.source.trial, m.config) == (
        "budget",
        1,
        Candidate(sparsity=0.5, mux=2),
    )
    assert m.source.recorded == {"accuracy_loss": 3.0, "speedup": 2.5}
    card = (tmp_path / "b50" / "README.md").read_text()
    assert f"the recommendation of study `{STUDY}` within 50 accuracy-loss points (trial 1)" in card
    assert "Recorded by the study for this configuration: accuracy loss 3.00 points" in card


REFUSED = [
    (["--out", "full"], "exists and is not empty; pass --force"),
    (["--out", "full", "--force", "--sparsity", "0.5"], "not an autoprumux export"),
    (["--out", "new"], "say what to export"),
    (["--out", "new", "--sparsity", "1.5"], "sparsity"),
    (["--out", "new", "--mux", "0"], "mux width N"),
    (["--out", "new", "--trial", "0"], "give --study NAME"),
    (["--out", "new", "--students", "2", "--mux", "2"], "give --students or --sparsity/--mux"),
    (["--out", "new", "--students", "20"], "students K (20)"),
    (["--out", "new", "--study", "nope", "--trial", "0"], "no study 'nope'"),
    (["--out", "new", "--study", STUDY], "give one of --trial N or --budget B"),
    (["--out", "new", "--study", STUDY, "--trial", "9"], f"study '{STUDY}' has no trial 9"),
    (["--out", "new", "--study", STUDY, "--trial", "2"], "trial 2 of study 'tiny-export' is FAIL"),
    (["--out", "new", "--study", STUDY, "--budget", "0.5"], "no configuration measured"),
    (["--out", "new", "--study", STUDY, "--budget", "abc"], "not a number"),
    (["--out", "new", "--study", STUDY, "--budget", "1", "--margin-se", "4"], "between 0 and 3"),
    (["--out", "new", "--study", STUDY, "--trial", "0", "--margin-se", "2"], "applies to --budget"),
    (["--out", "new", "--sparsity", "0.5", "--margin-se", "2"], "choose from a study"),
    (["--out", "new", "--study", STUDY, "--trial", "0", "--mux", "2"], "--mux do not apply"),
    (["--out", "new", "--sparsity", "0.5", "--precision", "bf16"], "not offered on cpu"),
    (["--out", "new", "--sparsity", "0.5", "--registered-name", "a/b"], "registered model name"),
    (["--out", "new", "--sparsity", "0.5", "--tracking-uri", "ftp://x"], "unknown scheme"),
]


@pytest.mark.parametrize("argv,message", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_export_refuses_bad_input_before_any_work(
    study, tmp_path, monkeypatch, capsys, argv, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    storage = ["--storage", study] if "--study" in argv else []
    assert main(["export", *argv, *storage, "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.startswith("autoprumux: error: ") and err.count("\n") == 1, err
    # nothing written: no export, no cache, no MLflow store, the full directory untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]


def test_load_needs_neither_the_search_stack_nor_mlflow(exports):
    d = exports("sst2", Candidate(sparsity=0.5, mux=2))
    code = (
        "import json, sys, autoprumux\n"
        f"p = autoprumux.load({str(d)!r})\n"
        "out = p.predict(['a fine film', 'dull', 'bright'])\n"
        "assert len(out) == 3 and set(out.labels) <= {'negative', 'positive'}\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded = json.loads(r.stdout.strip().splitlines()[-1])
    bad = [
        m
        for m in loaded
        if m.split(".")[0] in HEAVY or m.split(".")[:2] in (["autoprumux", x] for x in HEAVY_OWN)
    ]
    assert not bad, bad


def test_predictor_refuses_wrong_inputs(exports):
    from autoprumux.errors import ConfigError

    single = autoprumux.load(exports("sst2", Candidate()))
    pairs = autoprumux.load(exports("mrpc", Candidate(sparsity=0.5, mux=2)))
    with pytest.raises(ConfigError, match="wrap a single text in a list"):
        single.predict("one text")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="input 1: task sst2 classifies single texts"):
        single.predict(["ok", ("a", "b")])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="input 0: task mrpc classifies pairs"):
        pairs.predict(["no pair"])
    assert len(single.predict([])) == 0
    with pytest.raises(ConfigError, match="not an exported autoprumux model"):
        autoprumux.load(exports("sst2", Candidate()).parent)


def _write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> None:
    with open(path, "w", newline="") as f:
        w = (
            csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None)
            if delimiter == "\t"
            else csv.writer(f)
        )
        w.writerow(header)
        w.writerows(rows)


def test_predict_cli_scores_a_file(pipes, exports, tmp_path, capsys):
    d = exports("sst2", Candidate(sparsity=0.5, mux=2))
    pipe = pipes("sst2")
    dev = pipe.data.dev[:9]  # an incomplete last group of N=2
    texts = [e.text_a for e in dev]
    want = autoprumux.load(d).predict(texts)
    src = tmp_path / "in.csv"
    _write_csv(src, ["id", "text", "label"], [[str(i), t, "x"] for i, t in enumerate(texts)])
    out = tmp_path / "out.csv"
    # the input's own label column is never overwritten
    assert main(["predict", str(d), "--input", str(src), "--output", str(out)]) == 2
    assert "already has the column 'label'" in capsys.readouterr().err and not out.exists()
    argv = ["predict", str(d), "--input", str(src), "--output", str(out)]
    assert main([*argv, "--output-prefix", "pred_"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["text"] for r in rows] == texts and [r["label"] for r in rows] == ["x"] * 9
    assert [r["pred_label"] for r in rows] == want.labels
    for r, p in zip(rows, want.probabilities, strict=True):
        assert float(r["pred_probability_negative"]) == pytest.approx(p[0], abs=1e-6)
        assert float(r["pred_probability"]) == pytest.approx(max(p), abs=1e-6)
    # JSONL in, TSV out, the text column renamed
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"sentence": t, "n": i}) + "\n" for i, t in enumerate(texts)))
    argv = ["predict", str(d), "--input", str(src), "--output", str(tmp_path / "out.tsv")]
    assert main([*argv, "--text-column", "sentence"]) == 0
    tsv = list(csv.reader((tmp_path / "out.tsv").open(), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert tsv[0] == ["sentence", "n", "label", "probability"] + [
        "probability_negative",
        "probability_positive",
    ]
    assert [r[2] for r in tsv[1:]] == want.labels
    # refused, with the flag that fixes it
    capsys.readouterr()
    assert main(argv) == 2
    assert "has no column 'text'" in capsys.readouterr().err
    assert main([*argv[:-1], str(tmp_path / "out.xlsx"), "--text-column", "sentence"]) == 2
    assert "unknown file type" in capsys.readouterr().err


def test_predict_cli_scores_pairs(pipes, exports, tmp_path):
    d = exports("mrpc", Candidate(sparsity=0.5, mux=2))
    dev = pipes("mrpc").data.dev[:5]
    want = autoprumux.load(d).predict([(e.text_a, e.text_b) for e in dev])
    src = tmp_path / "in.tsv"
    _write_csv(src, ["a", "b"], [[e.text_a, e.text_b] for e in dev], delimiter="\t")
    out = tmp_path / "out.jsonl"
    argv = ["predict", str(d), "--input", str(src), "--output", str(out)]
    assert main([*argv, "--text-column", "a", "--text-pair-column", "b"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["label"] for r in rows] == want.labels
    assert [r["a"] for r in rows] == [e.text_a for e in dev]


def test_the_registered_export_serves_over_http(exports, tmp_path):
    from test_search import _free_port, _post, _wait_http

    from autoprumux.export import register_export

    d = exports("sst2", Candidate(sparsity=0.5, mux=2))
    db = tmp_path / "mlflow.db"
    assert register_export(d, tracking_uri=f"sqlite:///{db}") == "models:/autoprumux-sst2/1"
    texts = ["a gripping film", "a dull, lifeless mess", "fine"]
    want = autoprumux.load(d).predict(texts)  # 3 inputs: the last one padded by a dummy
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{db}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/autoprumux-sst2/1"]
        + ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/ping", proc)
        code, body = _post(port, {"dataframe_records": [{"text": t} for t in texts]})
        assert code == 200, body
        preds = json.loads(body)["predictions"]
        assert [p["label"] for p in preds] == want.labels
        for p, w in zip(preds, want.probabilities, strict=True):
            assert p["probability_negative"] == pytest.approx(w[0], abs=1e-5)
        for bad in (
            {"dataframe_records": [{"txt": "wrong column"}]},
            {"dataframe_records": [{"text": None}]},
            {"nothing": 1},
            "not json",
        ):
            code, body = _post(port, bad)
            assert 400 <= code < 500, (bad, code, body)
            if bad == {"dataframe_records": [{"txt": "wrong column"}]}:
                assert "text" in body  # names the column it needs
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_cli_export_of_the_users_own_data_keeps_its_labels(tiny_checkpoint, cache, tmp_path):
    """--data works for export as for evaluate: the label names come from the file."""
    import random

    rng = random.Random(0)
    words = ["good", "bad", "fine", "dull", "great", "awful", "ok", "meh"]
    rows = [
        [" ".join(rng.choice(words) for _ in range(6)), rng.choice(["joy", "anger", "calm"])]
        for _ in range(120)
    ]
    data = tmp_path / "moods.csv"
    _write_csv(data, ["text", "label"], rows)
    out = tmp_path / "model"
    recipe = ["--max-train-examples", "64", "--batch-size", "16", "--max-seq-len", "32"]
    recipe += ["--finetune-steps", "2", "--recovery-steps", "2", "--prune-stages", "1"]
    argv = ["--out", str(out), "--data", str(data), "--sparsity", "0.5", "--model", tiny_checkpoint]
    assert _cli_export(cache, *argv, *recipe, "--no-register") == 0
    m = read_manifest(out)
    assert m.task == "moods" and m.label_names == ("anger", "calm", "joy")
    got = autoprumux.load(out).predict([r[0] for r in rows[:5]])
    assert set(got.labels) <= {"anger", "calm", "joy"} and len(got.labels) == 5
    # --data beside --task is refused, as for evaluate
    assert _cli_export(cache, *argv, "--task", "sst2", "--force", "--no-register") == 2
