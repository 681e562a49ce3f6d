"""Burst-adaptive serving: policy logic, dynamic batching, the HTTP endpoint under
concurrent and bad requests, the bounded load generator (`benchmarks/_loadgen.py`) and the
CLI's checks."""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import GLUE_DIR, ctrl_c_delivered, tiny_encoder

from autoprumux._selection import DEV_CHOSEN
from autoprumux.config import Candidate
from autoprumux.errors import ConfigError
from autoprumux.models import (
    MuxConfig,
    MuxSequenceClassifier,
    StudentConfig,
    StudentEnsemble,
    resolve_model,
)
from autoprumux.student_server import (
    AdaptivePolicy,
    DynamicBatcher,
    FixedPolicy,
    Observation,
    PolicyConfig,
    ServingConfig,
    ServingError,
    StudentServer,
    is_loopback,
    operating_points,
    profile_operating_points,
)
from autoprumux.student_server._batcher import tokenize


def loadgen():
    """`benchmarks/_loadgen.py`, imported under the name the benchmark scripts give it."""
    if "_loadgen" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "benchmarks" / "_loadgen.py"
        spec = importlib.util.spec_from_file_location("_loadgen", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["_loadgen"] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
    return sys.modules["_loadgen"]


_lg = loadgen()
LoadSchedule, Phase, burst_schedule = _lg.LoadSchedule, _lg.Phase, _lg.burst_schedule
check_loopback, run_load = _lg.check_loopback, _lg.run_load

TEXTS = [
    "a gripping, funny film",
    "dull",
    "the plot never comes together and the actors look bored",
    "one of the best films of the year",
    "not good",
    "an uneven but often charming comedy with a great soundtrack",
    "terrible",
    "i laughed, i cried",
]
SEQ = 32


@pytest.fixture(scope="module")
def tokenizer():
    return resolve_model(None).tokenizer()


def tiny_ensemble(k: int = 3, seed: int = 0) -> StudentEnsemble:
    """K random 1-layer students over a tiny encoder with the packaged tokenizer's vocabulary;
    every student's head is non-zero so the active k changes the answers."""
    enc, _ = tiny_encoder(
        seed=seed, num_hidden_layers=3, vocab_size=30522, max_position_embeddings=64
    )
    teacher = MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(n=1)).eval()
    ens = StudentEnsemble.from_teacher(teacher, StudentConfig(k=k, depth=1))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in ens.students.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    return ens.eval()


def direct(ens: StudentEnsemble, tokenizer, texts: list[str], k: int) -> torch.Tensor:
    b = tokenize(texts, tokenizer, SEQ)
    with torch.no_grad():
        logits = ens(b["input_ids"], b["attention_mask"], b["token_type_ids"], active=k)
    return torch.softmax(logits, -1)


# ---- the policy: pure logic, synthetic observations, explicit clock ----------------------------
POINTS = {4: (0.0, 100.0), 3: (0.5, 90.0), 2: (1.0, 250.0), 1: (3.0, 500.0)}


def test_operating_points_order_and_drop_dominated():
    pts = operating_points(POINTS)
    # k=3 is both less accurate and slower than k=4: never worth running
    assert [p.k for p in pts] == [4, 2, 1]
    # without accuracy predictions more students count as more accurate
    assert [p.k for p in operating_points({1: (None, 9.0), 3: (None, 3.0), 2: (None, 5.0)})] == [
        3,
        2,
        1,
    ]


@pytest.mark.parametrize(
    "table, match",
    [
        ({}, "empty"),
        ({2: (0.0, -1.0)}, "examples/second"),
        ({2: (math.nan, 10.0)}, "accuracy loss"),
        ({2: (0.0, 10.0), 1: (None, 20.0)}, r"missing for k=1;"),
        ({2: "fast"}, "not \\(accuracy loss, examples/second\\)"),
        ({0: (0.0, 10.0)}, "positive integer"),
    ],
)
def test_bad_operating_points(table, match):
    with pytest.raises(ConfigError, match=match):
        operating_points(table)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"slo_ms": 0}, "slo_ms"),
        ({"slo_ms": math.nan}, "slo_ms"),
        ({"hold_s": -1}, "hold_s"),
        ({"restore_fraction": 1.5}, "restore_fraction"),
    ],
)
def test_bad_policy_config(kw, match):
    with pytest.raises(ConfigError, match=match):
        PolicyConfig(**kw)


def test_policy_steps_down_under_a_burst_and_restores_one_step_per_hold():
    pol = AdaptivePolicy(POINTS, PolicyConfig(slo_ms=100, hold_s=2.0))
    assert pol.current == 4
    # light load: 5 queued examples drain in 50 ms at k=4
    assert pol.observe(Observation(5, 0.01, arrival_rate=20.0), now=0.0) == 4
    # burst: 60 queued, 300/s arriving; only k=1 keeps up, and even it needs 200 ms > 100:
    # the fastest point
    assert pol.observe(Observation(60, 0.2, arrival_rate=300.0), now=1.0) == 1
    assert pol.changes[-1].from_key == 4 and pol.changes[-1].to_key == 1
    assert "objective 100 ms" in pol.changes[-1].reason
    # the burst is over: quiet observations; k rises one point per hold period
    ks = {t: pol.observe(Observation(0, 0.0, arrival_rate=10.0), now=t) for t in (2.0, 3.0)}
    assert ks == {2.0: 1, 3.0: 1}  # quiet since 2.0: not held long enough yet
    assert pol.observe(Observation(0, 0.0, arrival_rate=10.0), now=4.0) == 2
    assert pol.observe(Observation(0, 0.0, arrival_rate=10.0), now=5.0) == 2  # a new hold
    assert pol.observe(Observation(0, 0.0, arrival_rate=10.0), now=6.0) == 4
    assert [(c.from_key, c.to_key) for c in pol.changes] == [(4, 1), (1, 2), (2, 4)]
    assert pol.change_count == 3


def test_policy_picks_the_most_accurate_point_that_drains_in_time():
    pol = AdaptivePolicy(POINTS, PolicyConfig(slo_ms=100))
    # 10 queued, 100/s arriving: k=4 never drains (no spare rate); k=2 drains in 67 ms
    assert pol.observe(Observation(10, 0.05, arrival_rate=100.0), now=0.0) == 2


def test_policy_restores_k_under_moderate_steady_load():
    pol = AdaptivePolicy(POINTS, PolicyConfig(slo_ms=100, hold_s=2.0), start=1)
    # 30/s arriving in requests of 4 texts: k=4 drains a request in 57 ms and runs at 30%
    ks = [
        pol.observe(Observation(4 if i % 2 else 0, 0.005, arrival_rate=30.0), now=0.1 * i)
        for i in range(61)
    ]
    assert ks[19] == 1 and ks[20] == 2 and ks[39] == 2 and ks[40] == 4 and ks[60] == 4


def test_policy_hysteresis_no_flapping_and_a_busy_moment_restarts_the_hold():
    cfg = PolicyConfig(slo_ms=100, hold_s=2.0, restore_fraction=0.5)
    pol = AdaptivePolicy(POINTS, cfg, start=2)
    # k=4 would drain 6 queued examples in 75 ms: within the objective (so no step down at
    # k=4) but above half of it (so no step up from k=2) -> k stays for any time
    for i in range(100):
        assert pol.observe(Observation(6, 0.02, arrival_rate=20.0), now=0.1 * i) == 2
    # arrivals at 80/s use 80% of k=4's rate: above the 70% allowed for a raise
    for i in range(100):
        assert pol.observe(Observation(0, 0.0, arrival_rate=80.0), now=10 + 0.1 * i) == 2
    assert pol.change_count == 0
    # quiet from 30 s, a busy moment at 31.5 s, quiet again: the hold counts from 31.6 s
    for t in (30.0, 31.0):
        assert pol.observe(Observation(0, 0.0, arrival_rate=5.0), now=t) == 2
    assert pol.observe(Observation(6, 0.0, arrival_rate=5.0), now=31.5) == 2
    for t in (31.6, 32.5, 33.5):
        assert pol.observe(Observation(0, 0.0, arrival_rate=5.0), now=t) == 2
    assert pol.observe(Observation(0, 0.0, arrival_rate=5.0), now=33.6) == 4


def test_policy_corrects_predictions_with_the_measured_service_rate():
    pol = AdaptivePolicy(POINTS, PolicyConfig(slo_ms=100))
    # 8 queued drain in 80 ms at the predicted 100/s: no change
    assert pol.observe(Observation(8, 0.0), now=0.0) == 4
    # full batches run at half the predicted rate: the same queue now needs ~160 ms
    for i in range(30):
        pol.observe(Observation(0, 0.0, service_rate=50.0), now=1.0 + i)
    assert pol.rate_scale == pytest.approx(0.5, rel=0.01)
    assert pol.observe(Observation(8, 0.0), now=40.0) == 2


def test_fixed_policy_never_changes():
    pol = FixedPolicy(3, points=POINTS)
    for i in range(10):
        assert pol.observe(Observation(10_000, 5.0, arrival_rate=1e6), now=float(i)) == 3
    assert pol.change_count == 0 and pol.describe()["mode"] == "fixed"
    with pytest.raises(ConfigError, match="fixed k"):
        FixedPolicy(0)


# ---- dynamic batching ---------------------------------------------------------------------------
def test_batched_answers_equal_the_models_direct_outputs(tokenizer):
    ens = tiny_ensemble()
    cfg = ServingConfig(max_batch=4, max_wait_ms=20.0, max_seq_len=SEQ)
    batcher = DynamicBatcher(ens, tokenizer, FixedPolicy(2), config=cfg)
    want = direct(ens, tokenizer, TEXTS, k=2)
    # requests queued before the worker starts are served in full batches of 4 texts
    reqs = [batcher.submit([TEXTS[i], TEXTS[(i + 3) % 8]]) for i in range(8)]
    batcher.start()
    try:
        for i, r in enumerate(reqs):
            assert r.done.wait(10.0) and r.error is None
            for j, t in enumerate((i, (i + 3) % 8)):
                torch.testing.assert_close(torch.tensor(r.probs[j]), want[t], rtol=1e-4, atol=1e-5)
                assert r.labels[j] == int(want[t].argmax())
            assert r.served == ["k=2"] * len(r.texts)
        st = batcher.stats()
        assert st["batches"] == 4 and st["examples"] == 16 and st["failed_batches"] == 0
        # the answers depend on k: k=1 and k=3 differ from k=2
        assert not torch.allclose(direct(ens, tokenizer, TEXTS, 1), want, atol=1e-3)
    finally:
        batcher.stop()
    assert not batcher.alive


def test_batcher_lowers_k_under_a_real_queue_and_restores_it(tokenizer):
    ens = tiny_ensemble()
    # predicted: 3 students serve 100 texts/s, 1 student 100,000/s
    points = {3: (0.0, 100.0), 1: (2.0, 100_000.0)}
    pol = AdaptivePolicy(points, PolicyConfig(slo_ms=50, hold_s=0.2))
    cfg = ServingConfig(max_batch=32, max_wait_ms=1.0, max_seq_len=SEQ)
    batcher = DynamicBatcher(ens, tokenizer, pol, config=cfg)
    reqs = [batcher.submit([TEXTS[i % 8]]) for i in range(200)]  # a backlog of 200 texts
    batcher.start()
    try:
        assert all(r.done.wait(10.0) and r.error is None for r in reqs)
        assert {c for r in reqs for c in r.served} == {
            "k=1"
        }  # 200 texts at 100/s would take 2 s: k=1 from the start
        want = direct(ens, tokenizer, TEXTS, k=1)
        assert [r.labels[0] for r in reqs[:8]] == want.argmax(-1).tolist()
        deadline = time.monotonic() + 10.0
        while batcher.stats()["active_students"] != 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # idle ticks let the policy restore k
        st = batcher.stats()
        assert st["active_students"] == 3
        assert [(c["from"], c["to"]) for c in st["recent_changes"]] == [(3, 1), (1, 3)]
        assert st["changes"] == 2
    finally:
        batcher.stop()


def test_a_failing_request_does_not_fail_the_others_in_its_batch(tokenizer):
    ens = tiny_ensemble(k=2)
    cfg = ServingConfig(max_batch=8, max_seq_len=SEQ)
    batcher = DynamicBatcher(ens, tokenizer, FixedPolicy(2), config=cfg)
    # a lone surrogate passes the batcher (the HTTP layer refuses it) but not the tokenizer
    reqs = [batcher.submit(["fine"]), batcher.submit(["ok", "\ud800"]), batcher.submit(["good"])]
    batcher.start()  # all three are in one batch
    try:
        assert all(r.done.wait(10.0) for r in reqs)
        assert reqs[1].error is not None and reqs[1].error.status == 500
        assert "inference failed" in str(reqs[1].error)
        assert reqs[0].error is None and reqs[2].error is None
        want = direct(ens, tokenizer, ["fine", "good"], k=2).argmax(-1).tolist()
        assert [reqs[0].labels[0], reqs[2].labels[0]] == want
        st = batcher.stats()
        assert st["failed_batches"] == 1 and st["examples"] == 2
    finally:
        batcher.stop()


def test_an_abandoned_request_gets_503_and_is_not_computed(tokenizer):
    ens = tiny_ensemble(k=2)
    batcher = DynamicBatcher(ens, tokenizer, FixedPolicy(2), config=ServingConfig(max_seq_len=SEQ))
    with pytest.raises(ServingError, match="no answer within 0.05 s") as e:
        batcher.predict(TEXTS, timeout=0.05)  # the worker is not running yet
    assert e.value.status == 503
    batcher.start()
    try:
        assert batcher.predict(["fine"], timeout=10.0).labels in ([0], [1])
        assert batcher.stats()["examples"] == 1  # the 8 abandoned texts were skipped
    finally:
        batcher.stop()
    with pytest.raises(ServingError, match="shutting down"):
        batcher.submit(["late"])


def test_batcher_checks_its_model_and_policy(tokenizer):
    ens = tiny_ensemble(k=2)
    with pytest.raises(ConfigError, match="max_seq_len \\(128\\) exceeds the model's 64"):
        DynamicBatcher(ens, tokenizer, FixedPolicy(1), config=ServingConfig(max_seq_len=128))
    with pytest.raises(ConfigError, match="k=3 students but the ensemble has 2"):
        DynamicBatcher(ens, tokenizer, FixedPolicy(3), config=ServingConfig(max_seq_len=SEQ))


def test_profile_measures_every_k(tokenizer):
    ens = tiny_ensemble()
    pts = profile_operating_points(
        ens,
        tokenizer,
        TEXTS[:3],
        max_batch=8,
        max_seq_len=SEQ,
        repeats=1,
        warmup=1,
        accuracy_loss={1: 2.0, 2: 1.0, 3: 0.0},
    )
    assert sorted(pts) == [1, 2, 3]
    assert all(p.examples_per_second > 0 for p in pts.values())
    assert pts[1].accuracy_loss == 2.0
    with pytest.raises(ConfigError, match="missing: \\['k=2', 'k=3'\\]"):
        profile_operating_points(
            ens, tokenizer, TEXTS, max_batch=8, max_seq_len=SEQ, accuracy_loss={1: 0.0}
        )


# ---- the HTTP endpoint --------------------------------------------------------------------------
MAX_CHARS, MAX_TEXTS = 200, 8


@pytest.fixture(scope="module")
def server(tokenizer):
    ens = tiny_ensemble()
    cfg = ServingConfig(
        port=0,
        max_batch=8,
        max_wait_ms=2.0,
        max_seq_len=SEQ,
        max_chars=MAX_CHARS,
        max_texts=MAX_TEXTS,
    )
    with StudentServer(ens, tokenizer, FixedPolicy(3), config=cfg) as srv:
        srv.direct = direct(ens, tokenizer, TEXTS, k=3)  # type: ignore[attr-defined]
        yield srv


def request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict, http.client.HTTPResponse]:
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, (json.loads(data) if data else {}), resp


def good_request(conn: http.client.HTTPConnection, server) -> None:
    status, out, _ = request(conn, "POST", "/predict", json.dumps({"texts": TEXTS[:3]}).encode())
    assert status == 200, out
    assert out["labels"] == server.direct[:3].argmax(-1).tolist()
    assert out["active_students"] == 3


def test_server_answers_correctly_under_concurrent_requests(server):
    failures: list[str] = []

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            for r in range(5):
                idx = [(c + r + j) % 8 for j in range(1 + (c + r) % 4)]
                body = (
                    {"text": TEXTS[idx[0]]} if len(idx) == 1 else {"texts": [TEXTS[i] for i in idx]}
                )
                status, out, _ = request(conn, "POST", "/predict", json.dumps(body).encode())
                if status != 200:
                    failures.append(f"client {c}: {status} {out}")
                    continue
                probs = torch.tensor(out["probabilities"])
                if not torch.allclose(probs, server.direct[idx], rtol=1e-4, atol=1e-5):
                    failures.append(f"client {c}: {out} != {server.direct[idx]}")
                if out["labels"] != server.direct[idx].argmax(-1).tolist():
                    failures.append(f"client {c}: labels {out['labels']}")
        finally:
            conn.close()

    before = server.stats()["examples"]
    threads = [threading.Thread(target=client, args=(c,)) for c in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures[:3]
    st = server.stats()
    sent = sum(1 + (c + r) % 4 for c in range(16) for r in range(5))
    assert st["examples"] - before == sent
    assert st["batches"] >= 1 and st["queue_length"] == 0 and st["worker_alive"]


JSON = {"Content-Type": "application/json"}
BAD = [
    ("POST", "/predict", b"{not json", "400", "not valid JSON"),
    ("POST", "/predict", b"\xff\xfe{}", "400", "not UTF-8"),
    ("POST", "/predict", b"[1, 2]", "400", "must be a JSON object, got a list"),
    ("POST", "/predict", b"{}", "400", "not neither"),
    ("POST", "/predict", b'{"texts": ["a"], "text": "b"}', "400", "not both"),
    ("POST", "/predict", b'{"txt": "a"}', "400", "unknown field(s) ['txt']"),
    ("POST", "/predict", b'{"texts": "hello"}', "400", '"texts" must be a list, got a string'),
    ("POST", "/predict", b'{"texts": []}', "400", '"texts" is empty'),
    ("POST", "/predict", b'{"texts": ["ok", 3]}', "400", "texts[1] must be a string, got number"),
    (
        "POST",
        "/predict",
        b'{"texts": ["ok", "   "]}',
        "400",
        "texts[1] is empty or only whitespace",
    ),
    ("POST", "/predict", b'{"text": ""}', "400", "text is empty"),
    ("POST", "/predict", b'{"text": "ok \\ud800"}', "400", "text is not valid Unicode"),
    (
        "POST",
        "/predict",
        json.dumps({"text": "x" * (MAX_CHARS + 1)}).encode(),
        "400",
        f"has {MAX_CHARS + 1} characters, more than the limit of {MAX_CHARS}",
    ),
    (
        "POST",
        "/predict",
        json.dumps({"texts": ["ok"] * (MAX_TEXTS + 1)}).encode(),
        "400",
        f"holds {MAX_TEXTS + 1} texts, more than the limit of {MAX_TEXTS}",
    ),
    ("GET", "/nowhere", None, "404", "no endpoint '/nowhere'"),
    ("POST", "/nowhere", b'{"text": "a"}', "404", "use POST /predict"),
    ("GET", "/predict", None, "405", "/predict takes POST, not GET"),
    ("DELETE", "/stats", None, "405", "/stats takes GET, not DELETE"),
    ("BREW", "/predict", None, "405", "method 'BREW' is not allowed"),
    ("POST", "/predict", b"", "400", "not valid JSON (Expecting value at character 0)"),
]


@pytest.mark.parametrize(
    "method, path, body, status, fragment", BAD, ids=[f"{b[3]}-{b[4][:28]}" for b in BAD]
)
def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(
    server, method, path, body, status, fragment
):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        before = server.stats()["http"]["client_errors"]
        got, out, resp = request(conn, method, path, body, JSON if body else {})
        assert str(got) == status, out
        assert fragment in out["error"], out["error"]
        if got == 405:
            assert resp.getheader("Allow") or method == "BREW"
        assert server.stats()["http"]["client_errors"] == before + 1
        if resp.will_close:  # the server closed the connection: a fresh one
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        good_request(conn, server)  # on the same keep-alive connection where it stayed open
    finally:
        conn.close()


@pytest.mark.parametrize(
    "headers, status, fragment",
    [
        ({"Content-Length": str(10**9)}, 413, "more than the limit"),
        ({}, 411, "needs a JSON body with a Content-Length"),
        ({"Transfer-Encoding": "chunked"}, 411, "chunked bodies are not supported"),
        ({"Content-Length": "-5"}, 400, "Content-Length '-5' is not a non-negative integer"),
    ],
)
def test_a_body_the_server_cannot_read_is_refused_unread(server, headers, status, fragment):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("POST", "/predict")
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()  # no body is sent: the server must not wait for one
        resp = conn.getresponse()
        out = json.loads(resp.read())
        assert resp.status == status and fragment in out["error"], out
        if status != 411 or headers:
            assert resp.will_close  # the unread bytes make the connection unusable
    finally:
        conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    good_request(conn, server)
    conn.close()


def test_health_and_stats(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    status, health, _ = request(conn, "GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["students"] == 3
    status, stats, _ = request(conn, "GET", "/stats")
    assert status == 200 and stats["active_students"] == 3 and stats["policy"]["mode"] == "fixed"
    assert {"queue_length", "batches", "examples", "changes", "serving", "http"} <= set(stats)
    conn.close()


def test_an_inference_failure_answers_500_and_the_worker_survives(tokenizer):
    ens = tiny_ensemble(k=2)
    cfg = ServingConfig(port=0, max_seq_len=SEQ)
    with StudentServer(ens, tokenizer, FixedPolicy(2), config=cfg) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        word = ens.embeddings.word.weight
        # break the real model: a 50-token vocabulary cannot embed [CLS] (id 101)
        ens.embeddings.word.weight = torch.nn.Parameter(word[:50].clone())
        status, out, _ = request(conn, "POST", "/predict", b'{"text": "fine"}', JSON)
        assert status == 500 and "inference failed: IndexError" in out["error"]
        ens.embeddings.word.weight = word
        status, out, _ = request(conn, "POST", "/predict", b'{"text": "fine"}', JSON)
        assert status == 200 and len(out["labels"]) == 1
        st = srv.stats()
        assert st["failed_batches"] == 1 and st["worker_alive"]
        assert st["http"]["server_errors"] == 1
        conn.close()


def test_server_refuses_a_busy_port(tokenizer):
    ens = tiny_ensemble(k=1)
    with StudentServer(
        ens, tokenizer, FixedPolicy(1), config=ServingConfig(port=0, max_seq_len=SEQ)
    ) as srv:
        other = StudentServer(
            ens, tokenizer, FixedPolicy(1), config=ServingConfig(port=srv.port, max_seq_len=SEQ)
        )
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{srv.port}"):
            other.start()


# ---- the load generator -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"]
)
def test_loopback_hosts_are_accepted(host):
    assert check_loopback(host) and is_loopback(host)


@pytest.mark.parametrize("host", ["10.0.0.1", "0.0.0.0", "example.com", "8.8.8.8", "::", ""])
def test_the_load_generator_refuses_non_loopback_hosts(host):
    assert not is_loopback(host)
    with pytest.raises(ConfigError, match="not loopback"):
        run_load(
            host, 80, [("a", 0)], burst_schedule(steady_rps=1, burst_rps=2, steady_s=1, burst_s=1)
        )


def test_load_schedule_caps():
    with pytest.raises(ConfigError, match="more than the cap of 100"):
        LoadSchedule((Phase("p", 50, 3),), max_requests=100)
    with pytest.raises(ConfigError, match="more than the cap of 20 s"):
        LoadSchedule((Phase("p", 1, 15),), request_timeout_s=10, max_duration_s=20)
    with pytest.raises(ConfigError, match="rate"):
        Phase("p", -1, 1)
    sched = burst_schedule(steady_rps=10, burst_rps=40, steady_s=1, burst_s=0.5, after_s=2)
    assert sched.total_requests == 10 + 20 + 20 and sched.duration_s == 3.5
    due = [t for t, _ in sched.arrivals()]
    assert due == sorted(due) and due[10] == pytest.approx(1.0) and due[-1] < 3.5


def test_the_load_generator_stops_by_itself_and_counts_consistently(server):
    # labels: the model's own answer for even texts, the other class for odd ones -> 50% exactly
    pred = server.direct.argmax(-1).tolist()
    examples = [(t, pred[i] if i % 2 == 0 else 1 - pred[i]) for i, t in enumerate(TEXTS)]
    sched = burst_schedule(
        steady_rps=20,
        burst_rps=120,
        steady_s=0.5,
        burst_s=0.5,
        texts_per_request=2,
        request_timeout_s=3.0,
        max_duration_s=6.0,
        concurrency=32,
    )
    t0 = time.monotonic()
    rep = run_load("127.0.0.1", server.port, examples, sched)
    assert time.monotonic() - t0 < sched.max_duration_s + 1.0
    assert rep.requests == sched.total_requests == 10 + 60 + 10
    assert rep.answered + rep.error_count == rep.requests
    assert rep.examples == 2 * rep.answered
    assert rep.answered > 0 and rep.accuracy == pytest.approx(50.0)
    assert 0 < rep.p50_ms <= rep.p99_ms and rep.examples_per_second > 0
    assert [p.name for p in rep.phases] == ["steady", "burst", "after"]
    assert [p.requests for p in rep.phases] == [10, 60, 10]
    assert sum(p.answered for p in rep.phases) == rep.answered
    assert rep.serving_timeline and {c for _, c in rep.serving_timeline} == {"k=3"}
    d = rep.to_dict()
    assert d["error_count"] == rep.error_count and len(d["phases"]) == 3


def test_the_load_generator_counts_a_dead_server_as_errors_and_ends():
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sched = LoadSchedule((Phase("p", 20, 0.5),), request_timeout_s=1.0, max_duration_s=5.0)
    rep = run_load("127.0.0.1", port, [("a", 0)], sched)
    assert rep.requests == 10 and rep.answered == 0 and rep.errors == {"connection": 10}
    assert math.isnan(rep.p50_ms) and rep.examples_per_second == 0.0


# ---- the command line ---------------------------------------------------------------------------
CLI_BAD = [
    (["--students", "0"], "students K (0)"),
    (["--students", "17"], "students K (17)"),
    (["--depth", "4"], "student depth (4)"),
    (["--depth", "0"], "student depth (0)"),
    (["--students", "4", "--fixed-k", "5"], "--fixed-k (5) must be between 1 and --students (4)"),
    (["--fixed-k", "0"], "--fixed-k (0)"),
    (["--slo-ms", "0"], "slo_ms (0.0)"),
    (["--port", "70000"], "port (70000)"),
    (["--max-batch", "0"], "max batch (0)"),
    (["--skip-dev-eval", "--accuracy-from", "meta"], "--skip-dev-eval contradicts"),
]


@pytest.mark.parametrize("args, message", CLI_BAD, ids=[" ".join(a) for a, _ in CLI_BAD])
def test_serve_students_rejects_bad_input_before_any_work(tmp_path, capsys, args, message):
    from autoprumux.cli import main

    cache = tmp_path / "cache"
    argv = ["serve-students", *args, "--cache-dir", str(cache), "--data-dir", str(tmp_path / "x")]
    t0 = time.monotonic()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    # nothing was read, built or trained: the (missing) data directory was never looked at
    assert not cache.exists() and "data" not in err.lower()
    assert time.monotonic() - t0 < 5.0


def start_serve_students(tiny_checkpoint: str, tmp_path, *extra: str) -> subprocess.Popen:
    """`autoprumux serve-students` on the tiny model with 2 students of depth 1 and a few
    training steps, on a free loopback port, as a child process."""
    argv = [sys.executable, "-m", "autoprumux.cli", "serve-students", "--students", "2"]
    argv += ["--depth", "1", "--model", tiny_checkpoint, "--data-dir", str(GLUE_DIR)]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--port", "0", "--max-seq-len", "32"]
    argv += ["--max-train-examples", "64", "--batch-size", "16", "--finetune-steps", "2"]
    argv += ["--student-steps", "3", "--student-stacking-steps", "2", *extra]
    env = {**os.environ, "AUTOPRUMUX_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        argv,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_delivered,
    )


@contextlib.contextmanager
def served_students(tiny_checkpoint: str, tmp_path, *extra: str) -> Iterator[tuple[int, str]]:
    """`start_serve_students`, read up to its "serving" line: (the port, what it printed up to
    there). Leaving the block interrupts the server, which must exit cleanly."""
    proc = start_serve_students(tiny_checkpoint, tmp_path, *extra)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # the operating-point table, then the address
            lines.append(line)
            if line.startswith("serving"):
                break
        text = "".join(lines)
        m = re.search(r"http://127\.0\.0\.1:(\d+)/predict", lines[-1] if lines else "")
        assert m, text + (proc.stderr.read() if proc.stderr else "")
        yield int(m.group(1)), text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_students_serves_until_interrupted(tiny_checkpoint, tmp_path):
    with served_students(tiny_checkpoint, tmp_path) as (port, printed):
        # examples/second, the validation loss (what chose; "-" without a split), the dev loss
        row = r"^k=2\s+[\d.]+\s+(-|-?[\d.]+)\s+-?[\d.]+(\s+\(not used.*\))?$"
        assert re.search(row, printed, re.M), printed
        assert "val loss" in printed and "dev loss" in printed
        assert "chosen on the validation loss" in printed or DEV_CHOSEN in printed, printed
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        status, out, _ = request(conn, "POST", "/predict", b'{"texts": ["fine", "awful"]}', JSON)
        assert status == 200 and len(out["labels"]) == 2 and out["active_students"] in (1, 2)
        status, out, _ = request(conn, "POST", "/predict", b'{"texts": 5}', JSON)
        assert status == 400 and '"texts" must be a list' in out["error"]
        conn.close()


def test_the_policy_table_can_come_from_the_meta_model():
    """Accuracy losses per k predicted by a meta-model fitted on student trials: defined for
    every k, pessimistic above the median, and never rising with k (monotone constraint)."""
    from pathlib import Path

    from autoprumux.meta import Recommender
    from autoprumux.search import SearchSpace
    from autoprumux.student_server import meta_accuracy_losses

    grid = SearchSpace.from_yaml(
        Path(__file__).resolve().parents[1] / "search_spaces" / "students.yaml"
    ).grid()
    ctx = {
        "task_num_labels": 2,
        "task_pair": 0,
        "task_mcc": 0,
        "task_log_train": 9.0,
        "model_layers": 6,
        "model_hidden": 384,
        "model_log_params": 16.7,
        "device_cuda": 0,
        "baseline_metric": 83.0,
    }
    trials = [
        {
            "study": "s",
            "number": i,
            "task": "sst2",
            "model": "m",
            "device": "cpu",
            "candidates": grid,
            "config": Candidate(technique="students", students=k, student_depth=d),
            "context": ctx,
            "accuracy_loss": 8.0 / (k * d) + 0.1 * (i % 3),
            "speedup": 6.0 / (k * d),
            "mlflow_run_id": None,
        }
        for i, (k, d) in enumerate((k, d) for k in (1, 2, 3, 4) for d in (1, 2, 3))
    ]
    rec = Recommender(trials)
    hi = meta_accuracy_losses(rec, k=4, depth=2, task="sst2")
    med = meta_accuracy_losses(rec, k=4, depth=2, task="sst2", pessimistic=False)
    assert sorted(hi) == [1, 2, 3, 4]
    assert all(hi[k] >= med[k] for k in hi)
    assert all(med[k + 1] <= med[k] + 1e-9 for k in (1, 2, 3)), med
    assert med[1] > med[4] + 1.0  # it learnt that more students lose less
    with pytest.raises(ConfigError, match="task='cola'"):
        meta_accuracy_losses(rec, k=4, depth=2, task="cola")
