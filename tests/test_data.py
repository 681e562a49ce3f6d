"""GLUE-format loading on the real shared data, error messages on bad data, and batching."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import GLUE_DIR as DATA  # noqa: E402

from autoprumux.data import (
    TASKS,
    Encoded,
    Example,
    batches,
    collate,
    encode,
    get_task,
    infinite_batches,
    load_task,
    resolve_data_dir,
)
from autoprumux.errors import AutoPruMuxError, ConfigError, DataNotFoundError

_loaded: dict[str, object] = {}


def _task(name: str):
    """load_task on the real data, once per task per test session (SST-2 train is 67k rows)."""
    if name not in _loaded:
        _loaded[name] = load_task(name, data_dir=DATA)
    return _loaded[name]


def _write_sst2(root: Path, train: str, dev: str = "sentence\tlabel\nfine film\t1\n") -> Path:
    folder = root / "SST-2"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text(train, encoding="utf-8")
    (folder / "dev.tsv").write_text(dev, encoding="utf-8")
    return root


TINY_TRAIN = "sentence\tlabel\na good movie\t1\na bad movie\t0\nso-so\t0\n"


# ---- real shared data -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_loads_from_shared_dir(name):
    td = _task(name)
    assert td.task.name == name
    assert len(td.train) > 0 and len(td.dev) > 0
    assert td.source == str(DATA / TASKS[name].glue_dir)
    labels = {ex.label for ex in td.train + td.dev}
    assert labels <= set(range(TASKS[name].num_labels))
    assert len(labels) == TASKS[name].num_labels  # both classes present
    for ex in td.train[:50] + td.dev[:50]:
        assert isinstance(ex, Example)
        assert ex.text_a.strip() and ex.text_a == ex.text_a.strip()
        assert (ex.text_b is not None) == TASKS[name].pair


@pytest.mark.parametrize(
    "name,split,rows",
    [
        ("sst2", "dev", 872),
        ("sst2", "train", 67349),
        ("cola", "dev", 1043),
        ("cola", "train", 8551),
        ("mrpc", "dev", 408),
        ("mrpc", "train", 3667),
    ],
)
def test_known_row_counts(name, split, rows):
    assert len(getattr(_task(name), split)) == rows


def test_sst2_labels_are_binary():
    td = _task("sst2")
    assert {ex.label for ex in td.train} == {0, 1}
    assert {ex.label for ex in td.dev} == {0, 1}
    assert all(ex.text_b is None for ex in td.dev)


def test_mrpc_pairs_and_bom_header_handled():
    td = _task("mrpc")
    for ex in td.train + td.dev:
        assert ex.text_b is not None and ex.text_b.strip()
        assert not ex.text_a.startswith("\ufeff")
        assert ex.text_a != "#1 String"  # header row not read as data
    # the first train row of the file (after the BOM header line)
    first = (
        (DATA / "MRPC" / "train.tsv").read_text(encoding="utf-8-sig").splitlines()[1].split("\t")
    )
    assert td.train[0] == Example(first[3].strip(), first[4].strip(), int(first[0]))


def test_cola_reads_sentence_column_without_header():
    td = _task("cola")
    first = (DATA / "CoLA" / "train.tsv").read_text(encoding="utf-8").splitlines()[0].split("\t")
    assert td.train[0] == Example(first[3].strip(), None, int(first[1]))


def test_qnli_dev_split_80_20_disjoint_and_seed_independent():
    td = _task("qnli")
    assert len(td.train) + len(td.dev) == 5463
    assert len(td.train) == int(0.8 * 5463)
    assert not set(td.train) & set(td.dev)
    assert all(ex.text_b for ex in td.train + td.dev)
    other = load_task("qnli", data_dir=DATA, seed=7)
    assert other.dev == td.dev and other.train == td.train  # the split does not move with the seed


# ---- subsampling ----------------------------------------------------------------------------


def test_max_train_examples_deterministic_and_seeded():
    a = load_task("sst2", data_dir=DATA, max_train_examples=100, seed=0)
    b = load_task("sst2", data_dir=DATA, max_train_examples=100, seed=0)
    c = load_task("sst2", data_dir=DATA, max_train_examples=100, seed=1)
    assert len(a.train) == len(c.train) == 100
    assert a.train == b.train
    assert a.train != c.train
    assert a.dev == c.dev == _task("sst2").dev  # dev untouched by max_train_examples
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert a.fingerprint() != _task("sst2").fingerprint()
    full = set(_task("sst2").train)
    assert set(a.train) <= full


def test_max_train_examples_larger_than_data_keeps_all(tmp_path):
    root = _write_sst2(tmp_path / "glue", TINY_TRAIN)
    td = load_task("sst2", data_dir=root, max_train_examples=1000)
    assert len(td.train) == 3


def test_max_train_examples_nonpositive_rejected(tmp_path):
    root = _write_sst2(tmp_path / "glue", TINY_TRAIN)
    with pytest.raises(ConfigError, match="max_train_examples"):
        load_task("sst2", data_dir=root, max_train_examples=0)


# ---- get_task -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alias,name",
    [
        ("SST-2", "sst2"),
        ("sst-2", "sst2"),
        (" SST2 ", "sst2"),
        ("CoLA", "cola"),
        ("MRPC", "mrpc"),
        ("QNLI", "qnli"),
    ],
)
def test_get_task_aliases(alias, name):
    assert get_task(alias) is TASKS[name]


def test_get_task_unknown_names_value_and_choices():
    with pytest.raises(ConfigError) as ei:
        get_task("nosuchtask")
    msg = str(ei.value)
    assert "nosuchtask" in msg
    for t in TASKS:
        assert t in msg
    assert isinstance(ei.value, ValueError)


# ---- missing / malformed data -------------------------------------------------------------


def test_missing_data_dir_names_path_and_fix(tmp_path):
    nope = tmp_path / "nope"
    with pytest.raises(DataNotFoundError) as ei:
        load_task("sst2", data_dir=nope)
    msg = str(ei.value)
    assert str(nope) in msg
    assert "--data-dir" in msg
    assert "AUTOPRUMUX_DATA" in msg


def test_glue_dir_without_task_folder_names_folder(tmp_path):
    root = _write_sst2(tmp_path / "glue", TINY_TRAIN)
    with pytest.raises(DataNotFoundError) as ei:
        load_task("cola", data_dir=root)
    msg = str(ei.value)
    assert "CoLA" in msg
    assert str(root) in msg


def test_task_folder_without_dev_file_names_file(tmp_path):
    folder = tmp_path / "glue" / "SST-2"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text(TINY_TRAIN, encoding="utf-8")
    with pytest.raises(DataNotFoundError, match="dev.tsv"):
        load_task("sst2", data_dir=tmp_path / "glue")


@pytest.mark.parametrize(
    "bad_row",
    ["no label column", "a sentence\t2", "a sentence\t1\textra", "a sentence\tpositive"],
)
def test_malformed_row_raises_with_file_and_line(tmp_path, bad_row):
    train = "sentence\tlabel\ngood row\t1\n" + bad_row + "\nanother good row\t0\n"
    root = _write_sst2(tmp_path / "glue", train)
    with pytest.raises(AutoPruMuxError) as ei:
        load_task("sst2", data_dir=root)
    assert f"{root / 'SST-2' / 'train.tsv'}:3" in str(ei.value)


def test_malformed_mrpc_row_raises_with_line(tmp_path):
    folder = tmp_path / "glue" / "MRPC"
    folder.mkdir(parents=True)
    head = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    (folder / "train.tsv").write_text(head + "1\t1\t2\tA\tB\n", encoding="utf-8")
    (folder / "dev.tsv").write_text(head + "0\t1\t2\tA\tB\n1\t3\t4\tonly four\n", encoding="utf-8")
    with pytest.raises(AutoPruMuxError, match=r"dev\.tsv:3"):
        load_task("mrpc", data_dir=tmp_path / "glue")


def test_quotes_are_kept_literally(tmp_path):
    root = _write_sst2(tmp_path / "glue", 'sentence\tlabel\n"quoted" start\t1\nan " odd quote\t0\n')
    td = load_task("sst2", data_dir=root)
    assert [ex.text_a for ex in td.train] == ['"quoted" start', 'an " odd quote']


# ---- AUTOPRUMUX_DATA ----------------------------------------------------------------------


def test_env_var_is_honoured(tmp_path, monkeypatch):
    root = _write_sst2(tmp_path / "envglue", TINY_TRAIN)
    monkeypatch.setenv("AUTOPRUMUX_DATA", str(root))
    assert resolve_data_dir() == root
    td = load_task("sst2")
    assert td.source == str(root / "SST-2")
    assert [ex.text_a for ex in td.train] == ["a good movie", "a bad movie", "so-so"]
    assert [ex.label for ex in td.train] == [1, 0, 0]
    assert td.dev == (Example("fine film", None, 1),)


def test_explicit_data_dir_beats_env_var(tmp_path, monkeypatch):
    env_root = _write_sst2(tmp_path / "envglue", TINY_TRAIN)
    arg_root = _write_sst2(tmp_path / "argglue", "sentence\tlabel\nonly row\t1\n")
    monkeypatch.setenv("AUTOPRUMUX_DATA", str(env_root))
    td = load_task("sst2", data_dir=arg_root)
    assert len(td.train) == 1


def test_env_var_pointing_nowhere_is_reported(tmp_path, monkeypatch):
    import autoprumux.data._glue as glue

    monkeypatch.setenv("AUTOPRUMUX_DATA", str(tmp_path / "gone"))
    monkeypatch.setattr(glue, "_project_default_dirs", lambda: [tmp_path / "also-gone"])
    with pytest.raises(DataNotFoundError) as ei:
        load_task("sst2")
    msg = str(ei.value)
    assert str(tmp_path / "gone") in msg and "--data-dir" in msg


# ---- batching -----------------------------------------------------------------------------


def _items(lengths, start=100):
    return [
        Encoded(
            tuple(range(start + 10 * i, start + 10 * i + n)),
            tuple([0] * (n // 2) + [1] * (n - n // 2)),
            i % 2,
        )
        for i, n in enumerate(lengths)
    ]


def test_collate_pads_to_longest_row():
    items = _items([3, 5, 2])
    b = collate(items, pad_id=7)
    assert b["input_ids"].shape == (3, 5)
    assert b["attention_mask"].sum(1).tolist() == [3, 5, 2]
    assert b["input_ids"][0].tolist() == [100, 101, 102, 7, 7]
    assert b["input_ids"][2, 2:].tolist() == [7, 7, 7]
    assert b["token_type_ids"][1].tolist() == [0, 0, 1, 1, 1]
    assert b["token_type_ids"][0, 3:].tolist() == [0, 0]  # padding is segment 0
    assert b["labels"].tolist() == [0, 1, 0]
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        assert b[k].shape == (3, 5)


def test_collate_pad_to():
    items = _items([3, 5, 2])
    b = collate(items, pad_to=12)
    assert b["input_ids"].shape == (3, 12)
    assert b["attention_mask"].sum(1).tolist() == [3, 5, 2]
    assert collate(items, pad_to=4)["input_ids"].shape == (3, 5)  # never cuts a row


def test_infinite_batches_too_few_items_clear_error():
    with pytest.raises(ValueError, match=r"3 examples.*batch size \(4\)"):
        next(infinite_batches(_items([3, 4, 5]), 4))


def test_infinite_batches_full_batches_each_epoch():
    items = _items([2] * 12)
    it = infinite_batches(items, 4, seed=3)
    seen = [next(it) for _ in range(6)]  # two epochs
    assert all(b["input_ids"].shape[0] == 4 for b in seen)
    firsts = [int(x) for b in seen for x in b["input_ids"][:, 0]]
    assert sorted(firsts[:12]) == sorted(firsts[12:]) == [100 + 10 * i for i in range(12)]
    assert firsts[:12] != firsts[12:]  # reshuffled per epoch


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_keep_last_partial_batch(shuffle):
    items = _items([1 + i % 4 for i in range(10)])
    out = list(batches(items, 4, shuffle=shuffle, seed=1))
    assert [b["input_ids"].shape[0] for b in out] == [4, 4, 2]
    firsts = sorted(int(x) for b in out for x in b["input_ids"][:, 0])
    assert firsts == [100 + 10 * i for i in range(10)]
    for b in out:  # dynamic padding per batch
        assert b["input_ids"].shape[1] == int(b["attention_mask"].sum(1).max())


# ---- encode with the real tokenizer ---------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from autoprumux.models import resolve_model

    return resolve_model(None).tokenizer()


def test_encode_pairs_have_second_segment(tokenizer):
    exs = _task("mrpc").dev[:32]
    enc = encode(exs, tokenizer, 128)
    assert len(enc) == len(exs)
    for e, ex in zip(enc, exs, strict=True):
        assert e.label == ex.label
        assert len(e.input_ids) == len(e.token_type_ids)
        assert 1 in e.token_type_ids
        assert e.token_type_ids[0] == 0
        assert e.input_ids[0] == tokenizer.cls_token_id
        assert e.input_ids[-1] == tokenizer.sep_token_id
        assert e.input_ids.count(tokenizer.sep_token_id) == 2
        first_b = e.token_type_ids.index(1)
        assert e.input_ids[first_b - 1] == tokenizer.sep_token_id


def test_encode_single_sentences(tokenizer):
    exs = _task("sst2").dev[:16]
    enc = encode(exs, tokenizer, 128)
    for e in enc:
        assert set(e.token_type_ids) == {0}
        assert (
            e.input_ids[0] == tokenizer.cls_token_id and e.input_ids[-1] == tokenizer.sep_token_id
        )


@pytest.mark.parametrize("name", ["sst2", "mrpc"])
def test_encode_truncates_to_max_seq_len(tokenizer, name):
    exs = _task(name).dev[:64]
    enc = encode(exs, tokenizer, 16)
    lens = [len(e.input_ids) for e in enc]
    assert max(lens) == 16
    assert all(len(e.token_type_ids) == n for e, n in zip(enc, lens, strict=True))
    assert all(e.input_ids[-1] == tokenizer.sep_token_id for e in enc)
    if name == "mrpc":
        assert all(1 in e.token_type_ids for e in enc)  # both segments survive truncation


def test_encode_rejects_tiny_max_seq_len(tokenizer):
    with pytest.raises(ValueError, match="max_seq_len"):
        encode(_task("sst2").dev[:2], tokenizer, 4)
