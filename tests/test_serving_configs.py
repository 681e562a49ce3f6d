"""Serving whole configurations beside the students: a multiplexed model in the policy table,
the switch to it under load and back, the budget, and the `--also` flag."""

from __future__ import annotations

import http.client
import json
import math
import re
import time

import pytest
import torch
from conftest import tiny_encoder
from test_serving import SEQ, TEXTS, direct, served_students, tiny_ensemble

from autoprumux.cli._flags import parse_config
from autoprumux.config import Candidate
from autoprumux.errors import ConfigError
from autoprumux.models import MuxConfig, MuxSequenceClassifier, resolve_model
from autoprumux.student_server import (
    AdaptivePolicy,
    DynamicBatcher,
    FixedPolicy,
    Observation,
    OperatingPoint,
    PolicyConfig,
    ServingConfig,
    operating_points,
    profile_operating_points,
    within_budget,
)
from autoprumux.student_server._batcher import tokenize

MUX = "N=2 k=1 concat"
PRUNED_MUX = "s=0.5 N=2 k=3 concat int8"
# students of depth 2 (K=4 slower than the 6-layer baseline) beside two multiplexed models
TABLE = {
    4: (4.0, 100.0),
    2: (5.0, 220.0),
    1: (6.7, 400.0),
    MUX: (0.1, 150.0),
    PRUNED_MUX: (2.8, 500.0),
}


@pytest.fixture(scope="module")
def tokenizer():
    return resolve_model(None).tokenizer()


def tiny_mux_model(seed: int = 0) -> MuxSequenceClassifier:
    enc, _ = tiny_encoder(
        seed=seed, num_hidden_layers=3, vocab_size=30522, max_position_embeddings=64
    )
    torch.manual_seed(seed)
    mux = MuxConfig(n=2, layers=1, combiner="concat")
    return MuxSequenceClassifier(enc, num_labels=2, mux=mux).eval()


def mux_direct(model: MuxSequenceClassifier, tokenizer, texts: list[str]) -> torch.Tensor:
    b = tokenize(texts, tokenizer, SEQ)
    with torch.no_grad():
        return torch.softmax(model(b["input_ids"], b["attention_mask"], b["token_type_ids"]), -1)


# ---- the table --------------------------------------------------------------------------------
def test_configurations_take_their_place_in_the_table_by_accuracy_and_speed():
    pts = operating_points(TABLE)
    # the multiplexed model is more accurate and faster than K=4 (dropped); the pruned one
    # beats k=2 and k=1 on both
    assert [p.key for p in pts] == [MUX, PRUNED_MUX]
    assert [p.name for p in pts] == [MUX, PRUNED_MUX]
    # without the pruned model, the students stay as the faster, less accurate steps
    pts = operating_points({k: v for k, v in TABLE.items() if k != PRUNED_MUX})
    assert [p.name for p in pts] == [MUX, "k=2", "k=1"]
    assert pts[0].to_dict()["config"] == MUX and pts[1].to_dict()["k"] == 2


@pytest.mark.parametrize(
    "table, match",
    [
        ({MUX: (None, 10.0), 1: (None, 20.0)}, "placed among the students by its accuracy loss"),
        ({"  ": (0.0, 10.0)}, "non-empty name"),
    ],
)
def test_bad_configuration_points(table, match):
    with pytest.raises(ConfigError, match=match):
        operating_points(table)
    with pytest.raises(ConfigError, match="give k=None"):
        OperatingPoint(2, 10.0, 0.0, config=MUX)
    with pytest.raises(ConfigError, match="make them agree"):
        operating_points({"other": OperatingPoint(None, 10.0, 0.0, config=MUX)})


def test_budget_keeps_the_points_within_it():
    # dominated points are kept: the policy drops them, the table shows them
    assert list(within_budget(TABLE, 4.0)) == [4, MUX, PRUNED_MUX]
    assert list(within_budget(TABLE, 0.5)) == [MUX]
    with pytest.raises(ConfigError, match=r"most accurate, N=2 k=1 concat, loses 0\.10"):
        within_budget(TABLE, 0.05)
    with pytest.raises(ConfigError, match="has none"):
        within_budget({1: (None, 9.0), 2: (None, 3.0)}, 1.0)
    with pytest.raises(ConfigError, match="accuracy budget"):
        within_budget(TABLE, -1.0)


def test_policy_raises_n_under_a_burst_and_switches_back():
    table = {4: (0.0, 100.0), 1: (3.0, 300.0), MUX: (1.0, 900.0)}
    pol = AdaptivePolicy(table, PolicyConfig(slo_ms=100, hold_s=1.0))
    # k=1 is slower and less accurate than the multiplexed model: not a step at all
    assert pol.keys == (4, MUX) and pol.current == 4
    # 60 queued at 200/s arriving: K=4 cannot drain it, the multiplexed model can
    assert pol.observe(Observation(60, 0.05, arrival_rate=200.0), now=0.0) == MUX
    assert pol.changes[-1].to_dict()["to"] == MUX and "at k=4" in pol.changes[-1].reason
    assert pol.observe(Observation(5, 0.0, arrival_rate=10.0), now=0.5) == MUX  # holds
    assert pol.observe(Observation(5, 0.0, arrival_rate=10.0), now=1.6) == 4
    assert [(c.from_key, c.to_key) for c in pol.changes] == [(4, MUX), (MUX, 4)]
    assert pol.describe()["serving"] == 4
    fixed = FixedPolicy(MUX, points=table)
    assert fixed.observe(Observation(10_000, 1.0), now=0.0) == MUX and fixed.keys == (MUX,)
    with pytest.raises(ConfigError, match="empty"):
        FixedPolicy(" ")


# ---- the batcher --------------------------------------------------------------------------------
def test_the_batcher_serves_a_configuration_and_says_which(tokenizer):
    ens, mux = tiny_ensemble(), tiny_mux_model()
    cfg = ServingConfig(max_batch=4, max_wait_ms=20.0, max_seq_len=SEQ)
    batcher = DynamicBatcher(ens, tokenizer, FixedPolicy(MUX), models={MUX: mux}, config=cfg)
    want = mux_direct(mux, tokenizer, TEXTS[:4])
    req = batcher.submit(TEXTS[:4])
    batcher.start()
    try:
        assert req.done.wait(10.0) and req.error is None
        torch.testing.assert_close(torch.tensor(req.probs), want, rtol=1e-4, atol=1e-5)
        assert req.served == [MUX] * 4
        pred = batcher.predict(TEXTS[:2], timeout=10.0)
        assert pred.configuration == MUX and pred.active_students is None
        st = batcher.stats()
        assert st["serving"] == MUX and st["active_students"] is None
        assert st["configurations"] == [MUX]
        # and the students' answers differ from the multiplexed model's
        assert not torch.allclose(direct(ens, tokenizer, TEXTS[:4], 3), want, atol=1e-3)
    finally:
        batcher.stop()


def test_the_batcher_switches_to_the_multiplexed_model_under_a_real_queue(tokenizer):
    ens, mux = tiny_ensemble(), tiny_mux_model()
    # predicted: 3 students serve 100 texts/s, the multiplexed model 100,000/s
    pol = AdaptivePolicy(
        {3: (0.0, 100.0), MUX: (1.0, 100_000.0)}, PolicyConfig(slo_ms=50, hold_s=0.2)
    )
    cfg = ServingConfig(max_batch=32, max_wait_ms=1.0, max_seq_len=SEQ)
    batcher = DynamicBatcher(ens, tokenizer, pol, models={MUX: mux}, config=cfg)
    reqs = [batcher.submit([TEXTS[i % 8]]) for i in range(200)]
    batcher.start()
    try:
        assert all(r.done.wait(10.0) and r.error is None for r in reqs)
        assert {c for r in reqs for c in r.served} == {MUX}
        want = mux_direct(mux, tokenizer, TEXTS)
        assert [r.labels[0] for r in reqs[:8]] == want.argmax(-1).tolist()
        deadline = time.monotonic() + 10.0
        while batcher.stats()["serving"] != "k=3" and time.monotonic() < deadline:
            time.sleep(0.05)
        st = batcher.stats()
        assert st["serving"] == "k=3" and st["active_students"] == 3
        assert [(c["from"], c["to"]) for c in st["recent_changes"]] == [(3, MUX), (MUX, 3)]
    finally:
        batcher.stop()


def test_the_batcher_refuses_a_point_it_cannot_serve(tokenizer):
    ens, mux = tiny_ensemble(k=2), tiny_mux_model()
    with pytest.raises(ConfigError, match=r"may serve 'N=2 k=1 concat' but no model"):
        DynamicBatcher(ens, tokenizer, FixedPolicy(MUX))
    with pytest.raises(ConfigError, match="nothing to serve"):
        DynamicBatcher(None, tokenizer, FixedPolicy(MUX))
    # models alone, without students, are served too
    batcher = DynamicBatcher(None, tokenizer, FixedPolicy(MUX), models={MUX: mux}).start()
    try:
        assert batcher.predict(TEXTS[:3], timeout=10.0).configurations == [MUX] * 3
    finally:
        batcher.stop()


def test_profile_times_students_and_configurations_side_by_side(tokenizer):
    ens, mux = tiny_ensemble(k=2), tiny_mux_model()
    pts = profile_operating_points(
        ens,
        tokenizer,
        TEXTS,
        models={MUX: mux},
        max_batch=8,
        max_seq_len=SEQ,
        repeats=1,
        warmup=1,
        accuracy_loss={1: 2.0, 2: 1.0, MUX: 0.5},
    )
    assert list(pts) == [1, 2, MUX]
    assert pts[MUX].config == MUX and pts[MUX].accuracy_loss == 0.5
    assert all(p.examples_per_second > 0 for p in pts.values())
    with pytest.raises(ConfigError, match=r"missing: \['N=2 k=1 concat'\]"):
        profile_operating_points(
            ens,
            tokenizer,
            TEXTS,
            models={MUX: mux},
            max_batch=8,
            max_seq_len=SEQ,
            accuracy_loss={1: 2.0, 2: 1.0},
        )


# ---- the command line ---------------------------------------------------------------------------
def test_parse_config():
    c = parse_config("sparsity=0.5, mux=2,mux_layers=3,mux-combiner=concat,precision=int8")
    assert c == Candidate(
        sparsity=0.5, mux=2, mux_layers=3, mux_combiner="concat", precision="int8"
    )
    assert c.describe() == PRUNED_MUX
    for spec, match in [
        ("mux=two", "mux='two'.*not int"),
        ("speed=2", "not FIELD=VALUE with a field"),
        ("mux", "not FIELD=VALUE"),
        (",", "names no field"),
        ("mux=2,mux_combiner=glue", "mux combiner"),
        ("mux_layers=2", "mux_layers"),  # refused by Candidate itself: k > 0 needs N > 1
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_config(spec)


CLI_BAD = [
    (["--also", "mux=two"], "mux='two'"),
    (["--also", "mux=2", "--skip-dev-eval"], "--also needs each point's accuracy loss"),
    (["--budget", "1", "--accuracy-from", "none"], "--budget needs each point's accuracy loss"),
]


@pytest.mark.parametrize("args, message", CLI_BAD, ids=[" ".join(a) for a, _ in CLI_BAD])
def test_serve_students_refuses_bad_configurations_before_any_work(tmp_path, capsys, args, message):
    from autoprumux.cli import main

    cache = tmp_path / "cache"
    argv = ["serve-students", *args, "--cache-dir", str(cache), "--data-dir", str(tmp_path / "x")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not cache.exists()


def test_serve_students_serves_a_multiplexed_model_beside_the_students(tiny_checkpoint, tmp_path):
    """The user's command, end to end: students and a late-multiplexed model are built, scored
    on dev, profiled, and served; every answer names what served it."""
    also = ["--mux-finetune-steps", "2", "--also", "mux=2,mux_layers=1,mux_combiner=concat"]
    with served_students(tiny_checkpoint, tmp_path, *also, "--budget", "100") as (port, text):
        assert re.search(r"^s=0 N=2 k=1 concat\s+[\d.]+\s+-?[\d.]+", text, re.M), text
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/health")
        health = json.loads(conn.getresponse().read())
        served = set(health["configurations"]) | {f"k={k}" for k in (1, 2)}
        conn.request(
            "POST",
            "/predict",
            body=b'{"texts": ["fine", "awful"]}',
            headers={"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        out = json.loads(resp.read())
        assert resp.status == 200 and len(out["labels"]) == 2
        assert out["configuration"] == health["serving"] and out["configuration"] in served
        assert len(out["configurations"]) == 2
        conn.close()


# ---- validation chooses, dev reports ----------------------------------------------------------
def test_the_order_and_the_budget_read_the_validation_loss_and_report_dev():
    # on dev, "a" is the more accurate and faster: "b" would be dropped; on validation "b" leads
    a = OperatingPoint(1, 100.0, accuracy_loss=0.1, validation_loss=2.0)
    b = OperatingPoint(None, 50.0, accuracy_loss=1.0, config=MUX, validation_loss=0.5)
    assert a.chosen_on == b.chosen_on == "validation" and a.selection_loss == 2.0
    assert [p.key for p in operating_points({1: a, MUX: b})] == [MUX, 1]
    assert [p.key for p in operating_points({1: (0.1, 100.0), MUX: (1.0, 50.0)})] == [1]
    # "a" is within a budget of 1 on dev, not on validation: it is not served
    assert list(within_budget({1: a, MUX: b}, 1.0)) == [MUX]
    with pytest.raises(ConfigError, match=r"most accurate, N=2 k=1 concat, loses 0\.50 on valid"):
        within_budget({1: a, MUX: b}, 0.4)
    d = a.to_dict()
    assert (d["accuracy_loss"], d["validation_loss"], d["chosen_on"]) == (0.1, 2.0, "validation")
    pol = AdaptivePolicy({1: a, MUX: b})
    assert pol.describe()["chosen_on"] == "validation"
    assert [p["validation_loss"] for p in pol.describe()["operating_points"]] == [0.5, 2.0]
    assert FixedPolicy(1, points={1: a}).describe()["chosen_on"] == "validation"


def test_the_printed_table_shows_both_losses_and_which_chose():
    from autoprumux._selection import DEV_CHOSEN
    from autoprumux.cli._serve import points_table
    from autoprumux.student_server import PointLosses

    a = OperatingPoint(1, 100.0, accuracy_loss=0.1, validation_loss=2.0)
    b = OperatingPoint(None, 50.0, accuracy_loss=1.0, config=MUX, validation_loss=0.5)
    text = points_table({1: a, MUX: b}, [MUX], [MUX], 8)
    assert "val loss" in text and "dev loss" in text
    assert re.search(
        r"^k=1\s+100\.0\s+2\.00\s+0\.10\s+\(over the budget on validation\)$", text, re.M
    )
    assert re.search(r"^N=2 k=1 concat\s+50\.0\s+0\.50\s+1\.00$", text, re.M), text
    assert "chosen on the validation loss" in text and DEV_CHOSEN not in text
    # without a split: dev chose, and the table says so
    dev = {1: OperatingPoint(1, 100.0, 0.3), 2: OperatingPoint(2, 50.0, 0.1)}
    assert {p.chosen_on for p in dev.values()} == {"dev"}
    text = points_table(dev, dev, [2, 1], 8)
    assert re.search(r"^k=1\s+100\.0\s+-\s+0\.30$", text, re.M) and DEV_CHOSEN in text
    # predicted by the meta-model: chosen on as predicted, and said so
    p = PointLosses.predicted(0.7)
    pred = OperatingPoint(1, 10.0, p.accuracy_loss, chosen_on=p.chosen_on)
    assert pred.chosen_on == "meta-model" and pred.selection_loss == 0.7
    assert list(within_budget({1: pred}, 0.7)) == [1]
    text = points_table({1: pred}, [1], [1], 8)
    assert "pred loss" in text and "meta-model's predicted losses" in text


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"validation_loss": 1.0}, "needs the dev loss"),
        ({"accuracy_loss": 1.0, "chosen_on": "validation"}, "chosen on exactly when given"),
        ({"accuracy_loss": 1.0, "validation_loss": 1.0, "chosen_on": "dev"}, "exactly when"),
        ({"accuracy_loss": 1.0, "chosen_on": "train"}, "must be one of"),
        ({"accuracy_loss": 1.0, "validation_loss": math.nan}, "validation loss"),
    ],
)
def test_bad_chosen_on(kw, match):
    with pytest.raises(ConfigError, match=match):
        OperatingPoint(1, 10.0, **kw)


def test_points_chosen_on_different_losses_are_refused():
    mixed = {1: OperatingPoint(1, 10.0, 0.5, validation_loss=0.4), 2: OperatingPoint(2, 5.0, 0.1)}
    with pytest.raises(ConfigError, match=r"chosen on \['dev', 'validation'\]"):
        operating_points(mixed)
    with pytest.raises(ConfigError, match="chosen on"):
        within_budget(mixed, 1.0)


def _scattered_students(pipe, k: int = 2):
    from autoprumux.models import StudentConfig, StudentEnsemble

    ens = StudentEnsemble.from_teacher(pipe.baseline(), StudentConfig(k=k, depth=1))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ens.students.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    return ens.eval()


def _metric(pipe, model, items) -> float:
    from autoprumux.evaluation import paired_dev_metrics
    from autoprumux.pipeline import DEV_PAIRINGS

    return paired_dev_metrics(
        model,
        items,
        pipe.task.metric,
        pairings=DEV_PAIRINGS,
        device="cpu",
        pos_label=pipe.task.positive,
    )["metric"]


def test_measured_losses_are_on_validation_and_dev_and_the_budget_reads_validation(
    tmp_path, tiny_checkpoint
):
    from test_validation_choice import pipeline

    from autoprumux.student_server import model_accuracy_losses, student_accuracy_losses

    pipe = pipeline(tmp_path, tiny_checkpoint)
    assert pipe.validation_items
    ens = _scattered_students(pipe)
    losses = {
        **student_accuracy_losses(pipe, ens),
        **model_accuracy_losses(pipe, {"b": pipe.baseline()}),
    }
    assert ens.active_students == 2  # restored
    base = pipe.baseline()
    for k in (1, 2):
        ens.active_students = k
        want_val = _metric(pipe, base, pipe.validation_items) - _metric(
            pipe, ens, pipe.validation_items
        )
        want_dev = _metric(pipe, base, pipe.dev_items) - _metric(pipe, ens, pipe.dev_items)
        assert losses[k].validation_loss == pytest.approx(want_val)
        assert losses[k].accuracy_loss == pytest.approx(want_dev)
    assert losses["b"].validation_loss == 0.0 and losses["b"].accuracy_loss == 0.0
    texts = [e.text_a for e in pipe.data.dev[:8]]
    pts = profile_operating_points(
        ens,
        pipe.tokenizer,
        texts,
        models={"b": base},
        max_batch=4,
        max_seq_len=16,
        repeats=1,
        warmup=1,
        accuracy_loss=losses,
    )
    assert {p.chosen_on for p in pts.values()} == {"validation"}
    assert pts[1].validation_loss == losses[1].validation_loss
    assert pts[1].accuracy_loss == losses[1].accuracy_loss
    # every budget keeps exactly the points whose validation loss is within it
    val = {key: p.validation_loss for key, p in pts.items()}
    for budget in sorted({max(0.0, v) for v in val.values() if v is not None}):
        want = {key for key, v in val.items() if v is not None and v <= budget}
        assert set(within_budget(pts, budget)) == want


def test_without_a_split_the_measured_losses_are_on_dev_and_say_so(tmp_path, tiny_checkpoint):
    from test_validation_choice import pipeline

    from autoprumux._selection import DEV_CHOSEN
    from autoprumux.cli._serve import points_table
    from autoprumux.student_server import student_accuracy_losses

    pipe = pipeline(tmp_path, tiny_checkpoint, validation_examples=0)
    assert not pipe.validation_items
    ens = _scattered_students(pipe)
    losses = student_accuracy_losses(pipe, ens)
    base = pipe.baseline()
    ens.active_students = 1
    want = _metric(pipe, base, pipe.dev_items) - _metric(pipe, ens, pipe.dev_items)
    assert losses[1].validation_loss is None and losses[1].accuracy_loss == pytest.approx(want)
    texts = [e.text_a for e in pipe.data.dev[:8]]
    pts = profile_operating_points(
        ens,
        pipe.tokenizer,
        texts,
        max_batch=4,
        max_seq_len=16,
        repeats=1,
        warmup=1,
        accuracy_loss=losses,
    )
    assert {p.chosen_on for p in pts.values()} == {"dev"}
    assert pts[1].to_dict()["chosen_on"] == "dev" and pts[1].selection_loss == pts[1].accuracy_loss
    assert DEV_CHOSEN in points_table(pts, pts, list(pts), 4)
