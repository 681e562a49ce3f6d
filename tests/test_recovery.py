"""Pruning recovery with layer-wise distillation: the layer map, the per-layer states it reads,
its rules, and that training with it lowers the distance to the teacher's layers."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import random_batch, tiny_encoder
from test_search import DATA, TINY_RECIPE, TP

from autoprumux import Candidate, PruMuxPipeline, Recipe
from autoprumux.config import MuxShape
from autoprumux.data import UNLABELED, Encoded, collate
from autoprumux.errors import ConfigError
from autoprumux.models import MuxConfig, MuxSequenceClassifier, PruningPlan, apply_plan
from autoprumux.training import (
    TeacherLayers,
    TrainConfig,
    predict,
    train_classifier,
    write_teacher_layers,
)
from autoprumux.training._losses import (
    kd_loss,
    layer_distill_loss,
    layer_map,
    task_cross_entropy,
)
from autoprumux.training._prune import recovery_schedule


def _classifier(n: int = 1, layers: int = 4, seed: int = 0) -> MuxSequenceClassifier:
    enc, _ = tiny_encoder(seed, num_hidden_layers=layers)
    return MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(n=n)).eval()


def _items(count: int = 64) -> list[Encoded]:
    ids, mask, _ = random_batch(count, 12, seed=3)
    return [
        Encoded(tuple(int(t) for t in row[: int(m.sum())]), (0,) * int(m.sum()), i % 2)
        for i, (row, m) in enumerate(zip(ids, mask, strict=True))
    ]


@pytest.fixture
def tiny_pipe(tiny_checkpoint, tmp_path):
    """A factory of tiny-model SST-2 pipelines sharing one cache; keywords override the recipe."""

    def make(**recipe) -> PruMuxPipeline:
        return PruMuxPipeline(
            task="sst2",
            model=tiny_checkpoint,
            recipe=Recipe(**{**TINY_RECIPE, **recipe}),
            data_dir=str(DATA),
            cache_dir=tmp_path / "cache",
        )

    return make


def test_each_student_layer_maps_to_a_teacher_layer_spread_evenly():
    assert layer_map(6, 6) == [0, 1, 2, 3, 4, 5]
    assert layer_map(3, 6) == [1, 3, 5]
    assert layer_map(2, 6) == [2, 5]
    assert layer_map(1, 6) == [5]
    assert layer_map(4, 6)[-1] == 5 and layer_map(4, 6) == sorted(layer_map(4, 6))


def test_per_layer_states_are_read_for_n1_only():
    m = _classifier()
    ids, mask, tt = random_batch(4, 10)
    layers: list[torch.Tensor] = []
    with torch.no_grad():
        final = m.hidden_states(ids, mask, tt, positions="all", layers=layers)
    assert len(layers) == len(m.encoder.layers) and torch.equal(layers[-1], final)
    with pytest.raises(ValueError, match="N=1"):
        _classifier(n=2).hidden_states(ids, mask, tt, positions="all", layers=[])


def test_layer_distillation_rules():
    with pytest.raises(ConfigError, match=r"layer_distill_weight \(-1.0\) must be a number >= 0"):
        TrainConfig(steps=1, layer_distill_weight=-1.0)
    with pytest.raises(ConfigError, match="needs the standard trainer"):
        TrainConfig(steps=1, layer_distill_weight=1.0, trainer="l2l", micro_batches=2)
    with pytest.raises(ConfigError, match="recovery_layer_distill > 0 needs trainer 'standard'"):
        Recipe(recovery_layer_distill=1.0, trainer="l2l")
    with pytest.raises(ConfigError, match="need a teacher"):
        train_classifier(_classifier(), _items(), TrainConfig(steps=1, layer_distill_weight=1.0))
    with pytest.raises(ConfigError, match="for N=1 models"):
        train_classifier(
            _classifier(n=2),
            _items(),
            TrainConfig(steps=1, batch_size=8, layer_distill_weight=1.0),
            teacher=_classifier(),
        )


def _layer_gap(student: MuxSequenceClassifier, teacher: MuxSequenceClassifier) -> float:
    ids, mask, tt = random_batch(32, 12, seed=9)
    s_layers: list[torch.Tensor] = []
    t_layers: list[torch.Tensor] = []
    with torch.no_grad():
        student.eval().hidden_states(ids, mask, tt, positions="all", layers=s_layers)
        teacher.eval().hidden_states(ids, mask, tt, positions="all", layers=t_layers)
    return float(layer_distill_loss(s_layers, t_layers, mask))


def test_layer_distillation_lowers_the_distance_to_the_teachers_layers():
    teacher = _classifier(layers=4)
    pruned = _classifier(layers=4, seed=1)  # its layers far from the teacher's
    layers = len(pruned.encoder.layers)
    apply_plan(  # two heads of four and half the FFN units, the last layer removed
        pruned.encoder,
        PruningPlan(
            keep_heads=((0, 1),) * (layers - 1) + ((),),
            keep_ffn=(tuple(range(18)),) * (layers - 1) + ((),),
            drop_attn=(False,) * (layers - 1) + (True,),
            drop_ffn=(False,) * (layers - 1) + (True,),
        ),
    )
    assert len(pruned.encoder.layers) == layers - 1
    before = _layer_gap(pruned, teacher)
    runs = {}
    for weight in (0.0, 1.0):
        m = copy.deepcopy(pruned)
        cfg = TrainConfig(
            steps=30, batch_size=16, lr=1e-3, distill_weight=0.5, layer_distill_weight=weight
        )
        train_classifier(m, _items(), cfg, teacher=teacher)
        runs[weight] = _layer_gap(m, teacher)
    assert runs[1.0] < 0.8 * before and runs[1.0] < 0.8 * runs[0.0], (before, runs)


def test_the_pipeline_recovers_n1_candidates_with_layer_distillation(tiny_pipe, tmp_path):
    plain, layered = tiny_pipe(), tiny_pipe(recovery_layer_distill=1.0)
    a = plain.evaluate(Candidate(sparsity=0.3), throughput=TP)
    b = layered.evaluate(Candidate(sparsity=0.3), throughput=TP)
    # its own cache entry (the recipe differs), the same baseline
    assert len(list((tmp_path / "cache").glob("candidate/*"))) == 2
    assert len(list((tmp_path / "cache").glob("baseline/*"))) == 1
    assert a.candidate.sparsity == pytest.approx(b.candidate.sparsity, abs=0.02)


def test_cached_teacher_logits_train_like_the_running_teacher():
    teacher = _classifier(layers=2)
    items = _items()
    table = predict(teacher, items)
    cfg = TrainConfig(steps=8, batch_size=16, lr=1e-3, distill_weight=0.7)
    a, b = _classifier(layers=2, seed=1), _classifier(layers=2, seed=1)
    train_classifier(a, items, cfg, teacher=teacher)
    train_classifier(b, items, cfg, teacher=teacher, teacher_logits=table)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-4), name
    with pytest.raises(ValueError, match="rows for"):
        train_classifier(b, items, cfg, teacher=teacher, teacher_logits=table[:10])


def test_teacher_logits_are_cached_with_the_baseline_and_keyed_like_it(tiny_pipe, tmp_path):

    first = tiny_pipe()
    logits = first.teacher_logits()
    assert logits is not None and logits.shape == (len(first.train_items), 2)
    assert torch.allclose(logits, predict(first.baseline(), first.train_items), atol=1e-5)
    entries = lambda: sorted((tmp_path / "cache").glob("teacher/*"))  # noqa: E731
    assert len(entries()) == 1
    again = tiny_pipe().teacher_logits()  # another process would read the same entry
    assert again is not None and torch.equal(again, logits) and len(entries()) == 1
    tiny_pipe(finetune_steps=3).teacher_logits()  # another baseline: another entry
    assert len(entries()) == 2
    assert tiny_pipe(distill_weight=0.0).teacher_logits() is None  # nothing to distil


def test_teacher_layer_table_holds_each_layers_states_in_any_row_order(tmp_path):
    teacher = _classifier(layers=3)
    items = _items(40)
    shape = write_teacher_layers(teacher, items, tmp_path, batch_size=16)
    table = TeacherLayers(tmp_path)
    assert len(table) == 40 and table.num_layers == 3 and shape["length"] == 12
    assert shape["bytes"] >= 3 * 40 * 12 * 32 * 2  # fp16 (items, tokens, hidden) per layer
    index = torch.tensor([7, 0, 33, 12, 5])
    b = collate([items[i] for i in index.tolist()])
    want: list[torch.Tensor] = []
    with torch.no_grad():
        teacher.hidden_states(
            b["input_ids"], b["attention_mask"], b["token_type_ids"], positions="all", layers=want
        )
    got = table.batch(index, b["input_ids"].shape[1], "cpu")
    real = b["attention_mask"].bool()
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == torch.float32
        torch.testing.assert_close(g[real], w[real], atol=1e-2, rtol=1e-2)  # fp16 rounding
    with pytest.raises(FileNotFoundError, match="no teacher layer states"):
        TeacherLayers(tmp_path / "missing")


def test_cached_teacher_layers_train_like_the_running_teacher(tmp_path):
    teacher = _classifier(layers=2)
    items = _items()
    logits = predict(teacher, items)
    write_teacher_layers(teacher, items, tmp_path)
    table = TeacherLayers(tmp_path)
    cfg = TrainConfig(steps=8, batch_size=16, lr=1e-3, distill_weight=0.5, layer_distill_weight=1)
    a, b = _classifier(layers=2, seed=1), _classifier(layers=2, seed=1)
    train_classifier(a, items, cfg, teacher=teacher)
    # a different teacher object: with both tables the loop must not run it
    other = _classifier(layers=2, seed=5)
    train_classifier(b, items, cfg, teacher=other, teacher_logits=logits, teacher_layers=table)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(pa, pb, atol=5e-4), name
    with pytest.raises(ValueError, match="one row per training item"):
        train_classifier(
            b, items[:32], cfg, teacher=other, teacher_logits=logits[:32], teacher_layers=table
        )


def test_teacher_layers_are_cached_once_and_only_for_layer_distillation(tiny_pipe, tmp_path):

    assert tiny_pipe().teacher_layers() is None  # no layer distillation: nothing written
    layered = tiny_pipe(recovery_layer_distill=1.0)
    layered.evaluate(Candidate(sparsity=0.3), throughput=TP)
    table = layered.teacher_layers()
    assert table is not None and len(table) == len(layered.train_items)
    assert table.num_layers == len(layered.baseline().encoder.layers)
    entries = sorted((tmp_path / "cache").glob("teacher/*"))
    meta = [layered.cache.meta(e) for e in entries]
    assert sum("layers" in m for m in meta) == 1 and all(m["seconds"] >= 0 for m in meta)
    again = tiny_pipe(recovery_layer_distill=1.0).teacher_layers()  # read, not rebuilt
    assert again is not None and again.directory == table.directory
    assert sorted((tmp_path / "cache").glob("teacher/*")) == entries


def test_unlabeled_rows_add_no_task_loss():
    logits = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor([2, UNLABELED, 0, UNLABELED, 1, 1])
    known = labels != UNLABELED
    want = torch.nn.functional.cross_entropy(logits[known], labels[known])
    torch.testing.assert_close(task_cross_entropy(logits, labels), want)
    full = torch.tensor([2, 0, 0, 1, 1, 1])
    torch.testing.assert_close(
        task_cross_entropy(logits, full), torch.nn.functional.cross_entropy(logits, full)
    )
    none = task_cross_entropy(logits, torch.full((6,), UNLABELED))
    none.backward()  # a batch without labels: zero loss, and still a graph to step through
    assert float(none.detach()) == 0.0 and logits.grad is not None and not logits.grad.any()


def test_unlabeled_items_are_distilled_from_the_teachers_logits():
    teacher = _classifier(layers=2)
    items = [Encoded(x.input_ids, x.token_type_ids, UNLABELED) for x in _items()]
    table = predict(teacher, items)
    student = _classifier(layers=2, seed=1)

    def gap() -> float:
        return float(kd_loss(predict(student, items), table, 1.0))

    before = gap()
    cfg = TrainConfig(steps=20, batch_size=16, lr=1e-3, distill_weight=0.5)
    train_classifier(student, items, cfg, teacher=teacher, teacher_logits=table)
    assert gap() < 0.5 * before, (before, gap())


def test_recovery_distils_unlabeled_sentences_with_their_own_cache_keys(tiny_pipe, tmp_path):
    from autoprumux.pipeline._corpus import unlabeled_items
    from autoprumux.pipeline._recovery import recovery_set

    plain, more = tiny_pipe(), tiny_pipe(recovery_unlabeled=40)
    items, logits = recovery_set(more)
    extra = items[len(more.train_items) :]
    assert len(extra) == 40 and {x.label for x in extra} == {UNLABELED}
    assert logits is not None and logits.shape == (len(items), 2)
    torch.testing.assert_close(logits[-40:], predict(more.baseline(), extra), atol=1e-5, rtol=0)
    key = more.candidate_entry_key(0.3, MuxShape())
    assert key != plain.candidate_entry_key(0.3, MuxShape()) and key["unlabeled"] == 40
    more.evaluate(Candidate(sparsity=0.3), throughput=TP)
    plain.evaluate(Candidate(sparsity=0.3), throughput=TP)
    assert len(list((tmp_path / "cache").glob("candidate/*"))) == 2  # apart
    assert len(list((tmp_path / "cache").glob("baseline/*"))) == 1  # one teacher for both
    # with layer distillation too, the layer table covers the unlabeled rows
    layered = tiny_pipe(recovery_unlabeled=40, recovery_layer_distill=1.0)
    table = layered.teacher_layers()
    assert table is not None and len(table) == len(items)
    # a recipe that does not distil adds nothing: the sentences would have no target
    quiet = tiny_pipe(recovery_unlabeled=40, distill_weight=0.0)
    assert unlabeled_items(quiet) == ([], {}) and recovery_set(quiet)[0] == quiet.train_items


def test_recovery_schedules_split_every_step_over_the_stages():
    assert recovery_schedule(150, 2, "even") == [75, 75]
    assert recovery_schedule(151, 2, "even") == [75, 76]
    assert recovery_schedule(600, 3, "rising") == [100, 200, 300]
    assert recovery_schedule(100, 4, "rising") == [10, 20, 30, 40]
    for total, stages in ((7, 3), (2000, 4), (0, 2), (5, 1)):
        for schedule in ("even", "rising"):
            steps = recovery_schedule(total, stages, schedule)
            assert len(steps) == stages and sum(steps) == total and min(steps) >= 0
    with pytest.raises(ConfigError, match=r"recovery schedule \('front'\) must be one of"):
        recovery_schedule(10, 2, "front")


def test_a_rising_schedule_is_keyed_and_spends_more_steps_late(tiny_pipe, tmp_path):
    def pipe(**recipe) -> PruMuxPipeline:
        return tiny_pipe(prune_stages=2, recovery_steps=6, **recipe)

    even, rising = pipe(), pipe(recovery_schedule="rising")
    assert even.candidate_entry_key(0.3, MuxShape())["recovery_schedule"] == "even"
    assert rising.candidate_entry_key(0.3, MuxShape())["recovery_schedule"] == "rising"
    model = copy.deepcopy(rising.baseline())
    stats = rising.prune(model, 0.3)
    assert [s["train"]["steps"] for s in stats["stages"]] == [2.0, 4.0]
