"""The user's own fine-tuned classifier as the baseline: recognised, used as is (the same logits,
no training step), its labels matched to the task's classes by name (or by index for
transformers' unnamed LABEL_i), a mismatched head refused, and the cache keys telling it apart
from a baseline trained here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_bert_config

from autoprumux.cli import main
from autoprumux.config import Recipe
from autoprumux.data import DataSource, collate
from autoprumux.errors import ConfigError
from autoprumux.models import resolve_model
from autoprumux.training import predict

RECIPE = Recipe(max_seq_len=32, batch_size=8, finetune_steps=2, mux_warmup_steps=0)


def classifier_dir(root: Path, id2label: dict[int, str], *, architectures: bool = True) -> str:
    """A tiny random BertForSequenceClassification saved with the packaged tokenizer."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(1)
    cfg = tiny_bert_config(
        vocab_size=30522,
        max_position_embeddings=128,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    d = root / "classifier"
    BertForSequenceClassification(cfg).save_pretrained(d)
    resolve_model(None).tokenizer().save_pretrained(d)
    if not architectures:  # recognised by its weights alone
        config = json.loads((d / "config.json").read_text())
        config.pop("architectures")
        (d / "config.json").write_text(json.dumps(config))
    return str(d)


def sentiment_data(root: Path) -> DataSource:
    """Labels negative/positive: the task's class 0 is 'negative', 1 'positive'."""
    words = ["dull", "bright", "slow", "warm", "grim", "kind", "flat", "bold"]
    lines = ["text,label"]
    for i in range(48):
        label = "positive" if i % 2 else "negative"
        lines.append(f"{words[i % 8]} film number {i} with {words[(i * 3) % 8]} acting,{label}")
    path = root / "reviews.csv"
    path.write_text("\n".join(lines) + "\n")
    return DataSource(path)


def pipeline(tmp_path: Path, model: str, data: DataSource, recipe: Recipe = RECIPE):
    from autoprumux.pipeline import PruMuxPipeline

    return PruMuxPipeline(data=data, model=model, recipe=recipe, cache_dir=tmp_path / "cache")


def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any training step fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a given classifier must not be trained")

    for module in ("autoprumux.pipeline._baseline", "autoprumux.pipeline._recovery"):
        monkeypatch.setattr(f"{module}.train_classifier", refuse)
    monkeypatch.setattr(torch.optim.AdamW, "step", refuse)  # every training loop's optimizer


def test_a_given_classifier_is_the_baseline_as_is(tmp_path, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    model = classifier_dir(tmp_path, {0: "positive", 1: "negative"})
    assert resolve_model(model).labels == ("positive", "negative")
    no_training(monkeypatch)
    pipe = pipeline(tmp_path, model, sentiment_data(tmp_path))
    assert pipe.task.label_names == ("negative", "positive")
    assert pipe.head_rows == (1, 0)  # by name: the task's negative is the head's row 1
    assert pipe.baseline_origin == "given"
    ours = predict(pipe.baseline(), pipe.dev_items)
    hf = AutoModelForSequenceClassification.from_pretrained(model).eval()
    batch = collate(pipe.dev_items)
    with torch.no_grad():
        theirs = hf(**batch).logits
    # the same logits, each class's column where the task puts it
    torch.testing.assert_close(ours, theirs[:, [1, 0]], atol=1e-5, rtol=1e-4)
    named = [hf.config.id2label[int(i)] for i in theirs.argmax(-1)]
    assert [pipe.task.label_names[int(i)] for i in ours.argmax(-1)] == named
    # its dev metric is measured like any baseline's, and the evaluation says whose it is
    assert 0.0 <= pipe.baseline_metrics()["metric"] <= 100.0
    assert pipe.dev_noise().examples == len(pipe.dev_items)


def test_a_given_classifier_keys_its_cache_apart_from_a_trained_one(tmp_path, tiny_checkpoint):
    data = sentiment_data(tmp_path)
    given = pipeline(tmp_path, classifier_dir(tmp_path, {0: "negative", 1: "positive"}), data)
    trained = pipeline(tmp_path, tiny_checkpoint, data)
    assert given.entry_key()["baseline"] == "given" and given.entry_key()["head_rows"] == [0, 1]
    assert trained.entry_key()["baseline"] == "trained" and trained.entry_key()["head_rows"] is None
    assert trained.baseline_origin == "trained"


def test_a_classifier_is_recognised_by_its_weights_alone(tmp_path):
    model = classifier_dir(tmp_path, {0: "negative", 1: "positive"}, architectures=False)
    assert resolve_model(model).labels == ("negative", "positive")


def test_unnamed_labels_map_by_index(tmp_path, monkeypatch):
    model = classifier_dir(tmp_path, {0: "LABEL_0", 1: "LABEL_1"})
    no_training(monkeypatch)
    pipe = pipeline(tmp_path, model, sentiment_data(tmp_path))
    assert pipe.head_rows == (0, 1)


@pytest.mark.parametrize(
    "id2label, message",
    [
        ({0: "negative", 1: "neutral", 2: "positive"}, "classifies 3 labels but the task has 2"),
        ({0: "good", 1: "bad"}, "no label named"),
        ({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, "classifies 3 labels"),
    ],
)
def test_a_mismatched_head_is_refused_listing_both(tmp_path, id2label, message):
    model = classifier_dir(tmp_path, id2label)
    with pytest.raises(ConfigError, match=message) as e:
        pipeline(tmp_path, model, sentiment_data(tmp_path))
    text = str(e.value)
    assert all(repr(name) in text for name in id2label.values())
    assert "'negative'" in text and "'positive'" in text


def test_evaluate_says_the_baseline_is_the_users_model(tmp_path, monkeypatch, capsys):
    model = classifier_dir(tmp_path, {0: "positive", 1: "negative"})
    data = sentiment_data(tmp_path)
    out = tmp_path / "ev.json"
    argv = [
        "evaluate", "--data", data.location, "--model", model, "--sparsity", "0", "--mux", "1",
        "--max-seq-len", "32", "--batch-size", "8", "--mux-warmup-steps", "0",
        "--tp-batch", "8", "--tp-seq-len", "32", "--tp-repeats", "2",
        "--cache-dir", str(tmp_path / "cache"), "--json", str(out),
    ]  # fmt: skip
    no_training(monkeypatch)
    assert main(argv) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "your own fine-tuned classifier, used as is: not trained here" in text
    assert "baseline: your model, used as is" in text
    ev = json.loads(out.read_text())
    assert ev["baseline_origin"] == "given"
    assert ev["dev_noise"]["examples"] == ev["dev_noise"]["examples"] > 0
    assert {"majority", "standard_error", "margin"} <= set(ev["dev_noise"])
