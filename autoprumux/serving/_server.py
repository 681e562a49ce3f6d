"""`autoprumux serve`: the registered recommender behind MLflow's scoring app, in this process.

The model is fetched to a private temporary directory, a code file registered by an earlier
autoprumux replaced with this one's (`upgrade_code_file`), and checked (`verify_model_dir`) before
MLflow loads anything. The HTTP front (`RequestGuard`) sits before MLflow's scoring app, which
parses and echoes JSON without limits: it answers 415 to anything but `Content-Type:
application/json`, 413 to a body over `MAX_BODY_BYTES`, 400 to invalid JSON, JSON nested deeper
than `MAX_JSON_DEPTH`, more than `MAX_ROWS` rows, or a boolean where a value belongs (JSON `true`
is not a budget), and 408 to a body not sent within `BODY_TIMEOUT_S`. `InFlightLimit` answers 503
to more than `MAX_IN_FLIGHT` requests at once; connections are capped and timed out apart from
requests (`_connections`), so idle sockets cannot lock clients out.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from autoprumux import tracking
from autoprumux._json import json_depth
from autoprumux.errors import ConfigError
from autoprumux.serving._pyfunc import (
    MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
    MAX_ROWS,
    cap_message,
    echo,
    mlflow_uris,
    upgrade_code_file,
    verify_model_dir,
)

# a body of at most MAX_BODY_BYTES takes well under a second on any link that can serve
BODY_TIMEOUT_S = 30.0
# requests read or answered at once; each holds at most one body of MAX_BODY_BYTES
MAX_IN_FLIGHT = 64

# ---- the HTTP front: a guard before MLflow's scoring app --------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Refusal(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class RequestGuard:
    """ASGI middleware that checks a POST /invocations before MLflow's scoring app sees it.

    MLflow parses the body with `json.loads` (a RecursionError on deep nesting is a 500), echoes
    unparsable bodies whole in its 400, takes any Content-Type header as a string (a missing one
    is a 500) and converts JSON `true` to 1.0 for a double column. This reads the body up to
    `max_body_bytes`, parses it once itself, and refuses with a JSON `{"error_code",
    "message"}` as MLflow does: 415 for a Content-Type that is not application/json, 413 for a
    larger body, 400 for invalid JSON, nesting deeper than `max_depth`, more than `max_rows`
    rows or a boolean value. A body that passes is handed on unchanged."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_depth: int = MAX_JSON_DEPTH,
        max_rows: int = MAX_ROWS,
        body_timeout_s: float = BODY_TIMEOUT_S,
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_depth = max_depth
        self.max_rows = max_rows
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").rstrip("/") != "/invocations":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._checked_body(scope, receive)
        except _Refusal as r:
            await _answer(send, r.status, str(r))
            return
        if body is None:  # the client left
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _checked_body(self, scope: Scope, receive: Receive) -> bytes | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope.get("method") != "POST":
            raise _Refusal(405, "/invocations takes POST with a JSON body")
        ctype = headers.get("content-type", "").strip()
        if ctype.split(";", 1)[0].strip().lower() != "application/json":
            got = f"Content-Type {echo(ctype)}" if ctype else "no Content-Type"
            raise _Refusal(
                415,
                f"{got}: this server reads JSON; send 'Content-Type: application/json' and e.g. "
                '{"dataframe_records": [{"budget": 2.0}]}',
            )
        raw_len = headers.get("content-length")
        if raw_len is not None:
            if not re.fullmatch(r"\s*[0-9]+\s*", raw_len):
                raise _Refusal(400, f"Content-Length {echo(raw_len)} is not a number")
            if int(raw_len) > self.max_body_bytes:
                raise _Refusal(413, self._too_large(int(raw_len)))
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        return None
                    chunk = msg.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise _Refusal(413, self._too_large(size, at_least=True))
                    chunks.append(chunk)
                    if not msg.get("more_body", False):
                        break
        except TimeoutError:
            raise _Refusal(
                408,
                f"the body did not arrive within {self.body_timeout_s:g} s ({size:,} bytes "
                "came); send the whole request at once",
            ) from None
        body = b"".join(chunks)
        self._check_json(body)
        return body

    def _too_large(self, n: int, *, at_least: bool = False) -> str:
        return (
            f"the body has {'over ' if at_least else ''}{n:,} bytes, more than the limit of "
            f"{self.max_body_bytes:,}; send at most {self.max_rows:,} rows per request"
        )

    def _check_json(self, body: bytes) -> None:
        try:
            data = json.loads(body)
        except RecursionError:
            raise _Refusal(
                400, f"the JSON is nested too deeply (the limit is {self.max_depth} levels)"
            ) from None
        except UnicodeDecodeError:
            raise _Refusal(400, "the body is not UTF-8 text; send JSON") from None
        except json.JSONDecodeError as e:
            raise _Refusal(
                400,
                f"the body is not valid JSON ({e.msg} at character {e.pos}); send e.g. "
                '{"dataframe_records": [{"budget": 2.0}]}',
            ) from None
        except ValueError as e:  # e.g. an integer of more than 4,300 digits
            raise _Refusal(400, f"the body is not usable JSON ({echo(str(e))})") from None
        depth = json_depth(data, self.max_depth)
        if depth > self.max_depth:
            raise _Refusal(
                400,
                f"the JSON is nested more than {self.max_depth} levels deep; a request is e.g. "
                '{"dataframe_records": [{"budget": 2.0}]}',
            )
        if not isinstance(data, dict):
            return  # MLflow's own 400 names the expected format
        n = _rows(data)
        if n > self.max_rows:
            raise _Refusal(
                400,
                f"the request has {n:,} rows, more than the limit of {self.max_rows:,} per "
                "request; split it into several requests",
            )
        where = _first_bool({k: v for k, v in data.items() if k != "params"}, "")
        if where is not None:
            raise _Refusal(
                400,
                f"{where} is a boolean; a budget is a number of accuracy-loss points (e.g. "
                "2.0) and task, model, device, study and machine are strings",
            )


class InFlightLimit:
    """ASGI middleware that answers 503 (with `Retry-After`) to an HTTP request while
    `max_in_flight` others are being read or answered. It counts requests, not connections:
    an idle connection holds no slot (uvicorn's `limit_concurrency` counts both)."""

    def __init__(self, app: ASGIApp, *, max_in_flight: int = MAX_IN_FLIGHT):
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            await _answer(
                send,
                503,
                f"the server is answering {self.in_flight} requests, its limit; retry in a second",
            )
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def _rows(data: dict[str, Any]) -> int:
    """The number of rows an MLflow payload holds (0 when its shape is not one of MLflow's)."""
    n = 0
    for key in ("dataframe_records", "instances", "inputs"):
        v = data.get(key)
        if isinstance(v, list):
            n = max(n, len(v))
        elif isinstance(v, dict):  # columns of values
            n = max(n, *(len(c) for c in v.values() if isinstance(c, list)), 0)
    split = data.get("dataframe_split")
    if isinstance(split, dict) and isinstance(split.get("data"), list):
        n = max(n, len(split["data"]))
    return n


def _first_bool(v: Any, path: str) -> str | None:
    """The JSON path of the first boolean in `v` (depth already bounded), else None."""
    if isinstance(v, bool):
        return path or "the value"
    if isinstance(v, dict):
        for k, c in v.items():
            name = k if len(k) <= 30 else k[:30] + "..."
            got = _first_bool(c, f"{path}.{name}" if path else name)
            if got:
                return got
    elif isinstance(v, list):
        for i, c in enumerate(v):
            got = _first_bool(c, f"{path}[{i}]")
            if got:
                return got
    return None


async def _answer(send: Send, status: int, message: str) -> None:
    # MLflow's error codes, as its scoring server answers
    code = {
        400: "INVALID_PARAMETER_VALUE",
        413: "REQUEST_LIMIT_EXCEEDED",
        503: "TEMPORARILY_UNAVAILABLE",
    }.get(status, "BAD_REQUEST")
    body = json.dumps({"error_code": code, "message": cap_message(message)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # the unread rest of a refused body makes the connection unusable
                (b"connection", b"close"),
                *([(b"allow", b"POST")] if status == 405 else []),
                *([(b"retry-after", b"1")] if status == 503 else []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ---- `autoprumux serve` ------------------------------------------------------------------


def _listen_socket(host: str, port: int) -> socket.socket:
    """Bind `host:port` now (a busy port fails before the model is fetched); uvicorn listens on
    it once the model is loaded."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ConfigError(f"--host {echo(host)} cannot be resolved ({e.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port"
        ) from None
    return sock


class _Stop(BaseException):
    """SIGTERM: stop serving, clean up and exit 0."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Stop


def fetch_model(model_uri: str, tracking_uri: str, dst: str | Path) -> Path:
    """Download the model at `model_uri` into `dst` (ConfigError when it cannot)."""
    import mlflow

    if model_uri.startswith("models:/") and not model_uri.startswith("models:/m-"):
        name = re.split(r"[/@]", model_uri[len("models:/") :], maxsplit=1)[0]
        versions = []
        if not tracking.missing_sqlite_file(tracking_uri):
            try:
                versions = tracking.client(tracking_uri).search_model_versions(f"name='{name}'")
            except Exception:  # noqa: BLE001 - no registry yet
                versions = []
        if not versions:
            raise ConfigError(
                f"no registered model {echo(name)} in {tracking_uri}; run `autoprumux search` "
                "first (it registers the recommender at the end)"
            )
    try:
        with mlflow_uris(tracking_uri):
            local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst))
    except Exception as e:  # noqa: BLE001 - MlflowException, OSError, ...: say what and where
        msg = (str(getattr(e, "message", e)).splitlines() or [type(e).__name__])[0]
        raise ConfigError(
            f"cannot fetch {echo(model_uri)} from {tracking_uri}: {cap_message(msg)}"
        ) from None
    return Path(local)


def serve(model_uri: str, *, tracking_uri: str, host: str, port: int) -> int:
    """Serve the recommender at `model_uri` on http://host:port (/invocations, /ping, /health,
    /version) in this process until Ctrl-C or SIGTERM; the arguments are already checked."""
    import signal
    import threading

    from mlflow.pyfunc import load_model, scoring_server

    from autoprumux.serving._connections import limited_server

    # nothing in a served model may be unpickled, whatever the environment says
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # SIGTERM while the model loads stops as cleanly as while it serves (uvicorn handles it
    # then, and re-raises it here once it has shut down)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main else None
    sock = _listen_socket(host, port)
    try:
        with tempfile.TemporaryDirectory(prefix="autoprumux-serve-") as d:
            local = fetch_model(model_uri, tracking_uri, d)
            if local.resolve().is_relative_to(Path(d).resolve()):  # never edit the user's copy
                upgrade_code_file(local)  # registered before the code file moved: today's code
            verify_model_dir(local, model_uri)
            try:
                model = load_model(str(local))
            except Exception as e:  # noqa: BLE001 - a bad JSON or tree file: name it
                first = (str(e).splitlines() or [type(e).__name__])[0]
                raise ConfigError(f"cannot load {echo(model_uri)}: {cap_message(first)}") from None
            app = InFlightLimit(RequestGuard(scoring_server.init(model)))
            server = limited_server(app, log_level="warning", timeout_graceful_shutdown=5)
            bound = sock.getsockname()[1]
            print(
                f"serving {model_uri} on http://{host}:{bound}/invocations "
                "(Ctrl-C or SIGTERM stops it)",
                flush=True,
            )
            server.run(sockets=[sock])
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    except _Stop:
        print("stopping (SIGTERM)", file=sys.stderr)
    finally:
        sock.close()
        if main:
            signal.signal(signal.SIGTERM, previous)
    return 0
