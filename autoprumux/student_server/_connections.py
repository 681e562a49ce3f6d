"""Connections that idle or slow clients cannot exhaust, for the students' threaded server.

`ThreadingHTTPServer` gives every connection a thread and times out only a read that waits
longer than the handler's `timeout`: a client that trickles a byte now and then holds its thread
for ever, and enough idle sockets run the process out of file descriptors, after which `accept`
fails and nobody gets in. `LimitedConnections` (a server mixin) and `HeadDeadline` (a handler
mixin) add, with the settings of `ServingConfig`:

- a header deadline: a connection that has not sent a whole request head `header_timeout_s`
  after it opened, or after its last response, is cut, however slowly it trickles bytes in;
- a request deadline: a request whose body and answer take longer than `body_timeout_s` plus
  the request timeout is cut (a trickled body would otherwise hold its thread);
- a connection cap, kept below the process's open-file limit: at the cap a new connection cuts
  the one idle longest (no request being read or answered), itself when all others are busy.

The batcher's queue limits the requests in flight (503), apart from connections. A connection is
cut with `shutdown`, which wakes its thread's blocked read; the thread closes it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

# file descriptors kept free of connections: the model, the listener, logs, a client library
FD_RESERVE = 64


@dataclass
class _Conn:
    since: float  # when it opened, its last response went out, or its request head came in
    busy: bool = False  # a request is being read or answered
    cut: bool = False


class LimitedConnections:
    """Server mixin (before `ThreadingHTTPServer`); the limits come from `self.app.config`."""

    app: Any

    def _limits(self) -> tuple[dict[socket.socket, _Conn], threading.Lock]:
        if not hasattr(self, "_conns"):
            self._conns: dict[socket.socket, _Conn] = {}
            self._conns_lock = threading.Lock()
        return self._conns, self._conns_lock

    def connection_cap(self) -> int:
        """The configured cap, below the open-file limit (accept fails past that)."""
        cap = int(self.app.config.max_connections)
        with contextlib.suppress(ImportError, ValueError, OSError):
            import resource

            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if soft != resource.RLIM_INFINITY:
                cap = min(cap, max(1, soft - FD_RESERVE))
        return cap

    def process_request(self, request: Any, client_address: Any) -> None:
        conns, lock = self._limits()
        with lock:
            conns[request] = _Conn(time.monotonic())
            victim = self._make_room(request, conns)
        if victim is request:
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)  # type: ignore[misc]

    def _make_room(self, new: socket.socket, conns: dict[socket.socket, _Conn]) -> Any:
        """The connection cut to stay within the cap (under the lock), or None."""
        live = [(s, c) for s, c in conns.items() if not c.cut]
        if len(live) <= self.connection_cap():
            return None
        idle = [(s, c) for s, c in live if not c.busy and s is not new]
        victim = min(idle, key=lambda sc: sc[1].since)[0] if idle else new
        if victim is not new:
            _cut(victim, conns[victim])
        return victim

    def shutdown_request(self, request: Any) -> None:
        conns, lock = self._limits()
        with lock:
            conns.pop(request, None)
        super().shutdown_request(request)  # type: ignore[misc]

    def service_actions(self) -> None:
        """Called by `serve_forever` every poll interval: cut connections past a deadline."""
        super().service_actions()  # type: ignore[misc]
        cfg = self.app.config
        head = float(cfg.header_timeout_s)
        request = float(cfg.body_timeout_s) + float(cfg.request_timeout_s)
        conns, lock = self._limits()
        now = time.monotonic()
        with lock:
            for s, c in conns.items():
                if not c.cut and now - c.since > (request if c.busy else head):
                    _cut(s, c)

    def mark(self, request: Any, *, busy: bool) -> None:
        """The handler's request head came in (busy) or its response went out (idle)."""
        conns, lock = self._limits()
        with lock:
            c = conns.get(request)
            if c is not None:
                c.busy, c.since = busy, time.monotonic()


def _cut(s: socket.socket, c: _Conn) -> None:
    c.cut = True
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)


class HeadDeadline:
    """Handler mixin (before `BaseHTTPRequestHandler`) that tells a `LimitedConnections`
    server when a request head has come in and when its response has gone out."""

    server: Any
    request: Any

    def parse_request(self) -> bool:
        ok = bool(super().parse_request())  # type: ignore[misc]
        if ok:
            self.server.mark(self.request, busy=True)
        return ok

    def handle_one_request(self) -> None:
        super().handle_one_request()  # type: ignore[misc]
        self.server.mark(self.request, busy=False)
