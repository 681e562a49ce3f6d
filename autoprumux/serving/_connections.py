"""The TCP side of `autoprumux serve`: connections that idle or slow clients cannot exhaust.

uvicorn's `limit_concurrency` counts open connections and requests together, and uvicorn closes
only a connection that idles after a response (`timeout_keep_alive`), never one that opens and
sends nothing: so as many idle sockets as the limit lock every client out. Here connections and
requests are limited apart (requests in flight by `_server.InFlightLimit`), with
`LimitedH11Protocol`:

- a header deadline: a connection that has not sent a whole request head `header_timeout_s`
  after it opened, or after its last response, is closed, however slowly it trickles bytes in;
- a connection cap: at `max_connections` open connections a new one closes the one idle longest
  (no request being read or answered), itself when every other one is busy, so idle sockets
  never keep a client out and the process never holds more than the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

# well below the usual 1,024 open files per process, and four times the requests in flight
MAX_CONNECTIONS = 256
# a request head is a few hundred bytes: a client that has not sent one in 10 s is not sending
HEADER_TIMEOUT_S = 10.0
# after a response, a kept-alive connection idle this long is closed (uvicorn's own timer)
KEEP_ALIVE_S = 5


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the header deadline and the connection cap (class settings,
    so a subclass sets others)."""

    max_connections: int = MAX_CONNECTIONS
    header_timeout_s: float = HEADER_TIMEOUT_S

    _deadline: asyncio.TimerHandle | None = None
    _idle_since: float = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request head has the same deadline as the first

    def busy(self) -> bool:
        """A request is being read or answered on this connection."""
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._idle_since = time.monotonic()
        self._deadline = self.loop.call_later(self.header_timeout_s, self._on_deadline)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_deadline(self) -> None:
        self._deadline = None
        if not self.busy():  # a request in progress is re-armed when its response is sent
            self.close_idle()

    def close_idle(self) -> None:
        if self.transport.is_closing():
            return
        # h11 may already hold the connection as failed: closing the socket is enough then
        with contextlib.suppress(h11.LocalProtocolError):
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()

    def _make_room(self) -> None:
        idle = [
            c
            for c in self.connections
            if isinstance(c, LimitedH11Protocol) and not c.transport.is_closing() and not c.busy()
        ]
        open_ = sum(1 for c in self.connections if not c.transport.is_closing())
        if open_ > self.max_connections and idle:  # idle holds this one: it has sent nothing
            min(idle, key=lambda c: c._idle_since).close_idle()


def limited_server(
    app: Any,
    *,
    max_connections: int = MAX_CONNECTIONS,
    header_timeout_s: float = HEADER_TIMEOUT_S,
    **config: Any,
) -> uvicorn.Server:
    """A uvicorn server for `app` on h11 with the header deadline and the connection cap, and no
    `limit_concurrency` (the app limits requests in flight); `config` goes to `uvicorn.Config`."""
    protocol = type(
        "LimitedH11Protocol",
        (LimitedH11Protocol,),
        {"max_connections": max_connections, "header_timeout_s": header_timeout_s},
    )
    return uvicorn.Server(
        uvicorn.Config(
            app,
            http=protocol,
            ws="none",  # the scoring app has no websocket route: refuse upgrades outright
            timeout_keep_alive=KEEP_ALIVE_S,
            limit_concurrency=None,
            **config,
        )
    )
