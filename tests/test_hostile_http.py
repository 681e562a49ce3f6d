"""Hostile requests and arguments: both HTTP servers answer
4xx, never 500, to deep JSON, missing content types, booleans as budgets, huge values and too
many rows, without echoing what they were sent; `autoprumux serve` refuses bad arguments and
an unreachable store before any work, stops with SIGTERM, and loads only a recommender stored
as data (no pickle), which answers exactly as the in-memory one.

Everything runs against 127.0.0.1 with a real MLflow SQLite store in tmp_path and a recommender
built from five synthetic trials (no search is run)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from test_search_space import _issue_trials

from autoprumux.cli import main
from autoprumux.meta import Recommender
from autoprumux.meta._model import MetaModel
from autoprumux.serving._pyfunc import (
    MAX_ROWS,
    RecommenderModel,
    mlflow_uris,
    register_recommender,
)

BUDGETS = [0.0, 0.3, 0.46, 0.5, 1.0, 2.0, 2.52, 3.0, 5.0, 7.57, 8.0, 10.0, 50.0, 100.0]
JSON = {"Content-Type": "application/json"}


@pytest.fixture(autouse=True)
def _no_global_mlflow_state(monkeypatch):
    # `serve` pins these in its own process; here they must not leak into other tests
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A recommender from synthetic trials, registered in a fresh SQLite store."""
    d = tmp_path_factory.mktemp("registry")
    rec = Recommender(_issue_trials())
    store = f"sqlite:///{d / 'mlflow.db'}"
    uri = register_recommender(rec, tracking_uri=store)
    return {"dir": d, "store": store, "uri": uri, "rec": rec}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_serve(registered, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoprumux.cli", "serve", "--port", str(port)]
        + ["--tracking-uri", registered["store"]],
        cwd=registered["dir"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own group: the test can check nothing of it is left
    )
    t0 = time.time()
    while time.time() - t0 < 120:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if _request(port, "GET", "/ping")[0] == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("serve did not answer /ping within 120 s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with_group = os.getpgid(proc.pid)
        os.killpg(with_group, signal.SIGKILL)
        proc.wait(timeout=30)


def _request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body is not None:
            conn.send(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def served(registered):
    port = _free_port()
    proc = _start_serve(registered, port)
    yield port
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    finally:
        _stop(proc)


# ---- item 11: stored as data, answers as in memory ---------------------------------------


def test_the_registered_recommender_holds_no_pickle_and_answers_as_in_memory(registered):
    import mlflow

    files = [p for p in (registered["dir"] / "mlartifacts").rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"recommender.json", "accuracy_loss.txt", "log_speedup.txt"} <= names, names
    assert "_recommender_code.py" in names and "python_model.pkl" not in names
    assert not [p for p in files if p.suffix in (".pkl", ".pickle", ".joblib")], names
    for p in files:  # no pickle under another name either (protocol 2+ starts with 0x80)
        assert not p.read_bytes().startswith(b"\x80"), p

    rec = registered["rec"]
    with mlflow_uris(registered["store"]):
        loaded = mlflow.pyfunc.load_model(registered["uri"])
    frame = pd.DataFrame({"budget": BUDGETS})
    got = loaded.predict(frame)
    want = RecommenderModel(rec).predict(None, frame)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    for b, row in zip(BUDGETS, got.to_dict(orient="records"), strict=True):
        r = rec.recommend(b)
        assert (row["sparsity"], row["mux"], row["source"]) == (r.sparsity, r.mux, r.source)
        assert row["predicted_accuracy_loss"] == r.predicted_accuracy_loss
        assert row["speedup_high"] == r.speedup_interval.high
    assert {r.source for r in map(rec.recommend, BUDGETS)} == {"baseline", "measured"}


def test_the_meta_model_round_trips_through_json_and_predicts_identically():
    from autoprumux.meta._model import FEATURES

    meta = Recommender(_issue_trials()).meta
    again = MetaModel.from_dict(json.loads(json.dumps(meta.to_dict())))
    scale = [
        1,
        0.95,
        2,
        1,
        8,
        3,
        3,
        1,
        3,
        1,
        1,
        *[1] * 9,
    ]  # the configuration's ranges, context 0..1
    X = np.random.default_rng(0).random((64, len(FEATURES))) * scale
    assert np.array_equal(meta.predict(X), again.predict(X))
    for a, b in zip(meta.predict_interval(X), again.predict_interval(X), strict=True):
        assert np.array_equal(a, b)
    assert again.get_params() == meta.get_params()
    assert again.to_dict() == meta.to_dict()  # and it serialises again to the same data
    # what the round trip must refuse rather than predict from
    d = meta.to_dict()
    for bad, match in (
        ({**d, "format": "pickle"}, "not a autoprumux.meta_model"),
        ({**d, "features": d["features"][:-1]}, "other features"),
        ({**d, "params": {"evil": 1}}, "params"),
        ({**d, "trees": d["trees"][:1]}, "two LightGBM"),
        ({**d, "half_width": [float("nan"), 1.0]}, "finite"),
    ):
        with pytest.raises(ValueError, match=match):
            MetaModel.from_dict(bad)


def test_a_recommender_round_trips_and_refuses_a_malformed_state():
    rec = Recommender(_issue_trials())
    again = Recommender.from_dict(json.loads(json.dumps(rec.to_dict())))
    for b in BUDGETS:
        assert again.recommend(b) == rec.recommend(b)
    d = rec.to_dict()
    entry = d["entries"][0]
    for bad, match in (
        ({**d, "format": "x"}, "not a autoprumux.recommender"),
        ({**d, "entries": []}, "at least one"),
        ({**d, "entries": [{**entry, "task": 3}]}, "'task' must be a string"),
        ({**d, "entries": [{**entry, "measured": [{"config": {}}]}]}, "needs"),
        ({**d, "entries": [{**entry, "context": {}}]}, "cannot be featurised"),
    ):
        with pytest.raises(ValueError, match=match):
            Recommender.from_dict(bad)


def test_serve_refuses_a_model_it_would_have_to_unpickle_or_whose_code_differs(
    registered, tmp_path, monkeypatch, capsys
):
    import mlflow

    monkeypatch.chdir(tmp_path)
    store = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    # the old way: a cloudpickled PythonModel holding the recommender
    pickled = tmp_path / "pickled"
    mlflow.pyfunc.save_model(str(pickled), python_model=RecommenderModel(registered["rec"]))
    assert (pickled / "python_model.pkl").is_file()
    # the data model, its code file edited (e.g. by someone with write access to the store)
    good = next((registered["dir"] / "mlartifacts").rglob("MLmodel")).parent
    edited = tmp_path / "edited"
    shutil.copytree(good, edited)
    with (edited / "_recommender_code.py").open("a") as f:
        f.write("\nimport os  # anything here would run in the server\n")
    port = str(_free_port())
    for model, message in ((pickled, "pickle files"), (edited, "differs from this autoprumux")):
        assert main(["serve", "--model-uri", str(model), "--port", port, *store]) == 2
        err = capsys.readouterr().err
        assert message in err and "register it again" in err, err


# the code file recommenders were registered with while it lived in autoprumux/meta/
_CODE_IN_META = '''"""The code MLflow runs to load the registered recommender ("models from code").

`register_recommender` logs this file as the pyfunc's `python_model`, so no pickled Python
object is written: the model's state is data (JSON and LightGBM text models) that
`RecommenderModel.load_context` reads and checks. `autoprumux serve` executes a model's copy
of this file only when it is byte-identical to this one (see `_serving.verify_model_dir`).
"""

import mlflow

from autoprumux.meta._pyfunc import RecommenderModel

mlflow.models.set_model(RecommenderModel())
'''


def test_a_recommender_registered_before_the_code_moved_to_serving_is_still_served(
    registered, tmp_path
):
    import hashlib

    from autoprumux.serving._pyfunc import (
        CODE_FILE,
        LEGACY_CODE_SHA256,
        upgrade_code_file,
        verify_model_dir,
    )
    from autoprumux.serving._server import fetch_model

    assert hashlib.sha256(_CODE_IN_META.encode()).hexdigest() in LEGACY_CODE_SHA256
    good = next((registered["dir"] / "mlartifacts").rglob("MLmodel")).parent
    old = tmp_path / "registered_in_meta"
    shutil.copytree(good, old)
    (old / "_recommender_code.py").write_text(_CODE_IN_META)
    # what serve does: a private copy, today's code file put in place, then the checks
    local = fetch_model(str(old), registered["store"], tmp_path / "download")
    assert local.resolve().is_relative_to((tmp_path / "download").resolve())
    assert upgrade_code_file(local)
    assert (local / "_recommender_code.py").read_bytes() == CODE_FILE.read_bytes()
    assert (old / "_recommender_code.py").read_text() == _CODE_IN_META  # the original untouched
    verify_model_dir(local, str(old))
    import mlflow

    frame = pd.DataFrame({"budget": BUDGETS})
    got = mlflow.pyfunc.load_model(str(local)).predict(frame)
    want = RecommenderModel(registered["rec"]).predict(None, frame)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    # an edited copy is not taken for the old file: it stays, and is refused
    edited = tmp_path / "edited"
    shutil.copytree(good, edited)
    (edited / "_recommender_code.py").write_text(_CODE_IN_META + "import os\n")
    assert not upgrade_code_file(edited)
    assert (edited / "_recommender_code.py").read_text() == _CODE_IN_META + "import os\n"


# ---- items 2 and 5: arguments refused before any work ------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "-1"], "--port (-1) must be between 1 and 65535"),
        (["--port", "70000"], "--port (70000) must be between 1 and 65535"),
        (["--port", "0"], "--port (0) must be between 1 and 65535"),
        (["--model-uri", "models:"], "'models:' is not a registered-model URI"),
        (["--model-uri", "models:/"], "is not a registered-model URI"),
        (["--model-uri", "runs:/abc"], "is not a run model URI"),
        (["--model-uri", "no/such/model"], "no such file or directory"),
        (["--model-uri", "."], "not an MLflow model directory"),
        (["--tracking-uri", "http://127.0.0.1:1"], "not reachable"),
    ],
)
def test_serve_refuses_bad_arguments_before_any_work(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    assert main(["serve", *args]) == 2
    took = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1 and err.startswith("autoprumux: error:"), err  # one line
    assert took < 15, f"took {took:.1f} s"  # an unreachable server is not retried for minutes
    assert not list(tmp_path.iterdir()), "nothing may be created before the arguments pass"


def test_serve_warns_about_a_non_loopback_host(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # a TEST-NET address: never assigned here, so nothing listens beyond loopback
    assert main(["serve", "--host", "192.0.2.1", "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err.splitlines()
    warning = [line for line in err if "warning" in line]
    assert len(warning) == 1 and "192.0.2.1" in warning[0] and "authentication" in warning[0]
    assert "cannot listen on 192.0.2.1" in err[-1]


# ---- item 9: hostile requests to `autoprumux serve` ---------------------------------------


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def _records(*rows: dict) -> bytes:
    return json.dumps({"dataframe_records": list(rows)}).encode()


HOSTILE = [
    # (id, headers, body, status, fragment of the message)
    ("deep-list", JSON, _deep(100_000), 400, "nested too deeply"),
    ("deep-object", JSON, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, 400, "nested too deeply"),
    ("deep-rows", JSON, b'{"dataframe_records": ' + _deep(500) + b"}", 400, "nested more than"),
    ("empty-content-type", {"Content-Type": ""}, _records({"budget": 2}), 415, "Content-Type"),
    ("no-content-type", {}, _records({"budget": 2}), 415, "no Content-Type"),
    ("text-content-type", {"Content-Type": "text/plain"}, _records({"budget": 2}), 415, "JSON"),
    ("bool-budget", JSON, _records({"budget": True}), 400, "budget is a boolean"),
    ("bool-task", JSON, _records({"budget": 2, "task": False}), 400, "task is a boolean"),
    (
        "bool-split",
        JSON,
        json.dumps({"dataframe_split": {"columns": ["budget"], "data": [[True]]}}).encode(),
        400,
        "is a boolean",
    ),
    ("10MB-task", JSON, _records({"budget": 2, "task": "x" * 10_000_000}), 413, "limit of"),
    ("500kB-task", JSON, _records({"budget": 2, "task": "x" * 500_000}), 400, "500,000 char"),
    ("rows", JSON, _records(*[{"budget": 2}] * (MAX_ROWS + 1)), 400, "limit of 1,000 per"),
    ("huge-int", JSON, b'{"dataframe_records": [{"budget": ' + b"9" * 5000 + b"}]}", 400, "JSON"),
    ("not-json", JSON, b"not json" + b"!" * 100_000, 400, "not valid JSON"),
    ("not-utf8", JSON, b'{"dataframe_records": [{"task": "\xff\xfe"}]}', 400, "UTF-8"),
    ("negative", JSON, _records({"budget": -1}), 400, "between 0 and 100"),
    ("no-study", JSON, _records({"budget": 2, "task": "cola"}), 400, "no finished trials"),
]


@pytest.mark.parametrize(
    "headers, body, status, fragment", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_requests_to_the_recommender_get_a_short_4xx(
    served, headers, body, status, fragment
):
    if status == 413:  # declared, not sent: the server must refuse it unread
        got, out = _request(
            served, "POST", "/invocations", None, {**headers, "Content-Length": str(len(body))}
        )
    else:
        got, out = _request(served, "POST", "/invocations", body, headers)
    assert got == status, out[:500]
    msg = json.loads(out)["message"]
    assert fragment in msg, msg
    assert len(out) < 3000, f"{len(out)} bytes echoed"  # values are cut, not echoed whole
    assert b"x" * 200 not in out and b"!" * 200 not in out
    good, ok = _request(served, "POST", "/invocations", _records({"budget": 2.0}), JSON)
    assert good == 200 and json.loads(ok)["predictions"][0]["sparsity"] == 0.5


def test_the_row_cap_admits_a_full_request_and_it_answers_as_in_memory(served, registered):
    rows = [{"budget": BUDGETS[i % len(BUDGETS)]} for i in range(MAX_ROWS)]
    t0 = time.perf_counter()
    status, out = _request(served, "POST", "/invocations", _records(*rows), JSON)
    took = time.perf_counter() - t0
    assert status == 200, out[:300]
    preds = json.loads(out)["predictions"]
    assert len(preds) == MAX_ROWS
    want = {b: registered["rec"].recommend(b) for b in BUDGETS}
    for row, p in zip(rows, preds, strict=True):
        r = want[row["budget"]]
        assert (p["sparsity"], p["mux"], p["speedup"]) == (r.sparsity, r.mux, r.speedup)
    assert took < 30, f"{MAX_ROWS} rows took {took:.1f} s"  # equal rows are answered once
    for path in ("/ping", "/health"):
        assert _request(served, "GET", path)[0] == 200


def test_sigterm_stops_serve_and_leaves_no_listener(registered):
    port = _free_port()
    proc = _start_serve(registered, port)
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)  # nothing of its process group is left
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert "stopping" in proc.stderr.read().decode()
    finally:
        _stop(proc)


# ---- item 9: hostile requests to `autoprumux serve-students` ------------------------------


@pytest.fixture(scope="module")
def students():
    from test_serving import SEQ, tiny_ensemble

    from autoprumux.models import resolve_model
    from autoprumux.student_server import FixedPolicy, ServingConfig, StudentServer

    ens = tiny_ensemble(k=2)
    cfg = ServingConfig(port=0, max_seq_len=SEQ)
    with StudentServer(ens, resolve_model(None).tokenizer(), FixedPolicy(2), config=cfg) as srv:
        yield srv


STUDENT_HOSTILE = [
    ("deep-list", "/predict", _deep(100_000), 400, "nested too deeply"),
    ("deep-texts", "/predict", b'{"texts": ' + _deep(500) + b"}", 400, "nested more than 8"),
    ("deep-echo", "/predict", b'{"texts": [' + _deep(5) + b"]}", 400, "must be a string"),
    ("huge-int", "/predict", b'{"text": ' + b"9" * 5000 + b"}", 400, "not usable JSON"),
    ("long-key", "/predict", json.dumps({"k" * 100_000: 1}).encode(), 400, "unknown field"),
    ("many-texts", "/predict", json.dumps({"texts": ["a"] * 10_000}).encode(), 400, "limit of 64"),
    ("long-path", "/" + "p" * 60_000, b"{}", 404, "no endpoint"),
]


@pytest.mark.parametrize(
    "path, body, status, fragment",
    [h[1:] for h in STUDENT_HOSTILE],
    ids=[h[0] for h in STUDENT_HOSTILE],
)
def test_hostile_requests_to_the_students_get_a_short_4xx(students, path, body, status, fragment):
    before = students.stats()["http"]["server_errors"]
    got, out = _request(students.port, "POST", path, body, JSON)
    assert got == status, out[:500]
    msg = json.loads(out)["error"]
    assert fragment in msg, msg
    assert len(out) < 1000, f"{len(out)} bytes echoed"
    assert students.stats()["http"]["server_errors"] == before
    good, ok = _request(students.port, "POST", "/predict", b'{"text": "fine"}', JSON)
    assert good == 200 and len(json.loads(ok)["labels"]) == 1


def test_the_students_request_parser_refuses_deep_json_without_a_server():
    from autoprumux.student_server import ServingError, parse_predict_request

    for body in (_deep(100_000), b'{"texts": ' + _deep(50) + b"}"):
        with pytest.raises(ServingError, match="nested") as e:
            parse_predict_request(body, max_texts=64, max_chars=100)
        assert e.value.status == 400
