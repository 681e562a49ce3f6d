"""Academus students: batched parallel execution, boosting, prefixes, persistence, bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import random_batch, tiny_encoder

from autoprumux.data import Encoded
from autoprumux.errors import ConfigError
from autoprumux.models import MuxConfig, MuxSequenceClassifier, StudentConfig, StudentEnsemble
from autoprumux.training import StudentTrainConfig, distill_students, ensemble_outputs


def teacher(layers: int = 4, seed: int = 0, scale: float = 1.0) -> MuxSequenceClassifier:
    enc, _ = tiny_encoder(seed=seed, num_hidden_layers=layers)
    m = MuxSequenceClassifier(enc, num_labels=3, mux=MuxConfig(n=1))
    with torch.no_grad():
        m.classifier.weight.normal_(0.0, scale)
    return m.eval()


def hard_teacher() -> MuxSequenceClassifier:
    """A teacher whose upper layers matter, so shallow students cannot copy it exactly."""
    t = teacher(layers=4, scale=3.0)
    with torch.no_grad():
        for layer in list(t.encoder.layers)[1:]:
            for p in layer.parameters():
                if p.ndim == 2:
                    p.mul_(4.0)
    return t


def perturbed(ens: StudentEnsemble, seed: int = 1) -> StudentEnsemble:
    """Make every student different (fresh students start as copies / with zero heads)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ens.students.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return ens


def items(n: int, length: int = 12, seed: int = 0) -> list[Encoded]:
    ids, mask, tt = random_batch(n, length, seed=seed)
    return [
        Encoded(tuple(ids[i, : int(mask[i].sum())].tolist()), (0,) * int(mask[i].sum()), 0)
        for i in range(n)
    ]


@pytest.mark.parametrize("depth, pooling", [(1, "cls"), (2, "cls"), (3, "cls"), (2, "mean")])
def test_parallel_equals_sequential_sum(depth, pooling):
    cfg = StudentConfig(k=4, depth=depth, pooling=pooling)
    ens = perturbed(StudentEnsemble.from_teacher(teacher(), cfg)).eval()
    ids, mask, tt = random_batch(5, 16, seed=3)
    with torch.no_grad():
        x, bias = ens.embed(ids, mask, tt)
        seq = torch.stack([s(x, bias) for s in ens.students])
        for k in range(1, 5):
            par = ens.student_logits(ids, mask, tt, active=k, parallel=True)
            assert par.shape == (k, 5, 3)
            torch.testing.assert_close(par, seq[:k], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(
                ens(ids, mask, tt, active=k), seq[:k].sum(0), rtol=1e-4, atol=1e-5
            )
    # the stacked copy follows weight changes made through train()
    ens.train()
    with torch.no_grad():
        ens.students[2].classifier.bias.add_(1.0)
    ens.eval()
    with torch.no_grad():
        torch.testing.assert_close(ens(ids, mask, tt), seq.sum(0) + 1.0, rtol=1e-4, atol=1e-4)


def test_first_student_starts_as_truncated_teacher_and_others_add_nothing():
    t = teacher(layers=3)
    ens = StudentEnsemble.from_teacher(t, StudentConfig(k=3, depth=2)).eval()
    ids, mask, tt = random_batch(4, 10, seed=1)
    with torch.no_grad():
        per = ens.student_logits(ids, mask, tt)
        assert torch.count_nonzero(per[1:]) == 0
        h = t.encoder.embeddings(ids, tt)
        from autoprumux.models._encoder import attention_bias

        b = attention_bias(mask)
        for layer in list(t.encoder.layers)[:2]:
            h = layer(h, b)
        torch.testing.assert_close(per[0], t.head(h[:, 0]), rtol=1e-4, atol=1e-5)


def three_students(
    t: MuxSequenceClassifier,
    train: list[Encoded],
    steps: int,
    stacking_steps: int,
    stacking_lr: float,
    held: list[Encoded] | None = None,
    **levers: object,
) -> tuple[StudentEnsemble, dict]:
    """Three 1-layer students of `t` at the boosting rate 3e-3, batch 32."""
    tcfg = StudentTrainConfig(
        steps_per_student=steps,
        stacking_steps=stacking_steps,
        batch_size=32,
        lr=3e-3,
        stacking_lr=stacking_lr,
        **levers,  # type: ignore[arg-type]
    )
    return distill_students(t, train, StudentConfig(k=3, depth=1), tcfg, heldout=held or ())


def test_boosting_lowers_the_residual_with_each_student_and_prefixes_degrade_gracefully():
    t = hard_teacher()
    train = items(256, seed=0)
    held = items(64, seed=9)
    # the residual's own loss ("mse"): its MSE falls with each student
    ens, stats = three_students(t, train, 60, 30, 1e-3, held=held, loss="mse")
    r = stats["residual_mse"]
    assert len(r) == 3
    assert all(b < a for a, b in zip(r, r[1:], strict=False)), r
    h = stats["heldout_residual_mse"]
    assert h[-1] < h[0], h
    # after stacking every prefix is still a model: its error falls as students are added
    p = stats["prefix_mse"]
    assert all(b <= a * 1.02 for a, b in zip(p, p[1:], strict=False)), p
    # and agreement with the teacher's decision degrades gracefully, not to chance, with fewer students
    with torch.no_grad():
        from autoprumux.training import predict

        tl = predict(t, held).argmax(-1)
        per = ensemble_outputs(ens, held)
        agree = [float((per[:k].sum(0).argmax(-1) == tl).float().mean()) for k in range(1, 4)]
    assert agree[0] > 0.5 and agree[-1] >= agree[0] - 0.05, agree


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_save_load_roundtrip(tmp_path, pooling):
    cfg = StudentConfig(k=3, depth=2, pooling=pooling)
    ens = perturbed(StudentEnsemble.from_teacher(teacher(), cfg)).eval()
    ens.save(tmp_path / "m")
    back = StudentEnsemble.load(tmp_path / "m")
    ids, mask, tt = random_batch(3, 9, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(back(ids, mask, tt), ens(ids, mask, tt))
    assert (back.k, back.depth, back.pooling) == (3, 2, pooling)
    assert back.sparsity() == pytest.approx(ens.sparsity())
    # 3 students x 2 layers hold 1.5x the 4-layer teacher's layer parameters
    assert ens.sparsity() == pytest.approx(1 - 6 / 4)
    ens.active_students = 2
    assert ens.sparsity() == pytest.approx(0.0)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"k": 0}, "students K"),
        ({"k": 17}, "students K"),
        ({"depth": 4}, "student depth"),
        ({"depth": "two"}, "student depth"),
        ({"k": 2.5}, "students K"),
        ({"pooling": "max"}, "student pooling"),
    ],
)
def test_bad_student_config(kw, match):
    with pytest.raises(ConfigError, match=match):
        StudentConfig(**kw)


def test_bad_teacher_and_active():
    with pytest.raises(
        ConfigError, match="below the 2 layers of the model the students start from"
    ):
        StudentEnsemble.from_teacher(teacher(layers=2), StudentConfig(k=2, depth=2))
    enc, _ = tiny_encoder(num_hidden_layers=3)
    mux = MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(n=2))
    with pytest.raises(ConfigError, match="N=1"):
        StudentEnsemble.from_teacher(mux, StudentConfig(k=2, depth=1))
    ens = StudentEnsemble.from_teacher(teacher(), StudentConfig(k=2, depth=1))
    for bad in (0, 3, "1", 1.0):
        with pytest.raises(ConfigError, match="active students"):
            ens.active_students = bad  # type: ignore[assignment]


def test_pipeline_students_cached_and_measured_beside_the_baseline(tiny_checkpoint, tmp_path):
    from conftest import GLUE_DIR

    from autoprumux import PruMuxPipeline, Recipe
    from autoprumux.evaluation import ThroughputConfig

    recipe = Recipe(
        max_train_examples=64,
        batch_size=16,
        max_seq_len=32,
        finetune_steps=2,
        student_steps=3,
        student_stacking_steps=2,
    )

    def pipe(**levers: object) -> PruMuxPipeline:
        return PruMuxPipeline(
            task="sst2",
            model=tiny_checkpoint,
            recipe=dataclasses.replace(recipe, **levers),
            data_dir=str(GLUE_DIR),
            cache_dir=tmp_path,
        )

    tp = ThroughputConfig(batch_size=8, seq_len=16, repeats=2, warmup=1)
    ev = pipe().evaluate_students(2, 1, throughput=tp)
    c = ev.candidate
    assert c.extra["technique"] == "students" and c.extra["students"] == 2
    assert c.extra["depth"] == 1 and c.extra["active_students"] == 2
    # two 1-layer students against the 2-layer tiny teacher: the same layer parameters
    assert c.sparsity == pytest.approx(0.0, abs=1e-6)
    assert 0.0 <= c.metric <= 100.0 and c.throughput > 0 and ev.baseline.throughput > 0
    assert ev.ideal_speedup == pytest.approx(ev.baseline.flops / c.flops)
    entry = next((tmp_path / "students").iterdir())
    mtime = (entry / "model" / "model.safetensors").stat().st_mtime
    # a new pipeline hits the cache; a prefix of the students is measured without retraining
    one = pipe().evaluate_students(2, 1, active=1, throughput=tp)
    assert (entry / "model" / "model.safetensors").stat().st_mtime == mtime
    assert one.candidate.extra["active_students"] == 1
    assert one.candidate.flops == pytest.approx(c.flops / 2)
    with pytest.raises(ConfigError, match="active students"):
        pipe().evaluate_students(2, 1, active=3, throughput=tp)
    # the distillation levers are part of the key: other students, the defaults' entry kept
    kl = pipe(student_loss="kl", student_init="spread", student_stacking_focus=0.5).students(2, 1)
    entries = sorted((tmp_path / "students").iterdir())
    assert len(entries) == 2 and entry in entries
    spread = next(e for e in entries if e != entry)
    assert '"student_stacking_focus": 0.5' in (spread / "key.json").read_text()
    assert (entry / "model" / "model.safetensors").stat().st_mtime == mtime
    default = pipe().students(2, 1)
    with torch.no_grad():
        ids, mask, tt = random_batch(3, 8, seed=2)
        assert not torch.equal(kl(ids, mask, tt), default(ids, mask, tt))
    # [CLS] pooling over a distillation set grown by corpus sentences: a third entry, whose
    # students read [CLS] (the default reads the token mean) and saw more than the train items
    wide = pipe(student_pooling="cls", student_unlabeled=40).students(2, 1)
    entries = sorted((tmp_path / "students").iterdir())
    assert len(entries) == 3 and wide.pooling == "cls" and default.pooling == "mean"
    new = next(e for e in entries if "student_unlabeled_corpus" in (e / "key.json").read_text())
    import json

    stats = json.loads((new / "meta.json").read_text())["distillation"]
    # the teacher's training items (64 less the validation split, never trained on) plus 40
    trained_on = len(pipe().train_items)
    assert 0 < trained_on < 64
    assert stats["distillation_examples"] == trained_on + 40


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_student_view_computes_the_student_and_trains_it_in_place(pooling):
    from autoprumux.training._students import student_view

    cfg = StudentConfig(k=2, depth=2, pooling=pooling)
    ens = perturbed(StudentEnsemble.from_teacher(hard_teacher(), cfg))
    ens.eval()
    view = student_view(ens, 1).eval()
    ids, mask, tt = random_batch(4, 11, seed=5)
    with torch.no_grad():
        x, bias = ens.embed(ids, mask, tt)
        torch.testing.assert_close(view(ids, mask, tt), ens.students[1](x, bias))
    # the view's trainable parameters are exactly student 1's: the embeddings stay frozen
    trainable = {id(p) for p in view.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in ens.students[1].parameters()}


@pytest.mark.parametrize("stash", ["device", "host"])
def test_boosting_with_the_l2l_trainer_equals_the_standard_loop(stash):
    t = hard_teacher()
    train = items(64, seed=0)
    out = {}
    for trainer in ("standard", "l2l"):
        ens, stats = distill_students(
            t,
            train,
            StudentConfig(k=2, depth=2),
            StudentTrainConfig(
                steps_per_student=3,
                stacking_steps=0,
                batch_size=16,
                lr=1e-3,
                trainer=trainer,
                micro_batches=4 if trainer == "l2l" else 1,
                stash=stash,
            ),
        )
        out[trainer] = (ens, stats)
    (a, sa), (b, sb) = out["standard"], out["l2l"]
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)
    assert sb["student_train"][0]["peak_device_bytes"] > 0
    assert sa["residual_mse"] == pytest.approx(sb["residual_mse"], rel=1e-4)


def test_l2l_students_reject_a_bad_micro_batch_count():
    with pytest.raises(ConfigError, match="micro"):
        StudentTrainConfig(batch_size=16, trainer="l2l", micro_batches=3)


def test_a_diverging_loss_stops_training_and_names_the_learning_rate():
    t = hard_teacher()
    with pytest.raises(FloatingPointError, match=r"learning rate \(1e\+30\)"):
        distill_students(
            t,
            items(32, seed=0),
            StudentConfig(k=1, depth=1),
            StudentTrainConfig(steps_per_student=20, stacking_steps=0, batch_size=16, lr=1e30),
        )


def _kl_to_teacher(t: MuxSequenceClassifier, ens: StudentEnsemble, data, temperature: float):
    from autoprumux.training import predict
    from autoprumux.training._losses import kd_loss

    tl = predict(t, data)
    sums = ensemble_outputs(ens, data).cumsum(0)
    return [float(kd_loss(sums[k], tl, temperature)) for k in range(sums.shape[0])]


def test_kl_boosting_fits_each_student_around_the_sum_before_it():
    """loss="kl": every added student lowers the KL between the sum so far and the teacher (the
    fit is around the fixed earlier students, not on a residual of its own), stacking lowers the
    mean over the prefixes, and the run differs from the MSE run (the loss is really used)."""
    t = hard_teacher()
    train = items(256, seed=0)
    tcfg = StudentTrainConfig(
        steps_per_student=60,
        stacking_steps=0,
        batch_size=32,
        lr=3e-3,
        stacking_lr=1e-3,
        loss="kl",
        temperature=2.0,
    )
    ens, _ = distill_students(t, train, StudentConfig(k=3, depth=1), tcfg)
    kl = _kl_to_teacher(t, ens, train, 2.0)
    assert all(b < a for a, b in zip(kl, kl[1:], strict=False)), kl
    stacked, _ = distill_students(
        t,
        train,
        StudentConfig(k=3, depth=1),
        # Adam at the boosting rate (3e-3, or even 1e-3) overshoots a fit this close
        StudentTrainConfig(**{**tcfg.__dict__, "stacking_steps": 30, "stacking_lr": 3e-4}),
    )
    kl_stacked = _kl_to_teacher(t, stacked, train, 2.0)
    # stacking lowers what it minimises, the mean over the prefixes (it may trade the full
    # sum's KL for the shorter prefixes': on this toy fit it moves by a few percent either way
    # with the thread count)
    assert sum(kl_stacked) < sum(kl), (kl, kl_stacked)
    mse, _ = distill_students(
        t,
        train,
        StudentConfig(k=3, depth=1),
        StudentTrainConfig(**{**tcfg.__dict__, "loss": "mse"}),
    )
    assert not torch.equal(ensemble_outputs(mse, train[:8]), ensemble_outputs(ens, train[:8]))


def test_stacking_focus_moves_the_loss_to_the_full_sum():
    """stacking_loss: focus 0 is the mean over the prefixes, 1 the full sum's loss alone, and
    between them the mix; trained with focus 1, the first student alone ends further from the
    teacher than with focus 0 (the focus reaches the stacking step)."""
    from autoprumux.training import TrainConfig
    from autoprumux.training._losses import kd_loss
    from autoprumux.training._students import stacking_loss

    g = torch.Generator().manual_seed(0)
    sums, y = torch.randn(3, 8, 2, generator=g), torch.randn(8, 2, generator=g)
    cfg = TrainConfig(steps=1, batch_size=8, logit_loss="kl", temperature=2.0)
    per_prefix = [float(kd_loss(sums[k], y, 2.0)) for k in range(3)]
    assert float(stacking_loss(sums, y, cfg, 0.0)) == pytest.approx(sum(per_prefix) / 3)
    assert float(stacking_loss(sums, y, cfg, 1.0)) == pytest.approx(per_prefix[-1])
    assert float(stacking_loss(sums, y, cfg, 0.25)) == pytest.approx(
        0.75 * sum(per_prefix) / 3 + 0.25 * per_prefix[-1]
    )
    t = hard_teacher()
    train = items(256, seed=0)
    kls = {}
    for focus in (0.0, 1.0):
        ens, _ = three_students(t, train, 40, 60, 3e-4, stacking_focus=focus)
        kls[focus] = _kl_to_teacher(t, ens, train, 2.0)
    # nothing holds the first student near the teacher when the focus is all on the full sum
    assert kls[1.0][0] > 1.2 * kls[0.0][0], kls


def test_spread_students_start_from_different_teacher_layers():
    """init="spread": student j's layers are copies of the teacher's layers from
    `student_first_layers`, evenly from the lowest to the highest that fits."""
    from autoprumux.models._students import student_first_layers

    assert student_first_layers(6, 4, 2, "spread") == [0, 1, 3, 4]
    assert student_first_layers(6, 4, 2, "bottom") == [0, 0, 0, 0]
    assert student_first_layers(6, 1, 3, "spread") == [0]
    assert student_first_layers(4, 2, 3, "spread") == [0, 1]
    with pytest.raises(ConfigError, match="student init"):
        student_first_layers(6, 2, 2, "top")
    t = teacher(layers=4)
    ens, _ = distill_students(
        t,
        items(64),
        StudentConfig(k=3, depth=2),
        StudentTrainConfig(steps_per_student=0, stacking_steps=0, batch_size=32, init="spread"),
    )
    for j, first in enumerate([0, 1, 2]):
        for mine, theirs in zip(
            ens.students[j].layers, list(t.encoder.layers)[first : first + 2], strict=True
        ):
            for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
                assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"loss": "ce"}, "student loss"),
        ({"temperature": 0.0}, "student temperature"),
        ({"temperature": float("nan")}, "student temperature"),
        ({"init": "top"}, "student init"),
        ({"later_lr": 0.0}, "later_lr"),
        ({"stacking_focus": 1.5}, "stacking_focus"),
        ({"stacking_focus": -0.1}, "stacking_focus"),
    ],
)
def test_bad_student_levers(kw, match):
    with pytest.raises(ConfigError, match=match):
        StudentTrainConfig(**kw)


def test_later_students_train_at_their_own_rate():
    """`later_lr` applies to students 2..K only: student 1 comes out the same, and the later
    students, which start from a zero classifier, grow further at the higher rate."""
    t = hard_teacher()
    train = items(128, seed=0)
    base = StudentTrainConfig(
        steps_per_student=30, stacking_steps=0, batch_size=32, lr=2e-4, loss="kl"
    )
    runs = {}
    for later_lr in (None, 3e-3):
        torch.manual_seed(0)
        runs[later_lr], _ = distill_students(
            t, train, StudentConfig(k=3, depth=1), dataclasses.replace(base, later_lr=later_lr)
        )
    slow, fast = runs[None], runs[3e-3]
    for a, b in zip(slow.students[0].parameters(), fast.students[0].parameters(), strict=True):
        torch.testing.assert_close(a, b)
    for j in (1, 2):
        grown = [float(e.students[j].classifier.weight.norm()) for e in (slow, fast)]
        assert grown[1] > 2 * grown[0], (j, grown)


def pruned_start(layers: int = 5) -> MuxSequenceClassifier:
    """A teacher pruned unevenly, as a path snapshot is: 2, 1, no heads (the attention's bias
    kept) and 4 heads, 16, 5, 37 and no FFN units, the fourth layer's FFN and the fifth's
    attention removed."""
    from autoprumux.models import PruningPlan, apply_plan

    m = teacher(layers=layers)
    plan = PruningPlan(
        keep_heads=((0, 2), (1,), (), (0, 1, 2, 3), ()),
        keep_ffn=(tuple(range(16)), tuple(range(5)), tuple(range(37)), (), tuple(range(8))),
        drop_attn=(False, False, False, False, True),
        drop_ffn=(False, False, False, True, False),
    )
    apply_plan(m.encoder, plan)
    return m.eval()


@pytest.mark.parametrize(
    ("first", "depth", "shapes"),
    [(0, 2, [(2, 16), (1, 5)]), (1, 3, [(1, 5), (0, 37), (4, None)])],
)
def test_students_start_from_a_pruned_model_with_its_layer_shapes(tmp_path, first, depth, shapes):
    """Students cut from a pruned model: each position keeps that model's shape (heads, FFN
    units; None where a sub-layer was removed), the batched path equals the students run one by
    one, a reload answers the same, and the sparsity is counted against the unpruned teacher's
    layers."""
    start, full = pruned_start(), teacher(layers=5)
    start.encoder.layers = start.encoder.layers[first:]  # a start whose lowest layers vary
    start.encoder.refresh_config()
    ens, _ = distill_students(
        full,
        items(64),
        StudentConfig(k=3, depth=depth, pooling="mean"),
        StudentTrainConfig(steps_per_student=2, stacking_steps=2, batch_size=32),
        start=start,
    )
    ens = perturbed(ens).eval()
    assert ens.layer_shapes == shapes
    ids, mask, tt = random_batch(5, 16, seed=3)
    with torch.no_grad():
        x, bias = ens.embed(ids, mask, tt)
        seq = torch.stack([s(x, bias) for s in ens.students])
        torch.testing.assert_close(ens.student_logits(ids, mask, tt, parallel=True), seq)
        ens.save(tmp_path / "m")
        back = StudentEnsemble.load(tmp_path / "m")
        torch.testing.assert_close(back(ids, mask, tt), ens(ids, mask, tt))
    assert back.layer_shapes == shapes
    layer_params = sum(sum(p.numel() for p in s.layers.parameters()) for s in ens.students)
    assert ens.sparsity() == pytest.approx(1 - layer_params / full.original_prunable_params)
    unpruned = StudentEnsemble.from_teacher(full, StudentConfig(k=3, depth=depth))
    assert ens.sparsity() > unpruned.sparsity()


def test_a_student_whose_layer_shapes_differ_from_its_ensembles_is_refused():
    start = pruned_start()
    ens = StudentEnsemble.from_teacher(start, StudentConfig(k=1, depth=2))
    with pytest.raises(ConfigError, match=r"layer shapes \[\(1, 5\), \(0, 37\)\].*'bottom'"):
        ens.add_student(start, 2, first_layer=1)  # spread: another shape per position
    assert ens.k == 1
