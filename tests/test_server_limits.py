"""Clients that open connections and send nothing, or send slowly, cannot lock others out of
`autoprumux serve` or `serve-students`: connections are capped apart from requests in flight, a
connection that has not sent a whole request head within the header timeout is closed, at the
cap the connection idle longest makes room for a new one, and a body that does not arrive in
time gets 408.

Everything runs against 127.0.0.1 and stops by itself: the end-to-end test on `autoprumux
serve` (a subprocess), the limits themselves on a small ASGI app under the same uvicorn setup
with short timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import test_hostile_http as hostile
from test_hostile_http import JSON, _records, _request

from autoprumux.serving._connections import limited_server
from autoprumux.serving._server import InFlightLimit, RequestGuard

# the fixtures of test_hostile_http: its registered recommender, served, and its students' server
_no_global_mlflow_state = hostile._no_global_mlflow_state
registered = hostile.registered
served = hostile.served
students = hostile.students


def _idle_sockets(port: int, n: int, pause: float = 0.0) -> list[socket.socket]:
    out: list[socket.socket] = []
    try:
        for _ in range(n):
            out.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            time.sleep(pause)
    except BaseException:
        for s in out:
            s.close()
        raise
    return out


def _closed_by_server(s: socket.socket, within: float) -> bool:
    """The server closed `s` within `within` seconds (EOF or reset), not just stayed silent."""
    s.settimeout(within)
    try:
        while True:
            if not s.recv(65536):
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


# ---- end to end: `autoprumux serve` and `serve-students` ---------------------------------


def test_200_idle_connections_do_not_lock_clients_out_of_serve(served):
    idle = _idle_sockets(served, 200)
    try:
        time.sleep(1.0)  # the server has accepted them all
        got, out = _request(served, "POST", "/invocations", _records({"budget": 2}), JSON)
        assert got == 200, out[:300]
        assert json.loads(out)["predictions"][0]["sparsity"] == 0.5
    finally:
        for s in idle:
            s.close()


def test_200_idle_connections_do_not_lock_clients_out_of_the_students(students):
    idle = _idle_sockets(students.port, 200)
    try:
        time.sleep(1.0)
        got, out = _request(students.port, "POST", "/predict", b'{"text": "fine"}', JSON)
        assert got == 200, out[:300]
    finally:
        for s in idle:
            s.close()


# ---- the limits on a small app -----------------------------------------------------------


async def _app(scope, receive, send) -> None:
    """Answers 200 "ok", after `?seconds` when the path is /slow."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(float(scope["query_string"] or 0))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@contextlib.contextmanager
def _serving(app, **limits) -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = limited_server(app, log_level="error", lifespan="off", **limits)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        t0 = time.time()
        while not server.started:
            assert thread.is_alive() and time.time() - t0 < 30, "the server did not start"
            time.sleep(0.02)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _get(port: int, path: str = "/") -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        conn.close()


def _never_finish_heads(path: bytes, silent, trickle, kept) -> None:
    """Start a head on `trickle` and on the kept-alive `kept`, send a header line every 0.1 s
    (never a whole head), then check the server closed all three within the deadline's reach."""
    t0 = time.monotonic()
    trickle.sendall(b"GET %s HTTP/1.1\r\n" % path)
    kept.sendall(b"GET %s HTTP/1.1\r\n" % path)  # the next head on a kept-alive connection
    for i in range(8):
        time.sleep(0.1)
        for s in (trickle, kept):
            with contextlib.suppress(OSError):
                s.sendall(b"X-%d: y\r\n" % i)
    for name, s in (("silent", silent), ("trickling", trickle), ("kept-alive", kept)):
        assert _closed_by_server(s, within=3.0), f"the {name} connection stayed open"
        s.close()
    assert time.monotonic() - t0 < 4.0


def test_a_connection_without_a_whole_request_head_is_closed_at_the_header_deadline():
    with _serving(_app, header_timeout_s=0.5) as port:
        silent, trickle, kept = _idle_sockets(port, 3)
        kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert kept.recv(65536).startswith(b"HTTP/1.1 200")
        _never_finish_heads(b"/", silent, trickle, kept)
        assert _get(port)[0] == 200


def test_a_request_in_progress_outlives_the_header_deadline():
    with _serving(_app, header_timeout_s=0.3) as port:
        status, body, _ = _get(port, "/slow?1.0")
        assert (status, body) == (200, b"ok")


def test_at_the_connection_cap_the_connection_idle_longest_makes_room():
    with _serving(_app, max_connections=4, header_timeout_s=60) as port:
        idle = _idle_sockets(port, 10, pause=0.05)
        try:
            assert _get(port)[0] == 200  # its connection made room too
            closed = [_closed_by_server(s, within=1.0) for s in idle]
            # the oldest seven made room for three newer ones and the request
            assert closed == [True] * 7 + [False] * 3, closed
        finally:
            for s in idle:
                s.close()


def test_requests_in_flight_are_limited_apart_from_connections():
    app = InFlightLimit(_app, max_in_flight=2)
    with _serving(app) as port:
        idle = _idle_sockets(port, 20)  # connections hold no slot
        try:
            with ThreadPoolExecutor(2) as pool:
                slow = [pool.submit(_get, port, "/slow?1.5") for _ in range(2)]
                time.sleep(0.5)
                status, body, headers = _get(port)
                assert status == 503 and headers.get("retry-after") == "1", body
                assert "limit" in json.loads(body)["message"]
                assert [f.result()[0] for f in slow] == [200, 200]
            assert _get(port)[0] == 200
        finally:
            for s in idle:
                s.close()


def test_a_body_that_does_not_arrive_in_time_gets_408():
    app = RequestGuard(_app, body_timeout_s=0.5)
    with _serving(app) as port, socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"dataframe_records": '
        )
        s.settimeout(5)
        got = b""
        while chunk := s.recv(65536):  # the server closes after the answer: read it whole
            got += chunk
        assert got.startswith(b"HTTP/1.1 408"), got[:200]
        assert b"did not arrive within 0.5 s (22 bytes came)" in got


# ---- the same limits on the students' threaded server ------------------------------------


@contextlib.contextmanager
def _students(**limits) -> Iterator[int]:
    from test_serving import SEQ, tiny_ensemble

    from autoprumux.models import resolve_model
    from autoprumux.student_server import FixedPolicy, ServingConfig, StudentServer

    cfg = ServingConfig(port=0, max_seq_len=SEQ, **limits)
    tokenizer = resolve_model(None).tokenizer()
    with StudentServer(tiny_ensemble(k=2), tokenizer, FixedPolicy(2), config=cfg) as srv:
        yield srv.port


def _predict(port: int) -> int:
    return _request(port, "POST", "/predict", b'{"text": "fine"}', JSON)[0]


def test_the_students_cut_a_connection_without_a_whole_request_head_at_the_deadline():
    with _students(header_timeout_s=0.5) as port:
        silent, trickle, kept = _idle_sockets(port, 3)
        body = b'{"text": "fine"}'
        kept.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        assert kept.recv(65536).startswith(b"HTTP/1.1 200")
        _never_finish_heads(b"/health", silent, trickle, kept)
        assert _predict(port) == 200


def test_the_students_cut_a_request_whose_body_does_not_arrive_in_time():
    with _students(body_timeout_s=0.5, request_timeout_s=0.5) as port:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"text": '
            )
            t0 = time.monotonic()
            assert _closed_by_server(s, within=5.0)
            assert time.monotonic() - t0 < 4.0
        assert _predict(port) == 200


def test_at_the_students_connection_cap_the_connection_idle_longest_makes_room():
    with _students(max_connections=4, header_timeout_s=60) as port:
        idle = _idle_sockets(port, 10, pause=0.05)
        try:
            assert _predict(port) == 200
            closed = [_closed_by_server(s, within=1.0) for s in idle]
            assert closed == [True] * 7 + [False] * 3, closed
        finally:
            for s in idle:
                s.close()
