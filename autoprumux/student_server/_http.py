"""A loopback HTTP endpoint in front of the dynamic batcher (stdlib `ThreadingHTTPServer`).

    POST /predict  {"texts": ["...", ...]} or {"text": "..."}
                   -> {"labels": [...], "label_ids": [...], "probabilities": [[...], ...],
                       "configuration": "k=2", "configurations": ["k=2", ...],
                       "active_students": 2}
    GET  /health   -> {"status": "ok", ...}
    GET  /stats    -> queue length, active k, counts, recent k changes, the policy

`labels` are the class names (`label_names`, the task's: as `autoprumux predict` answers; the
class indices when the server is given no names), `label_ids` the class indices, and the
probabilities are in class-index order.

Pair tasks take each text as ["first sentence", "second sentence"]. Every refusal is a JSON
`{"error": "..."}` that names the value and the fix: 400 for a bad body (JSON nested deeper
than `MAX_JSON_DEPTH` included), 404 for an unknown path, 405 for a wrong method, 411 / 413 for
a missing or too large body, 503 when overloaded, 500 only when inference itself fails. Echoed
values are cut to `ECHO_CHARS` characters. No request can stop the server or its worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import torch
from torch import nn

from autoprumux._json import json_depth
from autoprumux.errors import ConfigError
from autoprumux.models import StudentEnsemble
from autoprumux.student_server._batcher import DynamicBatcher, ServingError, Text
from autoprumux.student_server._config import ServingConfig
from autoprumux.student_server._connections import HeadDeadline, LimitedConnections
from autoprumux.student_server._policy import ServingPolicy, point_name

log = logging.getLogger("autoprumux.student_server")

ROUTES: dict[str, tuple[str, ...]] = {
    "/predict": ("POST",),
    "/health": ("GET",),
    "/stats": ("GET",),
}
EXAMPLE = '{"texts": ["a gripping, funny film", "dull"]}'
# the deepest valid body is {"texts": [["first", "second"]]} (3); Python's json gives up with a
# RecursionError near 1,000 levels, and json.dumps of an echoed value recurses too
MAX_JSON_DEPTH = 8
# values echoed in error messages (a path, a header) are cut to this many characters
ECHO_CHARS = 80


def parse_predict_request(
    body: bytes, *, max_texts: int, max_chars: int, pair: bool = False
) -> list[Text]:
    """The texts of a /predict body, or a `ServingError` (400) saying what is wrong and how to
    fix it. Nothing is trimmed or dropped here; the model reads a text as `data.encode` cuts it."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ServingError(f"the body is not UTF-8 text; send JSON like {EXAMPLE}", 400) from None
    except RecursionError:
        raise ServingError(
            f"the JSON is nested too deeply (the limit is {MAX_JSON_DEPTH} levels); send e.g. "
            f"{EXAMPLE}",
            400,
        ) from None
    except json.JSONDecodeError as e:
        raise ServingError(
            f"the body is not valid JSON ({e.msg} at character {e.pos}); send e.g. {EXAMPLE}", 400
        ) from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise ServingError(
            f"the body is not usable JSON ({_cut(str(e))}); send e.g. {EXAMPLE}", 400
        ) from None
    if json_depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ServingError(
            f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep; send e.g. {EXAMPLE}", 400
        )
    if not isinstance(data, dict):
        raise ServingError(
            f"the body must be a JSON object, got a {_json_type(data)}; send e.g. {EXAMPLE}", 400
        )
    unknown = sorted(_cut(k, 30) for k in set(data) - {"texts", "text"})[:5]
    if unknown:
        raise ServingError(
            f'unknown field(s) {unknown}; the body takes "texts" (a list) or "text" (one); '
            f"e.g. {EXAMPLE}",
            400,
        )
    if ("texts" in data) == ("text" in data):
        raise ServingError(
            f'give either "texts" (a list) or "text" (one text), not {"both" if data else "neither"}; '
            f"e.g. {EXAMPLE}",
            400,
        )
    if "text" in data:
        items, where = [data["text"]], "text"
    else:
        items, where = data["texts"], "texts"
        if not isinstance(items, list):
            raise ServingError(
                f'"texts" must be a list, got a {_json_type(items)}; for one text send '
                '{"text": "..."} or {"texts": ["..."]}',
                400,
            )
        if not items:
            raise ServingError('"texts" is empty; send at least one text to classify', 400)
        if len(items) > max_texts:
            raise ServingError(
                f'"texts" holds {len(items)} texts, more than the limit of {max_texts} per '
                "request; split it into several requests",
                400,
            )
    out: list[Text] = []
    for i, item in enumerate(items):
        name = where if where == "text" else f"texts[{i}]"
        if pair:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not all(isinstance(s, str) for s in item)
            ):
                raise ServingError(
                    f'{name} must be a sentence pair ["first", "second"] (this task '
                    f"classifies pairs), got {_json_type(item)} {_short(item)}",
                    400,
                )
            _check_text(f"{name}[0]", item[0], max_chars)
            _check_text(f"{name}[1]", item[1], max_chars)
            out.append((item[0], item[1]))
        else:
            if not isinstance(item, str):
                raise ServingError(
                    f"{name} must be a string, got {_json_type(item)} {_short(item)}", 400
                )
            _check_text(name, item, max_chars)
            out.append(item)
    return out


def _check_text(name: str, text: str, max_chars: int) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ServingError(
            f"{name} is not valid Unicode ({e.reason} at character {e.start}); send UTF-8 text",
            400,
        ) from None
    if not text.strip():
        raise ServingError(f"{name} is empty or only whitespace; send the text to classify", 400)
    if len(text) > max_chars:
        raise ServingError(
            f"{name} has {len(text):,} characters, more than the limit of {max_chars:,}; "
            "shorten it (the model reads only its first tokens anyway) or raise --max-chars",
            400,
        )


def _check_label_names(
    names: Sequence[str] | None, models: Sequence[nn.Module | None]
) -> tuple[str, ...] | None:
    """The class names a server answers with: one string per class of every served model."""
    if names is None:
        return None
    out = tuple(names) if not isinstance(names, str) else ()
    classes = {
        int(getattr(m, "num_labels"))  # noqa: B009 (an nn.Module attribute, typed as Tensor|Module)
        for m in models
        if m is not None and hasattr(m, "num_labels")
    }
    if not out or not all(isinstance(n, str) for n in out) or classes - {len(out)}:
        raise ConfigError(
            f"label_names ({names!r}) must be one string per class of the served models "
            f"({', '.join(map(str, sorted(classes))) or '?'} classes), e.g. the task's "
            "TaskSpec.label_names"
        )
    return out


def _json_type(v: Any) -> str:
    return {
        dict: "object",
        list: "list",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }.get(type(v), type(v).__name__)


def _short(v: Any) -> str:
    if isinstance(v, str) and len(v) > 40:  # no need to encode a long text to cut it
        v = v[:40]
    s = json.dumps(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _cut(s: str, n: int = ECHO_CHARS) -> str:
    """`s` cut to `n` characters, for an error message that echoes it."""
    return s if len(s) <= n else s[:n] + "..."


class _Server(LimitedConnections, ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # listen backlog: bursts open many connections at once
    app: StudentServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("connection from %s ended: %r", client_address, exc)
        else:
            log.exception("error while handling a connection from %s", client_address)


class _ServerV6(_Server):
    address_family = socket.AF_INET6


class _Handler(HeadDeadline, BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: a load generator reuses its connections
    # headers and body go out in two writes: without TCP_NODELAY the second waits for the
    # client's delayed ACK (40 ms on Linux)
    disable_nagle_algorithm = True
    timeout = 60  # a read stalled this long ends the connection (_connections cuts sooner)
    error_message_format = ""  # send_error is overridden below to answer JSON

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        allow = ROUTES.get(path)
        headers = {}
        try:
            status, payload = self._respond(path, allow)
        except ServingError as e:
            status, payload = e.status, {"error": str(e)}
            if e.status == 405 and allow:
                headers["Allow"] = ", ".join(allow)
        except Exception as e:  # noqa: BLE001 - answer 500, never drop the connection thread
            log.exception("internal error on %s %s", self.command, path)
            status, payload = 500, {"error": f"internal error: {type(e).__name__}: {e}"}
        # a client that left raises here; the server's handle_error logs it at debug level
        self._send(status, payload, headers=headers)

    def _respond(self, path: str, allow: tuple[str, ...] | None) -> tuple[int, dict]:
        app = self.server.app
        body = self._read_body()
        if allow is None:
            raise ServingError(
                f"no endpoint {_cut(path)!r}; use POST /predict, GET /health or GET /stats", 404
            )
        if self.command not in allow:
            raise ServingError(
                f"{path} takes {' or '.join(allow)}, not {self.command}"
                + (f"; send e.g. {EXAMPLE}" if path == "/predict" else ""),
                405,
            )
        if path == "/health":
            health = app.health()
            return (200 if health["status"] == "ok" else 503), health
        if path == "/stats":
            return 200, app.stats()
        if body is None:
            raise ServingError(
                f"POST /predict needs a JSON body with a Content-Length; e.g. {EXAMPLE}", 411
            )
        return 200, app.predict_body(body)

    def _read_body(self) -> bytes | None:
        """The request body (None when no Content-Length was sent). Refuses chunked or too
        large bodies, closing the connection since their bytes are left unread."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ServingError(
                "chunked bodies are not supported; send a Content-Length header", 411
            )
        raw = self.headers.get("Content-Length")
        if raw is None:
            return None
        try:
            n = int(raw)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise ServingError(
                f"Content-Length {_cut(raw)!r} is not a non-negative integer", 400
            ) from None
        limit = self.server.app.config.max_body_bytes
        if n > limit:
            self.close_connection = True
            raise ServingError(
                f"the body has {n:,} bytes, more than the limit of {limit:,}; send fewer or "
                "shorter texts per request",
                413,
            )
        return self.rfile.read(n)

    def _send(
        self,
        status: int,
        payload: dict,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.server.app.count(status)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        head = getattr(self, "command", None) == "HEAD"
        if self.close_connection or head:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level refusals of the base class (malformed request line, unknown method),
        answered as JSON. An unknown method is a 405, not the base class's 501."""
        if code == HTTPStatus.NOT_IMPLEMENTED:
            method = getattr(self, "command", None)
            code, message = 405, f"method {_cut(str(method))!r} is not allowed; use GET or POST"
        self.close_connection = True
        msg = message or explain or HTTPStatus(code).phrase
        with contextlib.suppress(OSError):  # the client may be gone
            self._send(code, {"error": msg})

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


class StudentServer:
    """The endpoint: a `DynamicBatcher` (students and named models, `policy` choosing among
    them) behind a `ThreadingHTTPServer` on `config.host`.

    Use as a context manager or `start()` / `close()`; `wait()` blocks until closed (Ctrl-C in
    the caller raises KeyboardInterrupt as usual)."""

    def __init__(
        self,
        ensemble: StudentEnsemble | None,
        tokenizer,
        policy: ServingPolicy,
        *,
        models: Mapping[str, nn.Module] | None = None,
        config: ServingConfig | None = None,
        pair: bool = False,
        device: str | torch.device = "cpu",
        info: dict | None = None,
        label_names: Sequence[str] | None = None,
    ):
        self.config = config or ServingConfig()
        self.pair = pair
        self.label_names = _check_label_names(label_names, [ensemble, *(models or {}).values()])
        self.batcher = DynamicBatcher(
            ensemble,
            tokenizer,
            policy,
            models=models,
            config=self.config,
            pair=pair,
            device=device,
        )
        self.info = dict(info or {})
        self._lock = threading.Lock()
        self._counts = {"requests": 0, "ok": 0, "client_errors": 0, "server_errors": 0}
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> StudentServer:
        host, port = self.config.host, self.config.port
        cls = _ServerV6 if ":" in host else _Server
        try:
            httpd = cls((host, port), _Handler)
        except OSError as e:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port "
                "(0 picks a free one) or --host"
            ) from None
        httpd.app = self
        self._httpd = httpd
        self.batcher.start()
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="student-http"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not started; call start() first")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.config.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def wait(self) -> None:
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        self.batcher.stop()
        if self._thread is not None:
            self._thread.join(5.0)

    def __enter__(self) -> StudentServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- what the handler calls ----------------------------------------------------------------
    def predict_body(self, body: bytes) -> dict:
        texts = parse_predict_request(
            body, max_texts=self.config.max_texts, max_chars=self.config.max_chars, pair=self.pair
        )
        pred = self.batcher.predict(texts, timeout=self.config.request_timeout_s)
        names = self.label_names
        return {
            "labels": [names[i] for i in pred.labels] if names else pred.labels,
            "label_ids": pred.labels,
            "probabilities": pred.probabilities,
            "configuration": pred.configuration,
            "configurations": pred.configurations,
            "active_students": pred.active_students,
        }

    def health(self) -> dict:
        ens = self.batcher.ensemble
        current = self.batcher.policy.current
        return {
            "status": "ok" if self.batcher.alive else "worker stopped",
            "students": ens.k if ens is not None else 0,
            "depth": ens.depth if ens is not None else None,
            "configurations": sorted(self.batcher.models),
            "serving": point_name(current),
            "active_students": current if isinstance(current, int) else None,
            "mode": self.batcher.policy.mode,
            **self.info,
        }

    def stats(self) -> dict:
        with self._lock:
            http = dict(self._counts)
        return {**self.batcher.stats(), "http": http, **self.info}

    def count(self, status: int) -> None:
        kind = "ok" if status < 400 else "client_errors" if status < 500 else "server_errors"
        with self._lock:
            self._counts["requests"] += 1
            self._counts[kind] += 1
