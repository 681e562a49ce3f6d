"""F1's positive class (`--pos-label`, a space's `pos_label:`, `PruMuxPipeline(pos_label=...)`):
by default the minority class of the user's training data (GLUE tasks keep their label 1), named
with every result, and refused with one clear error where it cannot apply (an unknown class, a
metric other than f1, more than two classes)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import GLUE_DIR
from test_own_data import TINY_FLAGS, rows, write

from autoprumux.cli import main
from autoprumux.config import Candidate, Recipe
from autoprumux.data import DataSource, load_task_data
from autoprumux.errors import ConfigError
from autoprumux.evaluation._accuracy import task_metrics
from autoprumux.search import SearchSpace

FRAUD = (["fraud"] + ["ok"] * 9) * 20  # 200 rows, 10% fraud; "fraud" sorts first
TINY = Recipe(max_seq_len=32, batch_size=8)
PARAMS = {"sparsity": {"choices": [0.0]}, "mux": {"choices": [1]}}


class Always(torch.nn.Module):
    """A classifier that answers class `label` for every input."""

    def __init__(self, label: int):
        super().__init__()
        self.label = label

    def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN201
        out = torch.zeros(input_ids.shape[0], 2)
        out[:, self.label] = 1.0
        return out


def claims(tmp_path: Path, labels: list = FRAUD) -> DataSource:
    return DataSource(write(tmp_path / "claims.csv", rows(labels)))


# ---- scoring --------------------------------------------------------------------------------


def test_a_model_that_never_flags_fraud_scores_f1_zero(tmp_path, tiny_checkpoint):
    from autoprumux.pipeline import PruMuxPipeline

    cache = tmp_path / "cache"
    pipe = PruMuxPipeline(
        data=claims(tmp_path), metric="f1", model=tiny_checkpoint, recipe=TINY, cache_dir=cache
    )
    assert pipe.task.label_names == ("fraud", "ok")
    gold = Counter(ex.label for ex in pipe.data.dev)
    assert gold == {0: 2, 1: 18}  # the stratified dev split: 10% fraud
    never = pipe.dev_metrics(Always(1))  # "ok" for every claim
    # scored with label 1 ("ok") as positive this was 94.7 points
    assert never["metric"] == never["f1"] == 0.0
    assert never["mcc"] == 0.0 and never["accuracy"] == pytest.approx(90.0)
    always = pipe.dev_metrics(Always(0))  # every claim flagged: precision 0.1, recall 1
    assert always["metric"] == pytest.approx(100 * 2 * 0.1 / 1.1)
    assert pipe.task.pos_label == "fraud"


def test_the_default_positive_class_is_the_minority_of_train(tmp_path):
    def positive(labels: list, **kw) -> str | None:
        src = DataSource(write(tmp_path / f"d{len(list(tmp_path.iterdir()))}.csv", rows(labels)))
        return load_task_data(src, metric="f1", **kw).task.pos_label

    assert positive(FRAUD) == "fraud"  # sorts first, yet scored
    assert positive(["a"] * 10 + ["b"] * 30) == "a"
    assert positive([0] * 30 + [1] * 10) == "1"
    assert positive([1] * 30 + [0] * 10) == "0"  # integer labels too: the rare one
    assert positive(["neg", "pos"] * 20) == "pos"  # a tie: the later class, as before
    # a subsample of train does not move it (counted over all of train)
    assert positive(FRAUD, recipe=Recipe(max_train_examples=8, batch_size=8)) == "fraud"
    # no positive class without f1 over two classes
    src = claims(tmp_path)
    assert load_task_data(src).task.pos_label is None
    assert load_task_data(src, metric="mcc").task.pos_label is None
    three = DataSource(write(tmp_path / "three.csv", rows(["a", "b", "c"] * 10)))
    assert load_task_data(three, metric="f1").task.pos_label is None


def test_a_glue_task_keeps_its_label_1(tmp_path):
    data = load_task_data("mrpc", metric="f1", data_dir=GLUE_DIR)
    counts = Counter(ex.label for ex in data.train)
    assert counts[1] > counts[0]  # the paraphrase class is MRPC's majority ...
    assert data.task.positive == 1 and data.task.pos_label == "equivalent"  # ... and scored
    gold = [ex.label for ex in data.dev]
    logits = torch.nn.functional.one_hot(torch.tensor(gold[1:] + gold[:1]), 2).float()
    from sklearn.metrics import f1_score

    pred = logits.argmax(-1).tolist()
    got = task_metrics("f1", logits, gold, data.task.positive)["metric"]
    assert got == pytest.approx(100 * f1_score(gold, pred))  # GLUE's F1, as before
    assert load_task_data("mrpc", data_dir=GLUE_DIR).task.pos_label is None  # accuracy
    # named by its class name or its GLUE label
    for name, index in (("not_equivalent", 0), ("0", 0), ("equivalent", 1), ("1", 1)):
        kw = {"metric": "f1", "pos_label": name, "data_dir": GLUE_DIR}
        assert load_task_data("mrpc", **kw).task.positive == index


def test_pos_label_names_the_positive_class(tmp_path):
    src = claims(tmp_path)
    ok = load_task_data(src, metric="f1", pos_label="ok").task
    assert ok.positive == 1 and ok.pos_label == "ok"
    gold = [0] * 2 + [1] * 18
    logits = torch.tensor([[0.0, 1.0]] * 20)  # never flags fraud
    assert task_metrics("f1", logits, gold, ok.positive)["f1"] == pytest.approx(100 * 36 / 38)
    ints = DataSource(write(tmp_path / "ints.csv", rows([0] * 30 + [1] * 10)))
    assert load_task_data(ints, metric="f1", pos_label=0).task.pos_label == "0"  # YAML's 0
    assert load_task_data(ints, metric="f1", pos_label=" 0 ").task.positive == 0


# ---- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels,extra,text",
    [
        (FRAUD, ["--metric", "f1", "--pos-label", "frad"], "its classes: 'fraud', 'ok'"),
        (FRAUD, ["--pos-label", "fraud"], "the task's own metric has none; add --metric f1"),
        (FRAUD, ["--metric", "mcc", "--pos-label", "fraud"], "--metric mcc has none"),
        (["a", "b", "c"] * 10, ["--metric", "f1", "--pos-label", "a"], "3 classes ('a', 'b', 'c')"),
    ],
)
def test_a_pos_label_that_cannot_apply_exits_2(
    tmp_path, tiny_checkpoint, capsys, labels, extra, text
):
    path = write(tmp_path / "claims.csv", rows(labels))
    cache = tmp_path / "cache"
    argv = ["evaluate", "--data", str(path), "--model", tiny_checkpoint, *TINY_FLAGS, *extra]
    assert main([*argv, "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autoprumux: error: ") and err.count("\n") == 1, err
    assert text in err
    assert not cache.exists()


def test_the_api_and_a_search_refuse_pos_label_before_any_work(tmp_path, capsys, monkeypatch):
    from autoprumux.pipeline import PruMuxPipeline

    src = claims(tmp_path)
    with pytest.raises(ConfigError, match="--metric accuracy has none"):
        PruMuxPipeline(data=src, metric="accuracy", pos_label="fraud", cache_dir=tmp_path / "c")
    with pytest.raises(ConfigError, match="its classes: 'fraud', 'ok'"):
        load_task_data(src, metric="f1", pos_label="Fraud")
    assert not (tmp_path / "c").exists()
    monkeypatch.chdir(tmp_path)
    space = Path(__file__).resolve().parents[1] / "search_spaces" / "tiny.yaml"
    argv = ["search", "--space", str(space), "--data", src.location, "--pos-label", "fraud"]
    assert main(argv) == 2
    assert "add --metric f1" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["claims.csv"]


def test_a_space_takes_pos_label_beside_metric(tmp_path):
    raw = {"name": "own", "data": claims(tmp_path).location, "params": PARAMS}
    space = SearchSpace.from_dict({**raw, "metric": "f1", "pos_label": "fraud"})
    assert space.pos_label == "fraud" and space.to_dict()["pos_label"] == "fraud"
    assert SearchSpace.from_dict(space.to_dict()) == space  # what a study records reads back
    assert "pos_label" not in SearchSpace.from_dict({**raw, "metric": "f1"}).to_dict()
    with pytest.raises(ConfigError, match="'pos_label'.*add --metric f1"):
        SearchSpace.from_dict({**raw, "pos_label": "fraud"})
    # the command line's --pos-label and --metric replace the space's, checked together
    assert space.with_task(None, pos_label="ok").pos_label == "ok"
    with pytest.raises(ConfigError, match="--metric accuracy has none"):
        space.with_task(None, metric="accuracy")
    plain = SearchSpace.from_dict({**raw, "metric": "f1"})
    assert plain.with_task(None, pos_label="fraud").pos_label == "fraud"


# ---- reported with the result ---------------------------------------------------------------


def test_evaluate_names_the_positive_class(tmp_path, tiny_checkpoint, capsys):
    from autoprumux.pipeline import PruMuxPipeline

    src = claims(tmp_path)
    out, cache = tmp_path / "ev.json", tmp_path / "cache"
    argv = [
        "evaluate", "--data", src.location, "--metric", "f1", "--model", tiny_checkpoint,
        "--sparsity", "0.5", "--mux", "1", *TINY_FLAGS, "--cache-dir", str(cache),
        "--json", str(out),
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert "(metric f1 (positive class 'fraud'))" in capsys.readouterr().out
    ev = json.loads(out.read_text())
    assert ev["metric_name"] == "f1" and ev["pos_label"] == "fraud"
    # the pruned candidate's cached stage metrics were scored as f1 of 'fraud': a pipeline
    # scoring accuracy reports its own, not those
    recipe = Recipe.preset(
        "fast", max_seq_len=32, batch_size=8, finetune_steps=2, recovery_steps=2,
        prune_stages=1, mux_warmup_steps=0,
    )  # fmt: skip
    entries = sorted((cache / "candidate").iterdir())
    recorded = json.loads((entries[0] / "meta.json").read_text())["stages"][0]["dev_metric"]
    pipe = PruMuxPipeline(
        data=src, metric="accuracy", model=tiny_checkpoint, recipe=recipe, cache_dir=cache
    )
    seen: list[tuple[int, float]] = []
    model = pipe.candidate(Candidate(sparsity=0.5), on_stage=lambda s, *m: seen.append((s, m)))
    assert sorted((cache / "candidate").iterdir()) == entries  # a cache hit
    accuracy = pipe.dev_metrics(model, pairings=1)["metric"]
    assert accuracy != recorded
    # rescored as this pipeline scores (accuracy), and reported as the loss that chooses
    from autoprumux.pipeline._baseline import validation_metric

    dev = pipe.baseline_metrics()["metric"] - accuracy
    val = None
    if pipe.validation_items:
        val = validation_metric(pipe, pipe.baseline()) - validation_metric(pipe, model)
    assert seen == [(1, (pytest.approx(dev), val if val is None else pytest.approx(val)))]


def test_the_model_card_names_the_positive_class(tiny):
    from dataclasses import replace

    from test_late_mux_plumbing import _manifest

    from autoprumux.deploy import ExportManifest
    from autoprumux.export._card import render_card
    from autoprumux.models import MuxConfig, MuxSequenceClassifier

    m = _manifest(Candidate(sparsity=0.5))
    m = replace(m, measurement=replace(m.measurement, metric_name="f1", pos_label="fraud"))
    assert ExportManifest.from_dict(m.to_dict()) == m
    model = MuxSequenceClassifier(tiny[0], num_labels=2, mux=MuxConfig(n=1))
    card = render_card(m, model)
    assert "| model | f1 (positive class 'fraud') |" in card
    assert "points of f1 (positive class 'fraud')" in card
    # a manifest written before pos_label was recorded still reads
    old = m.to_dict()
    del old["measurement"]["pos_label"]
    assert ExportManifest.from_dict(old).measurement.pos_label is None


def test_a_trial_records_the_positive_class(tmp_path, tiny_checkpoint):
    from autoprumux.evaluation import ThroughputConfig
    from autoprumux.search import Searcher, SearchSettings

    recipe = {"max_seq_len": 32, "batch_size": 8, "finetune_steps": 2, "mux_warmup_steps": 0}
    space = SearchSpace.from_dict(
        {
            "name": "own",
            "data": claims(tmp_path).location,
            "metric": "f1",
            "model": tiny_checkpoint,
            "recipe": recipe,
            "params": PARAMS,
        }
    )
    searcher = Searcher(
        SearchSettings(
            space=space,
            trials=1,
            sampler="grid",
            storage=f"sqlite:///{tmp_path / 'study.db'}",
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            cache_dir=str(tmp_path / "cache"),
            throughput=ThroughputConfig(batch_size=8, seq_len=32, repeats=2, warmup=1),
            budget=50.0,
            show_progress=False,
            force=True,  # a tiny random baseline scores at chance: searched anyway
        )
    )
    searcher.run()
    (trial,) = searcher.study.get_trials()
    assert trial.user_attrs["metric_name"] == "f1" and trial.user_attrs["pos_label"] == "fraud"
