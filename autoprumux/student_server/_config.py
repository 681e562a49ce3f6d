"""Serving settings, validated before anything is loaded or trained."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from autoprumux.errors import ConfigError


@dataclass(frozen=True)
class ServingConfig:
    """Where the endpoint listens, how it batches and what a request may hold.

    max_batch: texts per ensemble call; max_wait_ms: how long the oldest queued text waits for
    the batch to fill; max_seq_len: tokens per text after truncation (the training recipe's);
    max_chars / max_texts: limits of one request (longer or more are refused with 400);
    max_queue: texts waiting before new requests get 503; request_timeout_s: how long a request
    waits for its answer before 503. max_connections: open connections (at the cap a new one
    cuts the one idle longest; kept below the open-file limit); header_timeout_s: how long a
    connection may take to send a whole request head, from its opening or its last response;
    body_timeout_s: how long a request may take to send its body (see `_connections`)."""

    host: str = "127.0.0.1"
    port: int = 8008
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_seq_len: int = 64
    max_chars: int = 10_000
    max_texts: int = 64
    max_queue: int = 4096
    request_timeout_s: float = 30.0
    max_connections: int = 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(
                f"host ({self.host!r}) must be a host name or address, e.g. 127.0.0.1"
            )
        _int("port", self.port, 0, 65535, "--port 8008 (0 picks a free port)")
        _int("max batch", self.max_batch, 1, 4096, "--max-batch 32")
        _int("max_seq_len", self.max_seq_len, 8, 8192, "--max-seq-len 64")
        _int("max chars per text", self.max_chars, 1, 10_000_000, "--max-chars 10000")
        _int("max texts per request", self.max_texts, 1, 100_000, "--max-texts 64")
        _int("max queue", self.max_queue, self.max_batch, 10_000_000, f">= {self.max_batch}")
        _number("max wait", self.max_wait_ms, 0.0, "a number of milliseconds >= 0", "5")
        _number("request timeout", self.request_timeout_s, 1e-3, "at least 0.001 seconds", "30")
        _int("max connections", self.max_connections, 1, 1_000_000, "1024")
        _number("header timeout", self.header_timeout_s, 1e-3, "at least 0.001 seconds", "10")
        _number("body timeout", self.body_timeout_s, 1e-3, "at least 0.001 seconds", "30")

    @property
    def max_body_bytes(self) -> int:
        """Largest request body read: every text at its character limit, JSON-escaped as
        \\uXXXX surrogate pairs (12 bytes per character), a pair per item, plus framing."""
        return self.max_texts * (2 * 12 * self.max_chars + 64) + 4096


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback name or address (localhost, 127.0.0.0/8, ::1), surrounding
    blanks and an IPv6 address's brackets aside."""
    h = str(host).strip().strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _int(name: str, v: object, low: int, high: int, example: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise ConfigError(f"{name} ({v!r}) must be an integer in [{low}, {high}], e.g. {example}")


def _number(name: str, v: object, low: float, rule: str, example: str) -> None:
    if (
        isinstance(v, bool)
        or not isinstance(v, int | float)
        or not math.isfinite(v)
        or not v >= low
    ):
        raise ConfigError(f"{name} ({v!r}) must be {rule}, e.g. {example}")
