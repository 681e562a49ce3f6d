"""A bounded, loopback-only load generator: replays phases of steady and burst load.

Arrivals are open-loop: request i is due at a fixed time of the schedule whether or not earlier
ones were answered (a thread pool sends it), and its latency is measured from that due time, so
a slow server cannot slow the load down and hide its own queueing. Every request carries
`texts_per_request` texts with known labels. The run ends by itself: the schedule is checked
against hard caps on requests and duration before anything is sent, and a request not answered
within `request_timeout_s` of its due time counts as a timeout. Only loopback hosts are accepted.

A benchmark tool, not part of the package: `burst_replay.py` imports it as `_loadgen` (the
scripts run from this folder), the tests load it by path.
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from autoprumux.errors import ConfigError
from autoprumux.student_server import Text, is_loopback


def check_loopback(host: str) -> str:
    """`host` (without surrounding blanks or brackets) if it is a loopback name or address
    (localhost, 127.0.0.0/8, ::1); else ConfigError."""
    if not is_loopback(host):
        raise ConfigError(
            f"load generator host {host!r} is not loopback; it only sends to 127.0.0.1, ::1 or "
            "localhost (start the server there)"
        )
    return str(host).strip().strip("[]")


@dataclass(frozen=True)
class Phase:
    """`requests_per_second` evenly spaced arrivals for `duration_s` seconds."""

    name: str
    requests_per_second: float
    duration_s: float

    def __post_init__(self) -> None:
        for what, v in (("rate", self.requests_per_second), ("duration", self.duration_s)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"phase {self.name!r}: {what} ({v!r}) must be a number")
        if self.requests_per_second < 0 or self.duration_s <= 0:
            raise ConfigError(
                f"phase {self.name!r}: rate ({self.requests_per_second}) must be >= 0 and "
                f"duration ({self.duration_s}) > 0 seconds"
            )

    @property
    def requests(self) -> int:
        return round(self.requests_per_second * self.duration_s)


@dataclass(frozen=True)
class LoadSchedule:
    """Phases played one after another, and the limits that make the run end by itself."""

    phases: tuple[Phase, ...]
    texts_per_request: int = 1
    request_timeout_s: float = 10.0
    concurrency: int = 128
    max_requests: int = 50_000
    max_duration_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.phases:
            raise ConfigError("a load schedule needs at least one phase")
        for name, v in (
            ("texts per request", self.texts_per_request),
            ("concurrency", self.concurrency),
            ("max requests", self.max_requests),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} ({v!r}) must be a positive integer")
        if not self.request_timeout_s > 0:
            raise ConfigError(f"request timeout ({self.request_timeout_s!r}) must be > 0 seconds")
        if self.total_requests > self.max_requests:
            raise ConfigError(
                f"the schedule sends {self.total_requests} requests, more than the cap of "
                f"{self.max_requests}; lower the rates or durations, or raise max_requests"
            )
        longest = self.duration_s + self.request_timeout_s
        if longest > self.max_duration_s:
            raise ConfigError(
                f"the schedule ({self.duration_s:g} s) plus the request timeout "
                f"({self.request_timeout_s:g} s) may run {longest:g} s, more than the cap of "
                f"{self.max_duration_s:g} s; shorten it or raise max_duration_s"
            )

    @property
    def duration_s(self) -> float:
        return float(sum(p.duration_s for p in self.phases))

    @property
    def total_requests(self) -> int:
        return sum(p.requests for p in self.phases)

    def arrivals(self) -> list[tuple[float, int]]:
        """(due time in seconds from the start, phase index) of every request, in time order."""
        out = []
        t0 = 0.0
        for j, p in enumerate(self.phases):
            out += [(t0 + i / p.requests_per_second, j) for i in range(p.requests)]
            t0 += p.duration_s
        return out


def burst_schedule(
    *,
    steady_rps: float,
    burst_rps: float,
    steady_s: float,
    burst_s: float,
    after_s: float | None = None,
    **kw,
) -> LoadSchedule:
    """steady -> burst -> steady (`after_s`, default `steady_s`); `kw` go to LoadSchedule."""
    return LoadSchedule(
        phases=(
            Phase("steady", steady_rps, steady_s),
            Phase("burst", burst_rps, burst_s),
            Phase("after", steady_rps, steady_s if after_s is None else after_s),
        ),
        **kw,
    )


@dataclass(frozen=True)
class PhaseReport:
    """Requests due in one phase: latency of the answered ones, examples answered per second
    while the phase lasted (the last phase until the last answer), accuracy in percent."""

    name: str
    requests: int
    answered: int
    errors: int
    p50_ms: float
    p99_ms: float
    examples_per_second: float
    accuracy: float


@dataclass(frozen=True)
class LoadReport:
    """The whole run. Latency percentiles are over answered requests; failures are in `errors`
    by kind (timeout, connection, http_<status>, bad_response, not_sent). Throughput is answered
    examples over the time to the last answer; `duration_s` is the run's wall time, waits for
    timeouts included. `serving_timeline` lists (seconds from the start, what served) each time
    the answers' configuration changed ("k=2" for two students, or a model's name)."""

    requests: int
    answered: int
    examples: int
    p50_ms: float
    p99_ms: float
    examples_per_second: float
    accuracy: float
    duration_s: float
    errors: dict[str, int] = field(default_factory=dict)
    serving_timeline: list[tuple[float, str]] = field(default_factory=list)
    phases: tuple[PhaseReport, ...] = ()

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["error_count"] = self.error_count
        return d


@dataclass
class _Result:
    phase: int
    due: float  # seconds from the start
    kind: str = "not_sent"
    done: float = math.nan
    examples: int = 0
    correct: int = 0
    served_by: str = ""


class _Connections:
    """One keep-alive connection per sending thread; all closed at the end."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def get(self) -> tuple[http.client.HTTPConnection, bool]:
        """(connection, whether it is fresh)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, False
        conn = http.client.HTTPConnection(self.host, self.port)
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn, True

    def drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def close_all(self) -> None:
        with self._lock:
            for c in self._all:
                c.close()


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not sorted_values:
        return math.nan
    i = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[i]


def run_load(
    host: str,
    port: int,
    examples: Sequence[tuple[Text, int]],
    schedule: LoadSchedule,
    *,
    path: str = "/predict",
) -> LoadReport:
    """Replay `schedule` against http://host:port/path with (text, label) `examples` (cycled)."""
    host = check_loopback(host)
    if not examples:
        raise ConfigError("the load generator needs at least one (text, label) example")
    arrivals = schedule.arrivals()
    tpr = schedule.texts_per_request
    results = [_Result(phase=j, due=t) for t, j in arrivals]
    conns = _Connections(host, port)
    timeout = schedule.request_timeout_s
    start = time.perf_counter() + 0.05

    def send(i: int) -> None:
        r = results[i]
        chosen = [examples[(i * tpr + j) % len(examples)] for j in range(tpr)]
        body = json.dumps(
            {"texts": [list(t) if isinstance(t, tuple) else t for t, _ in chosen]}
        ).encode()
        got = _post(conns, path, body, deadline=start + r.due + timeout)
        if isinstance(got, str):
            r.kind = got
            return
        status, data = got
        r.done = time.perf_counter() - start
        if status != 200:
            r.kind = f"http_{status}"
            return
        try:
            answer = json.loads(data)
            # the class indices: `labels` holds the class names when the server has them
            labels = answer.get("label_ids", answer["labels"])
            served_by = answer["configuration"]
        except (ValueError, KeyError, TypeError):
            r.kind = "bad_response"
            return
        if not isinstance(labels, list) or len(labels) != tpr or not isinstance(served_by, str):
            r.kind = "bad_response"
            return
        r.kind, r.examples, r.served_by = "ok", tpr, served_by
        r.correct = sum(int(a == y) for a, (_, y) in zip(labels, chosen, strict=True))

    with ThreadPoolExecutor(max_workers=schedule.concurrency, thread_name_prefix="load") as pool:
        for i, (due, _) in enumerate(arrivals):
            wait = start + due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            if time.perf_counter() - start > schedule.max_duration_s:
                break  # hard cap: the rest stay "not_sent"
            pool.submit(send, i)
    conns.close_all()
    return _report(results, schedule, wall_s=time.perf_counter() - start)


def _post(
    conns: _Connections, path: str, body: bytes, *, deadline: float
) -> tuple[int, bytes] | str:
    """(status, body) of one POST, or the failure kind ("timeout", "connection")."""
    for attempt in range(2):  # a reused connection the server closed gets one fresh retry
        left = deadline - time.perf_counter()
        if left <= 0:
            return "timeout"
        conn, fresh = conns.get()
        conn.timeout = left
        if conn.sock is not None:
            conn.sock.settimeout(left)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        except TimeoutError:
            conns.drop()
            return "timeout"
        except (OSError, http.client.HTTPException):
            conns.drop()
            if fresh or attempt == 1:
                return "connection"
    return "connection"


def _report(results: list[_Result], schedule: LoadSchedule, *, wall_s: float) -> LoadReport:
    ok = [r for r in results if r.kind == "ok"]
    end = max((r.done for r in ok), default=0.0)
    errors = Counter(r.kind for r in results if r.kind != "ok")
    examples = sum(r.examples for r in ok)
    timeline: list[tuple[float, str]] = []
    for r in sorted(ok, key=lambda r: r.done):
        if not timeline or timeline[-1][1] != r.served_by:
            timeline.append((round(r.done, 3), r.served_by))
    phases = []
    t0 = 0.0
    for j, p in enumerate(schedule.phases):
        t1 = t0 + p.duration_s
        last = j == len(schedule.phases) - 1
        window_end = max(t1, end) if last else t1
        mine = [r for r in results if r.phase == j]
        mine_ok = [r for r in mine if r.kind == "ok"]
        lat = sorted(1000 * (r.done - r.due) for r in mine_ok)
        in_window = sum(r.examples for r in ok if t0 <= r.done and (last or r.done < t1))
        phases.append(
            PhaseReport(
                name=p.name,
                requests=len(mine),
                answered=len(mine_ok),
                errors=len(mine) - len(mine_ok),
                p50_ms=_percentile(lat, 50),
                p99_ms=_percentile(lat, 99),
                examples_per_second=in_window / (window_end - t0),
                accuracy=_accuracy(mine_ok),
            )
        )
        t0 = t1
    lat = sorted(1000 * (r.done - r.due) for r in ok)
    return LoadReport(
        requests=len(results),
        answered=len(ok),
        examples=examples,
        p50_ms=_percentile(lat, 50),
        p99_ms=_percentile(lat, 99),
        examples_per_second=examples / end if end > 0 else 0.0,
        accuracy=_accuracy(ok),
        duration_s=wall_s,
        errors=dict(errors),
        serving_timeline=timeline,
        phases=tuple(phases),
    )


def _accuracy(ok: Sequence[_Result]) -> float:
    n = sum(r.examples for r in ok)
    return 100.0 * sum(r.correct for r in ok) / n if n else math.nan
