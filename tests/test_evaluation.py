"""Throughput, FLOPs, metrics, training loop and cache on tiny models."""

from __future__ import annotations

import pytest
import torch
from conftest import random_batch, tiny_encoder

from autoprumux._cache import ArtifactCache
from autoprumux.data import Encoded, collate
from autoprumux.errors import ConfigError
from autoprumux.evaluation import (
    ThroughputConfig,
    fixed_batch,
    measure_throughput,
    model_flops,
    model_runner,
    task_metrics,
)
from autoprumux.models import Importance, MuxConfig, MuxSequenceClassifier, apply_plan, search_plan
from autoprumux.training import (
    TrainConfig,
    evaluate_retrieval,
    hidden_distill_loss,
    predict,
    retrieval_warmup,
    train_classifier,
)


def make(n: int = 1, layers: int = 2) -> MuxSequenceClassifier:
    enc, _ = tiny_encoder(0, num_hidden_layers=layers)
    return MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(n=n)).eval()


def test_fixed_batch_has_exact_shape_and_cycles_rows():
    ids, mask, tt = random_batch(3, 5)
    b = fixed_batch(ids, mask, tt, ThroughputConfig(batch_size=7, seq_len=12))
    assert b["input_ids"].shape == (7, 12)
    torch.testing.assert_close(b["input_ids"][3, :5], ids[0])
    assert int(b["attention_mask"][:, 5:].sum()) == 0


@pytest.mark.parametrize("n,b", [(1, 5), (2, 5), (4, 6)])
def test_throughput_counts_only_real_rows(n, b):
    model = make(n)
    ids, mask, tt = random_batch(b, 16)
    res = measure_throughput(
        model,
        {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt},
        ThroughputConfig(batch_size=b, seq_len=16, repeats=3, warmup=1),
    )
    assert res.examples_per_second == pytest.approx(b / res.median_batch_seconds)
    assert len(res.batch_seconds) == 3 and all(t > 0 for t in res.batch_seconds)


def test_throughput_config_and_device_errors():
    with pytest.raises(ConfigError, match="batch 0"):
        ThroughputConfig(batch_size=0)
    model = make()
    ids, mask, tt = random_batch(2, 8)
    with pytest.raises(ConfigError, match="tpu"):
        measure_throughput(
            model,
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt},
            ThroughputConfig(batch_size=2, seq_len=8, device="tpu"),
        )


def test_cuda_graphs_need_a_cuda_device():
    ids, mask, tt = random_batch(2, 8)
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}
    with pytest.raises(ConfigError, match="CUDA graphs need a CUDA device.*--device cuda"):
        measure_throughput(
            make(), batch, ThroughputConfig(batch_size=2, seq_len=8, cuda_graphs=True)
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("n", [1, 2])
def test_a_replayed_cuda_graph_computes_what_the_model_computes(n):
    model = make(n).cuda()
    ids, mask, tt = random_batch(4, 16, seed=5)
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}
    replay, examples = model_runner(model, batch, "cuda", cuda_graphs=True)
    eager, _ = model_runner(model, batch, "cuda")
    with torch.inference_mode():
        want = eager()
        got = replay()
    assert examples == 4
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_flops_fall_with_pruning_and_mux():
    model = make(1)
    f0 = model_flops(model, 64, 32)
    imp = Importance(
        heads=tuple(torch.rand(4) for _ in range(2)),
        ffn=tuple(torch.rand(37) for _ in range(2)),
        attn_sublayer=(1.0, 1.0),
        ffn_sublayer=(1.0, 1.0),
    )
    apply_plan(model.encoder, search_plan(model.encoder, imp, 0.5, model.original_prunable_params))
    f1 = model_flops(model, 64, 32)
    assert f1 < 0.75 * f0
    f4 = model_flops(make(4), 64, 32)
    assert 0.2 * f0 < f4 < 0.35 * f0  # ~1/4 of the encoder work plus a slightly longer sequence


def test_metrics():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    m = task_metrics("mcc", logits, [0, 1, 0, 0])  # predictions 0, 1, 1, 0
    assert m["accuracy"] == 75.0
    # tp=1 tn=2 fp=1 fn=0: MCC = (1*2 - 1*0) / sqrt(2*1*3*2) = 2/sqrt(12)
    assert m["metric"] == m["mcc"] == pytest.approx(100 * 2 / 12**0.5)
    assert m["f1"] == pytest.approx(100 * 2 / 3)  # precision 1/2, recall 1
    ones = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert task_metrics("mcc", ones, [1, 1])["mcc"] == 0.0  # degenerate: no negatives
    assert task_metrics("accuracy", logits, [0, 1, 1, 0])["metric"] == 100.0
    with pytest.raises(ValueError, match="non-empty"):
        task_metrics("accuracy", logits[:0], [])


def toy_items(count: int, seed: int = 0) -> list[Encoded]:
    """A learnable toy task: label 1 iff token 7 occurs."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        length = int(torch.randint(4, 10, (1,), generator=g))
        ids = [2] + torch.randint(8, 99, (length - 2,), generator=g).tolist() + [3]
        label = int(torch.rand(1, generator=g) < 0.5)
        if label:
            ids[int(torch.randint(1, length - 1, (1,), generator=g))] = 7
        out.append(Encoded(tuple(ids), (0,) * length, label))
    return out


@pytest.mark.parametrize("n", [1, 2])
def test_training_learns_a_toy_task(n):
    torch.manual_seed(0)
    model = make(n)
    train, dev = toy_items(512), toy_items(128, seed=1)
    acc0 = float(
        (predict(model, dev).argmax(-1) == torch.tensor([x.label for x in dev])).float().mean()
    )
    if n == 1:
        train_classifier(model, train, TrainConfig(steps=150, batch_size=16, lr=2e-3))
    else:  # a multiplexed model learns the task only after the retrieval warm-up (see docs/multiplexing.md)
        train = toy_items(1024)
        retrieval_warmup(
            model, train, TrainConfig(steps=300, batch_size=16, lr=1e-3), special_ids=(2, 3)
        )
        train_classifier(
            model, train, TrainConfig(steps=300, batch_size=16, lr=1e-3, retrieval_weight=0.1)
        )
    acc = float(
        (predict(model, dev).argmax(-1) == torch.tensor([x.label for x in dev])).float().mean()
    )
    assert acc >= 0.85 and acc > acc0 + 0.2, (acc0, acc)


def test_distillation_needs_a_teacher():
    with pytest.raises(ConfigError, match="teacher"):
        train_classifier(
            make(), toy_items(64), TrainConfig(steps=2, batch_size=8, distill_weight=0.5)
        )


def test_retrieval_warmup_lowers_held_out_loss():
    torch.manual_seed(0)
    model = make(2)
    train, held = toy_items(512), toy_items(64, seed=2)
    before = evaluate_retrieval(model, held, special_ids=(2, 3), batch_size=16)
    stats = retrieval_warmup(
        model, train, TrainConfig(steps=120, batch_size=16, lr=2e-3), special_ids=(2, 3)
    )
    after = evaluate_retrieval(model, held, special_ids=(2, 3), batch_size=16)
    assert after["retrieval_loss"] < before["retrieval_loss"] - 0.5, (before, after, stats)
    # the curve: one point per tenth of the run, falling loss, its last tenth = the summary
    curve = stats["curve"]
    assert [c["step"] for c in curve] == [12.0 * i for i in range(1, 11)]
    assert curve[-1]["retrieval_loss"] < curve[0]["retrieval_loss"] - 0.5, curve
    assert curve[-1]["retrieval_accuracy"] == pytest.approx(stats["retrieval_accuracy"])
    assert curve[-1]["retrieval_loss"] == pytest.approx(stats["retrieval_loss"])
    with pytest.raises(ConfigError, match="N > 1"):
        retrieval_warmup(make(1), train, TrainConfig(steps=1, batch_size=8))


def test_hidden_state_distillation_in_the_warmup_pulls_states_towards_the_teacher():
    """With a teacher, the warm-up lowers the held-out distance of each instance's demuxed states
    to the states the N=1 model computes for that instance alone (and keeps learning retrieval)."""
    torch.manual_seed(0)
    teacher, student = make(1), make(2)
    student.encoder.load_state_dict(teacher.encoder.state_dict())
    train, held = toy_items(512), toy_items(64, seed=2)
    b = collate(held)

    def distance() -> float:
        with torch.no_grad():
            s = student.hidden_states(b["input_ids"], b["attention_mask"], positions="all")
            t = teacher.hidden_states(b["input_ids"], b["attention_mask"], positions="all")
        return float(hidden_distill_loss(s, t, b["attention_mask"]))

    before = distance()
    stats = retrieval_warmup(
        student,
        train,
        TrainConfig(steps=120, batch_size=16, lr=2e-3),
        special_ids=(2, 3),
        teacher=teacher,
        hidden_distill_weight=1.0,
    )
    after = distance()
    assert after < 0.6 * before, (before, after, stats)
    # the distillation term has its own curve, whose last tenth is the summary
    curve = stats["curve"]
    assert curve[-1]["hidden_distill_loss"] < curve[0]["hidden_distill_loss"], curve
    assert curve[-1]["hidden_distill_loss"] == pytest.approx(stats["hidden_distill_loss"])
    with pytest.raises(ConfigError, match="N=1 teacher"):
        retrieval_warmup(student, train, TrainConfig(steps=1), hidden_distill_weight=1.0)


def test_cache_is_atomic_and_hit_on_second_call(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls = []

    def build(d):
        calls.append(d)
        (d / "x.txt").write_text("1")
        return {"ok": True}

    e1, hit1 = cache.get_or_build("k", {"a": 1}, build)
    e2, hit2 = cache.get_or_build("k", {"a": 1}, build)
    assert (hit1, hit2) == (False, True) and e1 == e2 and len(calls) == 1
    assert ArtifactCache.meta(e1) == {"ok": True}

    def crash(d):
        (d / "partial").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_build("k", {"a": 2}, crash)
    assert not cache.has("k", {"a": 2})
    assert [p.name for p in (tmp_path / "k").iterdir()] == [e1.name]  # no leftovers
    _, hit3 = cache.get_or_build("k", {"a": 2}, build)
    assert not hit3 and cache.has("k", {"a": 2})


def test_orthogonal_mux_flops_count_an_h_by_h_product_per_instance():
    enc, _ = tiny_encoder(0)
    gauss = MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(n=2)).eval()
    enc2, _ = tiny_encoder(0)
    orth = MuxSequenceClassifier(
        enc2, num_labels=2, mux=MuxConfig(n=2, variant="orthogonal")
    ).eval()
    b, t, h = 64, 32, 32
    rows, tokens = b // 2, t + 2  # mixed sequences, each with its N-token prefix
    extra = model_flops(orth, b, t) - model_flops(gauss, b, t)
    assert extra == rows * 2 * tokens * (2 * h * h - h)
