"""Any text-classification data as a task (`--data`, `DataSource`, a space's `data:`): each
format and the directory layout, string and integer labels, more than two classes, pairs, the
stratified dev split, every bad input (exit 2, one line, nothing written), the hub loader on a
fake `datasets`, and `autoprumux evaluate --data` end to end on a tiny random BERT."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import subprocess
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
import torch

from autoprumux.cli import main
from autoprumux.data import (
    MAX_DEV_SPLIT_ROWS,
    DataSource,
    TaskData,
    load_task,
    load_task_data,
    resolve_task,
)
from autoprumux.errors import AutoPruMuxError, ConfigError, DataNotFoundError
from autoprumux.evaluation._accuracy import task_metrics
from autoprumux.search import SearchSpace

PARAMS = {"sparsity": {"choices": [0.0, 0.5]}, "mux": {"choices": [1]}}
# seconds on the tiny model (as test_search's TINY_RECIPE)
TINY_FLAGS = [
    "--max-seq-len", "32", "--batch-size", "8", "--finetune-steps", "2",
    "--recovery-steps", "2", "--prune-stages", "1", "--mux-warmup-steps", "0",
    "--tp-batch", "8", "--tp-seq-len", "32", "--tp-repeats", "2",
]  # fmt: skip


def rows(labels: list, *, pair: bool = False, text: str = "text") -> list[dict]:
    """One row per label, each with a distinct text (and a second text for pairs)."""
    out = []
    for i, label in enumerate(labels):
        row = {text: f"sentence number {i} about {label}", "label": label}
        if pair:
            row["text_pair"] = f"its pair {i}"
        out.append(row)
    return out


def write(path: Path, records: list[dict]) -> Path:
    """`records` in the format of `path`'s suffix (a header from the first record)."""
    fmt = path.suffix
    if fmt in (".csv", ".tsv"):
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, list(records[0]), delimiter="\t" if fmt == ".tsv" else ",")
            w.writeheader()
            w.writerows(records)
    elif fmt == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif fmt == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        raise AssertionError(fmt)
    return path


BALANCED = ["neg", "pos"] * 20  # 40 rows, two classes


# ---- formats and layouts --------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_each_format_reads_the_same_task(tmp_path, suffix):
    td = load_task_data(DataSource(write(tmp_path / f"reviews{suffix}", rows(BALANCED))))
    reference = load_task_data(DataSource(write(tmp_path / "ref.csv", rows(BALANCED))))
    assert td.task.name == "reviews"
    assert td.task.label_names == ("neg", "pos") and td.task.num_labels == 2
    assert not td.task.pair and td.task.metric == "accuracy"
    assert len(td.train) + len(td.dev) == 40
    # the same rows in another format: the same examples, split and cache fingerprint
    assert td.train == reference.train and td.dev == reference.dev
    assert td.fingerprint() == reference.fingerprint()


@pytest.mark.parametrize("dev_name", ["dev.tsv", "validation.jsonl"])
def test_a_directory_holds_train_and_its_own_dev_split(tmp_path, dev_name):
    folder = tmp_path / "my_task"
    folder.mkdir()
    write(folder / "train.csv", rows(BALANCED))
    write(folder / dev_name, rows(["pos", "neg", "pos"]))
    td = load_task_data(DataSource(folder))
    assert td.task.name == "my_task"
    assert len(td.train) == 40 and len(td.dev) == 3  # nothing carved from train
    assert [ex.label for ex in td.dev] == [1, 0, 1]
    assert td.dev_split == ""


def test_a_directory_without_dev_carves_one(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    write(folder / "train.parquet", rows(BALANCED))
    td = load_task_data(DataSource(folder))
    assert len(td.dev) == 4 and "stratified 4 of 40" in td.dev_split


def test_string_labels_sort_as_text_and_integer_labels_numerically(tmp_path):
    strings = load_task_data(DataSource(write(tmp_path / "s.csv", rows(["b", "c", "a"] * 5))))
    assert strings.task.label_names == ("a", "b", "c")
    # integers keep their numeric order (as text, "10" would sort before "2")
    ints = load_task_data(DataSource(write(tmp_path / "i.jsonl", rows([10, 2, 1] * 5))))
    assert ints.task.label_names == ("1", "2", "10")
    # a CSV's integer labels are text in the file and still sort numerically
    as_text = load_task_data(DataSource(write(tmp_path / "t.csv", rows([10, 2, 1] * 5))))
    assert as_text.task.label_names == ("1", "2", "10")
    for td in (strings, ints, as_text):
        for ex in (*td.train, *td.dev):
            assert ex.text_a.endswith(f"about {td.task.label_names[ex.label]}")


def test_three_imbalanced_classes_and_their_descriptors(tmp_path):
    labels = ["x"] * 60 + ["y"] * 30 + ["z"] * 10
    src = DataSource(write(tmp_path / "three.tsv", rows(labels)))
    td = load_task_data(src, metric="f1")
    assert td.task.num_labels == 3 and td.task.metric == "f1"
    counts = Counter(ex.label for ex in td.train)
    d = td.descriptors()
    assert d["task_num_labels"] == 3 and d["task_f1"] == 1 and d["task_mcc"] == 0
    assert d["task_minority_share"] == pytest.approx(counts[2] / len(td.train), abs=1e-6)
    assert d["task_minority_share"] < 0.2  # z is rare
    assert d["task_log_train"] == pytest.approx(math.log(len(td.train)), abs=1e-6)
    assert load_task_data(src).descriptors()["task_f1"] == 0


def test_sentence_pairs_and_renamed_columns(tmp_path):
    found = load_task_data(DataSource(write(tmp_path / "p.csv", rows(BALANCED, pair=True))))
    assert found.task.pair and all(ex.text_b.startswith("its pair") for ex in found.train)
    recs = [
        {"premise": r["review"], "hypothesis": f"h{i}", "gold": r["label"]}
        for i, r in enumerate(rows(BALANCED, text="review"))
    ]
    src = DataSource(
        write(tmp_path / "nli.jsonl", recs),
        text_column="premise",
        pair_column="hypothesis",
        label_column="gold",
    )
    td = load_task_data(src)
    assert td.task.pair and td.task.label_names == ("neg", "pos")
    assert {ex.text_b for ex in (*td.train, *td.dev)} == {f"h{i}" for i in range(40)}


# ---- the dev split --------------------------------------------------------------------------


def test_the_dev_split_is_deterministic_and_stratified(tmp_path):
    labels = ["a"] * 300 + ["b"] * 100 + ["c"] * 40  # shuffled in the file
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(3)).tolist()
    path = write(tmp_path / "s.csv", rows([labels[i] for i in order]))
    first, again = load_task_data(DataSource(path)), load_task_data(DataSource(path))
    assert first.dev == again.dev and first.fingerprint() == again.fingerprint()
    assert len(first.dev) == 44  # 10% of 440
    dev_counts = Counter(ex.label for ex in first.dev)
    for cls, n in Counter(labels).items():
        share = n / len(labels)
        assert abs(dev_counts[first.task.label_names.index(cls)] - share * 44) <= 1
    texts = {ex.text_a for ex in first.train}
    assert not texts & {ex.text_a for ex in first.dev}  # disjoint
    assert len(texts) + len(first.dev) == 440  # and together all rows
    # the split is part of the data: another fraction, another dev set and cache key
    other = load_task_data(DataSource(path, dev_fraction=0.2))
    assert len(other.dev) == 88 and other.fingerprint() != first.fingerprint()
    assert other.dev_split != first.dev_split


def test_a_large_dev_split_is_capped(tmp_path):
    path = write(tmp_path / "big.csv", rows(["a", "b"] * 12_000))
    td = load_task_data(DataSource(path, dev_fraction=0.5))
    assert len(td.dev) == MAX_DEV_SPLIT_ROWS and len(td.train) == 24_000 - MAX_DEV_SPLIT_ROWS


def test_max_train_examples_subsamples_train_after_the_split(tmp_path):
    from autoprumux.config import Recipe

    path = write(tmp_path / "r.csv", rows(BALANCED * 5))
    full = load_task_data(DataSource(path))
    small = load_task_data(DataSource(path), recipe=Recipe(max_train_examples=50, batch_size=8))
    assert len(small.train) == 50 and small.dev == full.dev
    assert set(small.train) <= set(full.train)


def test_the_fingerprint_covers_label_names_and_glue_keys_stay_as_they_were(tmp_path):
    a = load_task_data(DataSource(write(tmp_path / "a.csv", rows(BALANCED))))
    renamed = [{**r, "label": {"neg": "bad", "pos": "good"}[r["label"]]} for r in rows(BALANCED)]
    b = load_task_data(DataSource(write(tmp_path / "b.csv", renamed)))
    # same texts, same class indices: only the names differ, and so does the key
    assert [ex.label for ex in a.train] == [ex.label for ex in b.train]
    assert a.fingerprint() != b.fingerprint()
    # a GLUE task's fingerprint is the rows' hash alone, as before the user's data existed
    folder = tmp_path / "glue" / "SST-2"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n", encoding="utf-8")
    (folder / "dev.tsv").write_text("sentence\tlabel\nfine\t1\n", encoding="utf-8")
    glue = load_task("sst2", data_dir=tmp_path / "glue")
    h = hashlib.sha256()
    for split in (glue.train, glue.dev):
        for ex in split:
            h.update(f"{ex.text_a}\t{ex.text_b}\t{ex.label}\n".encode())
        h.update(b"--split--")
    assert glue.fingerprint() == h.hexdigest()[:16]
    # --metric overrides a GLUE task's metric without touching its data or key
    f1 = load_task_data("sst2", metric="f1", data_dir=tmp_path / "glue")
    assert f1.task.metric == "f1" and glue.task.metric == "accuracy"
    assert f1.fingerprint() == glue.fingerprint()


def test_f1_is_macro_over_more_than_two_classes():
    from sklearn.metrics import f1_score

    gold = [0, 0, 0, 0, 1, 1]
    logits = torch.tensor([[3.0, 0, 0], [3, 0, 0], [3, 0, 0], [0, 3, 0], [0, 3, 0], [3, 0, 0]])
    pred = logits.argmax(-1).tolist()
    # three classes, though only 0 and 1 occur here: macro-F1, not the positive class's F1
    got = task_metrics("f1", logits, gold)["metric"]
    assert got == pytest.approx(100 * f1_score(gold, pred, average="macro"))
    assert got != pytest.approx(100 * f1_score(gold, pred, average="binary"))
    two = task_metrics("f1", logits[:, :2], gold)["metric"]  # two classes: positive-class F1
    assert two == pytest.approx(100 * f1_score(gold, pred, average="binary"))


# ---- bad input ------------------------------------------------------------------------------


def _bad_cases(tmp: Path) -> list[tuple[str, dict, str]]:
    """(what, DataSource kwargs, text the message must hold), each file written in `tmp`."""
    (tmp / "empty.csv").write_bytes(b"")
    (tmp / "header.csv").write_text("text,label\n", encoding="utf-8")
    (tmp / "latin1.csv").write_bytes("text,label\ncaf\xe9 au lait,1\n".encode("latin-1"))
    (tmp / "table.xlsx").write_bytes(b"PK")
    (tmp / "ragged.csv").write_text("text,label\na,1\nb,0,extra\n", encoding="utf-8")
    (tmp / "broken.jsonl").write_text('{"text": "a", "label": 1}\n{oops\n', encoding="utf-8")
    (tmp / "fake.parquet").write_text("not parquet", encoding="utf-8")
    write(tmp / "one_class.csv", rows(["pos"] * 30))
    write(tmp / "blank.csv", [*rows(BALANCED[:10]), {"text": "no label here", "label": ""}])
    write(tmp / "float.jsonl", [*rows(BALANCED[:10]), {"text": "half", "label": 0.5}])
    write(tmp / "lonely.csv", rows(["a"] * 20 + ["b"] * 20 + ["c"]))
    unseen = tmp / "unseen"
    unseen.mkdir()
    write(unseen / "train.csv", rows(BALANCED))
    write(unseen / "dev.csv", rows(["pos", "meh"]))
    return [
        ("missing file", {"location": str(tmp / "nope.csv")}, "nope.csv"),
        ("missing column", {"location": str(tmp / "blank.csv"), "text_column": "review"}, "text, label"),
        ("missing pair column", {"location": str(tmp / "blank.csv"), "pair_column": "second"}, "--pair-column"),
        ("empty file", {"location": str(tmp / "empty.csv")}, "is empty"),
        ("only a header", {"location": str(tmp / "header.csv")}, "holds no rows"),
        ("single class", {"location": str(tmp / "one_class.csv")}, "'pos'"),
        ("dev label unseen in train", {"location": str(unseen)}, "'meh'"),
        ("not UTF-8", {"location": str(tmp / "latin1.csv")}, "not UTF-8"),
        ("blank label", {"location": str(tmp / "blank.csv")}, "row 11"),
        ("float label", {"location": str(tmp / "float.jsonl")}, "0.5"),
        ("unknown extension", {"location": str(tmp / "table.xlsx")}, "'.xlsx'"),
        ("ragged CSV row", {"location": str(tmp / "ragged.csv")}, "row 2"),
        ("invalid JSON line", {"location": str(tmp / "broken.jsonl")}, "line 2"),
        ("not Parquet", {"location": str(tmp / "fake.parquet")}, "Parquet"),
        ("class too rare to stratify", {"location": str(tmp / "lonely.csv")}, "class 'c' has 1"),
        ("dev fraction out of range", {"location": str(tmp / "blank.csv"), "dev_fraction": 0.9}, "0.9"),
        ("same column twice", {"location": str(tmp / "blank.csv"), "label_column": "text"}, "differ"),
    ]  # fmt: skip


@pytest.fixture
def bad_cases(tmp_path) -> dict[str, tuple[dict, str]]:
    return {what: (kw, text) for what, kw, text in _bad_cases(tmp_path)}


BAD = [
    "missing file",
    "missing column",
    "missing pair column",
    "empty file",
    "only a header",
    "single class",
    "dev label unseen in train",
    "not UTF-8",
    "blank label",
    "float label",
    "unknown extension",
    "ragged CSV row",
    "invalid JSON line",
    "not Parquet",
    "class too rare to stratify",
    "dev fraction out of range",
    "same column twice",
]


def test_the_bad_cases_are_all_listed(bad_cases):
    assert sorted(bad_cases) == sorted(BAD)


@pytest.mark.parametrize("what", BAD)
def test_bad_data_raises_one_clear_error_in_the_api(bad_cases, what):
    kw, text = bad_cases[what]
    with pytest.raises(AutoPruMuxError) as e:
        load_task_data(DataSource(**kw))
    assert text in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ConfigError | DataNotFoundError)


_FLAG = {"text_column": "--text-column", "pair_column": "--pair-column"}
_FLAG |= {"label_column": "--label-column", "dev_fraction": "--dev-fraction"}


@pytest.mark.parametrize("what", BAD)
def test_bad_data_exits_2_from_the_cli_with_nothing_written(
    bad_cases, what, tmp_path, tiny_checkpoint, capsys, monkeypatch
):
    kw, text = bad_cases[what]
    monkeypatch.chdir(tmp_path)
    argv = ["evaluate", "--data", kw["location"], "--model", tiny_checkpoint, *TINY_FLAGS]
    for key, flag in _FLAG.items():
        if key in kw:
            argv += [flag, str(kw[key])]
    cache = tmp_path / "cache"
    assert main([*argv, "--cache-dir", str(cache), "--json", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autoprumux: error: ") and err.count("\n") == 1, err
    assert text in err
    assert not cache.exists() and not (tmp_path / "out.json").exists()
    assert not (tmp_path / ".autoprumux").exists()


@pytest.mark.parametrize(
    "extra,text",
    [
        (["--task", "sst2"], "drop --task"),
        (["--batch-size", "64"], "batch size (64)"),
        (["--metric", "auc"], "'auc'"),
    ],
)
def test_bad_flag_combinations_exit_2(tmp_path, tiny_checkpoint, capsys, extra, text):
    path = write(tmp_path / "r.csv", rows(BALANCED))  # 36 training rows
    cache = tmp_path / "cache"
    argv = ["evaluate", "--data", str(path), "--model", tiny_checkpoint, *TINY_FLAGS, *extra]
    assert main([*argv, "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert text in err and err.count("\n") == 1, err
    assert not cache.exists()


def test_column_flags_need_data(tmp_path, capsys):
    assert main(["evaluate", "--text-column", "review", "--cache-dir", str(tmp_path)]) == 2
    assert "--text-column describes --data" in capsys.readouterr().err


def test_the_api_refuses_task_and_data_together(tmp_path):
    from autoprumux.pipeline import PruMuxPipeline

    src = DataSource(write(tmp_path / "r.csv", rows(BALANCED)))
    assert resolve_task(None, src) is src and resolve_task(None, None) == "sst2"
    with pytest.raises(ConfigError, match="both given"):
        PruMuxPipeline(task="sst2", data=src, cache_dir=tmp_path / "cache")
    with pytest.raises(ConfigError, match="'auc'"):
        PruMuxPipeline(data=src, metric="auc", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


# ---- search spaces ----------------------------------------------------------------------------


def test_a_space_searches_the_users_data(tmp_path):
    path = write(tmp_path / "tickets.csv", rows(["a", "b", "c"] * 10, text="body"))
    raw = {"name": "own", "data": str(path), "text_column": "body", "metric": "f1"}
    space = SearchSpace.from_dict({**raw, "params": PARAMS})
    assert space.task == "tickets" and space.glue_task is None and space.metric == "f1"
    assert space.data == DataSource(str(path), text_column="body")
    # the dict a study records reads back to the same space; a GLUE space's keeps its keys
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert "task" not in space.to_dict() and space.to_dict()["text_column"] == "body"
    glue = SearchSpace.from_dict({"name": "g", "task": "cola", "params": PARAMS})
    assert set(glue.to_dict()) == {"name", "task", "model", "recipe", "params"}
    # the command line's --task or --data replaces the space's
    assert space.with_task("sst2").data is None and space.with_task("sst2").task == "sst2"
    moved = glue.with_task(None, data=DataSource(str(path), text_column="body"), metric="mcc")
    assert moved.task == "tickets" and moved.metric == "mcc" and moved.glue_task is None


@pytest.mark.parametrize(
    "patch,text",
    [
        ({"task": "sst2"}, "both given"),
        ({"data": "missing.csv"}, "missing.csv"),
        ({"metric": "auc"}, "'auc'"),
        ({"data": None, "label_column": "y"}, "describe 'data'"),
        ({"dev_fraction": 2}, "(2)"),
    ],
)
def test_bad_data_keys_in_a_space_name_the_key(tmp_path, patch, text):
    path = write(tmp_path / "r.csv", rows(BALANCED))
    raw = {"name": "own", "data": str(path), "params": PARAMS, **patch}
    if raw["data"] is None:
        del raw["data"]
    with pytest.raises(AutoPruMuxError, match="search space") as e:
        SearchSpace.from_dict(raw)
    assert text in str(e.value)


def test_reading_a_data_space_does_not_import_torch(tmp_path):
    path = write(tmp_path / "r.csv", rows(BALANCED))
    yml = tmp_path / "space.yaml"
    yml.write_text(f"name: own\ndata: {path}\nparams: {{mux: {{choices: [1, 2]}}}}\n")
    code = (
        "import sys\n"
        "from autoprumux.search import SearchSpace\n"
        f"s = SearchSpace.from_yaml({str(yml)!r})\n"
        "assert s.task == 'r', s.task\n"
        "print([m for m in ('torch', 'transformers', 'optuna', 'mlflow') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_search_refuses_bad_data_before_any_store_is_made(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "r.csv", rows(BALANCED))
    space = Path(__file__).resolve().parents[1] / "search_spaces" / "tiny.yaml"
    assert main(["search", "--space", str(space), "--data", "nope.csv"]) == 2
    assert "nope.csv" in capsys.readouterr().err
    assert main(["search", "--space", str(space), "--data", str(path), "--task", "sst2"]) == 2
    assert "drop --task" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


# ---- Hugging Face datasets (a fake module: no hub here) --------------------------------------


class FakeSplit:
    def __init__(self, columns: dict[str, list], class_names: list[str] | None = None):
        self._columns = columns
        self.column_names = list(columns)
        label = types.SimpleNamespace(names=class_names) if class_names else object()
        self.features = {"label": label}

    def __getitem__(self, column: str) -> list:
        return self._columns[column]


def fake_datasets(monkeypatch, splits: dict[str, FakeSplit]) -> list[tuple]:
    calls: list[tuple] = []

    def load_dataset(name, config=None):
        calls.append((name, config))
        return splits

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def _split(n: int, *, label=None, names=None) -> FakeSplit:
    labels = [i % 3 for i in range(n)] if label is None else [label] * n
    cols = {"sentence": [f"s{i}" for i in range(n)], "label": labels}
    return FakeSplit(cols, names)


def test_the_hub_maps_splits_columns_and_class_names(monkeypatch):
    names = ["sad", "neutral", "happy"]
    calls = fake_datasets(
        monkeypatch,
        {"train": _split(30, names=names), "validation": _split(6), "test": _split(5, label=-1)},
    )
    src = DataSource("hf:SetFit/emotion/default", text_column="sentence")
    td = load_task_data(src)
    assert calls == [("SetFit/emotion", "default")]
    assert td.task.name == "SetFit-emotion-default" and td.task.label_names == tuple(names)
    assert len(td.train) == 30 and len(td.dev) == 6 and td.dev_split == ""
    assert td.source == "hf:SetFit/emotion/default"


def test_the_hub_uses_a_labelled_test_split_else_carves_dev(monkeypatch):
    calls = fake_datasets(monkeypatch, {"train": _split(30), "test": _split(9)})
    td = load_task_data(DataSource("hf:glue/x", text_column="sentence"))
    assert calls == [("glue", "x")] and len(td.dev) == 9 and td.task.label_names == ("0", "1", "2")
    # test labels of -1 (the hub's "no label"): dev is carved from train instead
    fake_datasets(
        monkeypatch, {"train": _split(30, names=["a", "b", "c"]), "test": _split(9, label=-1)}
    )
    td = load_task_data(DataSource("hf:imdb", text_column="sentence"))
    assert len(td.dev) == 3 and len(td.train) == 27 and "stratified" in td.dev_split


def test_the_hub_names_missing_columns_splits_and_the_package(monkeypatch):
    fake_datasets(monkeypatch, {"train": _split(30)})
    with pytest.raises(ConfigError, match="its columns: sentence, label"):
        load_task_data(DataSource("hf:imdb"))  # no "text" column
    fake_datasets(monkeypatch, {"validation": _split(30)})
    with pytest.raises(ConfigError, match="no 'train' split"):
        load_task_data(DataSource("hf:imdb", text_column="sentence"))
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(ConfigError, match=r"pip install 'autoprumux\[hf\]'"):
        load_task_data(DataSource("hf:imdb"))
    with pytest.raises(ConfigError, match="hf:NAME"):
        DataSource("hf:a/b/c/d")


# ---- end to end -------------------------------------------------------------------------------


def test_evaluate_on_own_data_end_to_end(tmp_path, tiny_checkpoint, capsys):
    labels = ["billing", "bug", "praise"] * 30
    path = write(tmp_path / "tickets.jsonl", rows(labels, text="body"))
    out = tmp_path / "ev.json"
    argv = [
        "evaluate", "--data", str(path), "--text-column", "body", "--metric", "f1",
        "--model", tiny_checkpoint, "--sparsity", "0.5", "--mux", "1", *TINY_FLAGS,
        "--cache-dir", str(tmp_path / "cache"), "--json", str(out),
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    ev = json.loads(out.read_text())
    assert ev["task"] == "tickets" and ev["metric_name"] == "f1"
    assert 0.0 <= ev["candidate"]["metric"] <= 100.0
    assert "81 training examples" in capsys.readouterr().out  # 90 rows less a dev split of 9
    # the baseline's cache entry is keyed on this data: a second run finds it
    baselines = list((tmp_path / "cache" / "baseline").iterdir())
    assert len(baselines) == 1
    assert main(argv) == 0
    assert list((tmp_path / "cache" / "baseline").iterdir()) == baselines


def test_pipeline_takes_a_data_source(tmp_path, tiny_checkpoint):
    from autoprumux.config import Recipe
    from autoprumux.pipeline import PruMuxPipeline

    src = DataSource(write(tmp_path / "pairs.csv", rows(["y", "n", "m"] * 12, pair=True)))
    pipe = PruMuxPipeline(
        data=src,
        model=tiny_checkpoint,
        recipe=Recipe(max_seq_len=32, batch_size=8),
        cache_dir=tmp_path / "cache",
    )
    assert isinstance(pipe.data, TaskData) and pipe.task.name == "pairs"
    assert pipe.task.num_labels == 3 and pipe.task.pair
    assert (
        pipe.entry_key()["task"] == "pairs" and pipe.entry_key()["data"] == pipe.data.fingerprint()
    )
    assert pipe.descriptors()["task_num_labels"] == 3


# ---- studies begun before the label-balance descriptors ------------------------------------


class DescribedEvaluator:
    """Just what a Searcher reads of its evaluator before any trial runs."""

    model_id = "tiny-model"
    dev_size = 100

    def __init__(self, descriptors: dict[str, float]):
        self._descriptors = descriptors

    def check_lengths(self, n: int, tp: object = None) -> None:
        pass

    def descriptors(self) -> dict[str, float]:
        return dict(self._descriptors)


def test_a_study_resumes_when_its_descriptors_gained_keys(tmp_path):
    from autoprumux.search import Searcher, SearchSettings

    space = SearchSpace.from_dict({"name": "old", "task": "sst2", "params": PARAMS})
    settings = SearchSettings(
        space=space,
        trials=1,
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        cache_dir=str(tmp_path / "cache"),
        show_progress=False,
    )
    before = {"task_num_labels": 2, "task_pair": 0, "task_mcc": 0, "task_log_train": 9.0}
    Searcher(settings, evaluator=lambda variant: DescribedEvaluator(before))
    now = {**before, "task_f1": 0, "task_minority_share": 0.44}
    resumed = Searcher(settings, evaluator=lambda variant: DescribedEvaluator(now))
    assert resumed.study.user_attrs["descriptors"] == now
    # a descriptor that changed its value is other data: the study refuses it
    changed = {**now, "task_log_train": 5.0}
    with pytest.raises(ConfigError, match="different descriptors"):
        Searcher(settings, evaluator=lambda variant: DescribedEvaluator(changed))


def test_a_search_runs_on_the_users_data(tmp_path, tiny_checkpoint):
    from autoprumux.evaluation import ThroughputConfig
    from autoprumux.search import Searcher, SearchSettings

    path = write(tmp_path / "tickets.csv", rows(["a", "b", "c"] * 20, text="body"))
    recipe = {"max_seq_len": 32, "batch_size": 8, "finetune_steps": 2, "mux_warmup_steps": 0}
    space = SearchSpace.from_dict(
        {
            "name": "own",
            "data": str(path),
            "text_column": "body",
            "metric": "f1",
            "model": tiny_checkpoint,
            "recipe": recipe,
            "params": {"sparsity": {"choices": [0.0]}, "mux": {"choices": [1]}},
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
    assert searcher.name.startswith("own-tickets-")
    searcher.run()
    attrs = searcher.study.user_attrs
    assert attrs["task"] == "tickets" and attrs["space"]["data"] == str(path)
    assert attrs["descriptors"]["task_num_labels"] == 3 and attrs["descriptors"]["task_f1"] == 1
    (trial,) = searcher.study.get_trials()
    assert trial.state.name == "COMPLETE"
    # a worker joining rebuilds the same space, data included, from what the study recorded
    assert SearchSpace.from_dict(attrs["space"]) == space


def test_a_suggestion_for_an_own_data_study_does_not_name_a_glue_task():
    from autoprumux.config import Candidate
    from autoprumux.meta._recommend import evaluate_command

    # the study carries its data (and recipe): the command names it, not a task or a path
    cfg = Candidate(sparsity=0.5, mux=1, precision="int8")
    own = evaluate_command(cfg, "prumux-tickets")
    assert own.startswith("autoprumux evaluate --study prumux-tickets --sparsity 0.5")
    assert "--task" not in own and "--data" not in own
    assert own.endswith("--precision int8")
