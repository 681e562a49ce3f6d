"""Issue 17: the model id follows checkpoint contents (1), Recipe values are checked up front
(3), and cache entries are verified against their manifest on every lookup (4)."""

from __future__ import annotations

import builtins
import json
import logging
import math
import os
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from conftest import GLUE_DIR, tiny_bert_config

from autoprumux import _cache
from autoprumux._cache import ArtifactCache, CacheEntryError, file_sha256, verify_entry
from autoprumux.config import RECIPE_PRESETS, Recipe
from autoprumux.errors import ConfigError
from autoprumux.models import resolve_model
from autoprumux.pipeline import PruMuxPipeline
from autoprumux.search import SearchSpace

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(94)]


def _save_bert(d: Path, seed: int) -> None:
    from transformers import BertModel

    torch.manual_seed(seed)
    BertModel(tiny_bert_config()).save_pretrained(d)


def _write_vocab(d: Path, tokens: list[str]) -> None:
    (d / "vocab.txt").write_text("\n".join(tokens) + "\n")


@pytest.fixture
def count_opens(monkeypatch):
    """Paths `_cache` opens to hash (its module-level `open` shadows the builtin)."""
    opened: list[str] = []

    def spy(path, *a, **kw):
        opened.append(os.path.basename(path))
        return builtins.open(path, *a, **kw)

    monkeypatch.setattr(_cache, "open", spy, raising=False)
    return opened


# ---- 1. model id ------------------------------------------------------------------------------
def test_model_id_follows_weight_and_tokenizer_contents(tmp_path):
    d = tmp_path / "ckpt"
    _save_bert(d, seed=0)
    _write_vocab(d, VOCAB)
    first = resolve_model(str(d)).model_id
    assert resolve_model(str(d)).model_id == first  # unchanged files: the same id

    weights = d / "model.safetensors"
    size = weights.stat().st_size
    _save_bert(d, seed=1)  # other weights, same shapes: the old id only saw name and size
    assert weights.stat().st_size == size
    second = resolve_model(str(d)).model_id
    assert second != first

    swapped = VOCAB[:5] + [VOCAB[6], VOCAB[5]] + VOCAB[7:]  # same length, other token ids
    _write_vocab(d, swapped)
    third = resolve_model(str(d)).model_id
    assert third not in (first, second)
    _write_vocab(d, VOCAB)
    assert resolve_model(str(d)).model_id == second  # the id is a function of the contents


def test_model_id_hashes_are_memoised_per_process(tmp_path, monkeypatch, count_opens):
    d = tmp_path / "ckpt"
    _save_bert(d, seed=0)
    _write_vocab(d, VOCAB)
    # freshly written files are rehashed (a rewrite in the same timestamp tick keeps the stat)
    resolve_model(str(d))
    resolve_model(str(d))
    assert count_opens.count("model.safetensors") == 2
    monkeypatch.setattr(_cache, "RACY_NS", 0)  # as if written long ago
    count_opens.clear()
    a = resolve_model(str(d)).model_id
    b = resolve_model(str(d)).model_id
    assert a == b and count_opens.count("model.safetensors") == 1
    assert count_opens.count("vocab.txt") == 1
    _save_bert(d, seed=1)  # a new stat: hashed again
    assert resolve_model(str(d)).model_id != a
    assert count_opens.count("model.safetensors") == 2


def test_file_digest_sees_an_edit_that_restores_the_mtime(tmp_path, monkeypatch):
    monkeypatch.setattr(_cache, "RACY_NS", 0)
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 1000)
    st = f.stat()
    before = file_sha256(f)
    f.write_bytes(b"b" * 1000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime; ctime moves
    assert file_sha256(f) != before


# ---- 3. recipe values -------------------------------------------------------------------------
BAD_RECIPES = [
    ("max_seq_len", 4),
    ("max_seq_len", "64"),
    ("max_train_examples", math.nan),
    ("max_train_examples", 10),  # < batch_size
    ("max_train_examples", True),
    ("batch_size", 32.0),
    ("batch_size", 0),
    ("lr", math.nan),
    ("lr", -1.0),
    ("lr", 0),
    ("lr", "fast"),
    ("lr", "1e-4"),
    ("finetune_steps", -1),
    ("finetune_steps", 1.5),
    ("validation_examples", -1),
    ("validation_examples", 1.5),
    ("stopping_examples", -1),
    ("stopping_examples", 2.5),
    ("eval_every", 0),
    ("patience", 0),
    ("patience", True),
    ("min_delta", -0.1),
    ("min_delta", math.nan),
    ("plateau_anneal", -0.5),
    ("plateau_anneal", 4.5),
    ("mux_warmup_steps", None),
    ("mux_warmup_lr", math.inf),
    ("warmup_corpus_size", -5),
    ("warmup_corpus_size", 5),  # < batch_size while the warm-up runs
    ("mux_finetune_steps", "1000"),
    ("mux_finetune_lr", 0.0),
    ("retrieval_weight", math.nan),
    ("retrieval_weight", 1.5),
    ("distill_weight", math.inf),
    ("distill_weight", -0.1),
    ("recovery_steps", -3),
    ("recovery_layer_distill", -1.0),
    ("int8_recovery_steps", 2.5),
    ("recovery_unlabeled", -1),
    ("recovery_schedule", "front"),
    ("plan_cost", "flops"),
    ("path_plan_cost", "latency"),
    ("recovery", "both"),
    ("mux_pooling", "max"),
    ("mux_pooling", None),
    ("warmup_hidden_distill", math.inf),
    ("mux_hidden_distill", -1.0),
    ("warmup_from_smaller", "true"),
    ("late_mux_freeze_backbone", 1),
    ("late_mux_align", -0.5),
    ("late_mux_lr", 0.0),
    ("late_mux_shared_lr", -1e-4),
    ("student_steps", False),
    ("student_stacking_steps", -1),
    ("student_lr", "fast"),
    ("student_loss", "ce"),
    ("student_init", 0),
    ("student_pooling", "max"),
    ("student_unlabeled", -5),
    ("student_stacking_focus", 1.5),
    ("student_start", 1.0),
    ("snapshot_recovery_steps", -1),
    ("student_start", 0.33),  # not a level of the path's grid
    ("prune_stages", 0),
    ("importance_examples", 0),
    ("freeze_word_embeddings", "no"),
    ("freeze_word_embeddings", 1),
    ("seed", -1),
    ("seed", 1.5),
    ("path_max_sparsity", 0.99),
    ("path_max_sparsity", 0.0),
    ("path_step", 0.0),
    ("path_step", 0.75),
    ("path_schedule", "exponential"),
    ("path_steps", -1),
    ("path_settle_steps", 2.5),
    ("path_distill_weight", 1.5),
    ("path_lr", 0),
    ("path_lr", -1.0),
    ("path_importance_examples", 0),
    ("path_seed", -1),
    ("path_sublayers_per_level", 0),
    ("path_seed", 1.5),
    ("batching", "sorted"),
    ("train_autocast", "fp16"),
    ("trainer", "fast"),
    ("l2l_micro_batches", 0),
    ("l2l_stash", "disk"),
]


@pytest.mark.parametrize("name,value", BAD_RECIPES, ids=[f"{n}={v!r}" for n, v in BAD_RECIPES])
def test_bad_recipe_value_is_a_config_error_naming_field_and_value(name, value):
    with pytest.raises(ConfigError) as e:
        Recipe(**{name: value})
    msg = str(e.value)
    assert f"recipe field {name} ({value!r})" in msg and "must be" in msg, msg


def test_every_recipe_field_has_a_rule_and_a_bad_value_here():
    names = {f.name for f in fields(Recipe)}
    assert {n for n, _ in BAD_RECIPES} == names


def test_recipe_messages_say_the_fix():
    with pytest.raises(
        ConfigError, match=r"recipe field lr \('fast'\) must be a finite number > 0"
    ):
        Recipe(lr="fast")
    with pytest.raises(ConfigError, match=r"write 1\.0e-4"):  # PyYAML reads 1e-4 as a string
        Recipe(lr="1e-4")
    with pytest.raises(ConfigError, match=r"true or false"):
        Recipe(freeze_word_embeddings="no")
    with pytest.raises(ConfigError, match=r"one of \['cls', 'mean'\]"):
        Recipe(mux_pooling="max")
    with pytest.raises(ConfigError, match=r"late_mux_shared_lr \(0.0001\) > 0 needs late_mux_fr"):
        Recipe(late_mux_shared_lr=1e-4, late_mux_freeze_backbone=False)
    assert Recipe(late_mux_shared_lr=1e-4).late_mux_shared_lr == 1e-4


def test_good_recipes_build_and_numbers_are_normalised():
    assert Recipe() == Recipe.preset("fast")
    for name in RECIPE_PRESETS:
        Recipe.preset(name)
    Recipe(max_train_examples=None, mux_warmup_steps=0, warmup_corpus_size=0)
    Recipe(trainer="l2l", l2l_micro_batches=4, l2l_stash="host")
    r = Recipe(lr=1, warmup_hidden_distill=1, distill_weight=0)  # YAML `lr: 1` is an int
    assert type(r.lr) is float and type(r.warmup_hidden_distill) is float
    assert r == Recipe(lr=1.0, warmup_hidden_distill=1.0, distill_weight=0.0)


@pytest.mark.parametrize(
    "recipe,field",
    [
        ({"lr": math.nan}, "lr"),
        ({"lr": "fast"}, "lr"),
        ({"max_train_examples": math.nan}, "max_train_examples"),
        ({"distill_weight": math.inf}, "distill_weight"),
        ({"freeze_word_embeddings": "no"}, "freeze_word_embeddings"),
        ({"warmup_corpus_size": -5}, "warmup_corpus_size"),
    ],
)
def test_search_space_recipe_is_checked(recipe, field):
    space = {"params": {"mux": {"choices": [1]}}, "recipe": recipe}
    with pytest.raises(ConfigError, match=rf"bad 'recipe': recipe field {field} "):
        SearchSpace.from_dict(space)


def test_cli_recipe_flags_are_checked():
    from autoprumux.cli import _recipe, build_parser

    args = build_parser().parse_args(["evaluate", "--warmup-hidden-distill", "nan"])
    with pytest.raises(ConfigError, match=r"recipe field warmup_hidden_distill \(nan\)"):
        _recipe(args)


# ---- 4. cache entries -------------------------------------------------------------------------
KEY = {"model": "m", "n": 2}


class Builder:
    """A cache build that writes a small weight file and reports what it wrote."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, d: Path) -> dict:
        self.calls += 1
        (d / "model").mkdir()
        (d / "model" / "model.safetensors").write_bytes(os.urandom(4096))
        (d / "model" / "config.json").write_text('{"layers": 2}')
        return {"warmup": {"retrieval_accuracy": 0.25, "build": self.calls}}


def _built(tmp_path: Path) -> tuple[ArtifactCache, Builder, Path]:
    cache, build = ArtifactCache(tmp_path), Builder()
    entry, hit = cache.get_or_build("warmup", KEY, build)
    assert not hit and build.calls == 1
    return cache, build, entry


def _truncate(e: Path) -> str:
    f = e / "model" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    return "model/model.safetensors"


def _remove(e: Path) -> str:
    (e / "model" / "model.safetensors").unlink()
    return "model/model.safetensors"


def _flip_byte(e: Path) -> str:
    f = e / "model" / "model.safetensors"
    b = bytearray(f.read_bytes())
    b[2000] ^= 0xFF
    f.write_bytes(bytes(b))  # same size
    return "model/model.safetensors"


def _break_meta(e: Path) -> str:
    (e / "meta.json").write_text('{"warmup": {"retrieval_acc')
    return "meta.json"


def _forge_meta(e: Path) -> str:
    meta = json.loads((e / "meta.json").read_text())
    meta["warmup"]["retrieval_accuracy"] = 0.99
    (e / "meta.json").write_text(json.dumps(meta, indent=2))
    return "meta.json"


def _add_file(e: Path) -> str:
    (e / "model" / "pytorch_model.bin").write_bytes(b"x")
    return "model/pytorch_model.bin"


def _break_manifest(e: Path) -> str:
    (e / "COMPLETE").write_text('{"format": 1, "fil')
    return "COMPLETE"


def _legacy(e: Path) -> str:
    (e / "COMPLETE").write_text("ok\n")  # what entries looked like before manifests
    return "older autoprumux"


DAMAGE = [_truncate, _remove, _flip_byte, _break_meta, _forge_meta, _add_file, _break_manifest]


@pytest.mark.parametrize("damage", [*DAMAGE, _legacy], ids=lambda f: f.__name__.strip("_"))
def test_damaged_entry_is_rebuilt_with_a_warning(tmp_path, damage, caplog):
    cache, build, entry = _built(tmp_path)
    bad = damage(entry)
    assert verify_entry(entry) is not None
    with caplog.at_level(logging.WARNING, logger="autoprumux"):
        again, hit = cache.get_or_build("warmup", KEY, build)
    assert (again, hit, build.calls) == (entry, False, 2)
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(entry) in warning and bad in warning, warning
    meta = ArtifactCache.meta(entry)
    assert meta["warmup"] == {"retrieval_accuracy": 0.25, "build": 2}  # the rebuilt, honest one
    assert verify_entry(entry) is None
    assert sorted(p.name for p in (tmp_path / "warmup").iterdir()) == [entry.name]  # nothing aside
    assert cache.get_or_build("warmup", KEY, build) == (entry, True) and build.calls == 2


@pytest.mark.parametrize("damage", [_truncate, _flip_byte, _forge_meta], ids=lambda f: f.__name__)
def test_has_and_meta_verify_too(tmp_path, damage):
    cache, build, entry = _built(tmp_path)
    assert cache.has("warmup", KEY)
    damage(entry)
    assert not cache.has("warmup", KEY) and not entry.exists()  # moved out of the way

    _, _ = cache.get_or_build("warmup", KEY, build)
    damage(entry)
    with pytest.raises(CacheEntryError, match="run again to rebuild"):
        ArtifactCache.meta(entry)
    assert not entry.exists()
    assert cache.get_or_build("warmup", KEY, build)[1] is False


def test_intact_entry_is_a_hit_and_verification_is_memoised(tmp_path, monkeypatch, count_opens):
    cache, build, entry = _built(tmp_path)
    manifest = json.loads((entry / "COMPLETE").read_text())
    files = {"key.json", "meta.json", "model/config.json", "model/model.safetensors"}
    assert set(manifest["files"]) == files
    monkeypatch.setattr(_cache, "RACY_NS", 0)  # as if written long ago
    count_opens.clear()
    for _ in range(3):
        assert cache.get_or_build("warmup", KEY, build) == (entry, True)
        assert cache.has("warmup", KEY)
        assert ArtifactCache.meta(entry)["warmup"]["build"] == 1
    assert build.calls == 1
    assert sorted(count_opens) == sorted(os.path.basename(f) for f in files)  # each hashed once


def test_a_concurrent_writer_that_finished_first_wins(tmp_path):
    cache, other = ArtifactCache(tmp_path), Builder()

    def slow(d: Path) -> dict:  # another process completes the same entry meanwhile
        cache.get_or_build("warmup", KEY, other)
        (d / "mine").write_text("x")
        return {"mine": True}

    entry, hit = cache.get_or_build("warmup", KEY, slow)
    assert hit and other.calls == 1 and ArtifactCache.meta(entry)["warmup"]["build"] == 1
    assert [p.name for p in (tmp_path / "warmup").iterdir()] == [entry.name]


def test_leftover_of_a_dead_quarantine_is_removed(tmp_path):
    cache, build, entry = _built(tmp_path)
    dead = 2**22 + 12345  # above the default pid_max: no such process
    left = entry.parent / f".corrupt-{entry.name}-{dead}-1"
    left.mkdir()
    _truncate(entry)
    cache.get_or_build("warmup", KEY, build)
    assert not left.exists()


def test_pipeline_rebuilds_a_truncated_baseline(tiny_checkpoint, tmp_path, caplog):
    recipe = Recipe(max_train_examples=64, batch_size=16, max_seq_len=32, finetune_steps=2)

    def pipe() -> PruMuxPipeline:
        return PruMuxPipeline(
            task="sst2",
            model=tiny_checkpoint,
            recipe=recipe,
            data_dir=str(GLUE_DIR),
            cache_dir=tmp_path,
        )

    pipe().baseline()
    (entry,) = (tmp_path / "baseline").iterdir()
    weights = entry / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with caplog.at_level(logging.INFO, logger="autoprumux"):
        model = pipe().baseline()
    assert any(
        str(entry) in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )
    assert any("baseline trained" in r.getMessage() for r in caplog.records)
    assert model.n == 1 and verify_entry(entry) is None
