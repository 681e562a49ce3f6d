"""Dynamic batching: many callers, one worker thread, one model call per batch.

Each request's texts enter a queue as separate slots. The worker takes up to `max_batch` slots,
waiting at most `max_wait_ms` after the oldest slot arrived for the batch to fill; asks the
policy which point serves it (showing it the queue): the first k students of the ensemble, or
one of the served configurations (e.g. a multiplexed model); tokenises the batch exactly as the
training data was tokenised (`encode`, truncation to `max_seq_len`) and runs that model once.
A request is answered when all its slots are, with the name of what served each text. A failed
batch fails its requests (HTTP 500) and the worker goes on. While idle the worker wakes every
`tick_s` so the policy can step back up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoprumux.data import Example, collate, encode
from autoprumux.errors import AutoPruMuxError, ConfigError
from autoprumux.models import StudentEnsemble
from autoprumux.student_server._config import ServingConfig
from autoprumux.student_server._policy import Observation, PointKey, ServingPolicy, point_name

log = logging.getLogger("autoprumux.student_server")

Text = str | tuple[str, str]
"""One input: a sentence, or a (first, second) sentence pair for pair tasks."""


def tokenize(texts: Sequence[Text], tokenizer, max_seq_len: int) -> dict[str, torch.Tensor]:
    """One padded batch, tokenised exactly as the training data (`encode`: pairs as
    [CLS] a [SEP] b [SEP], truncation to `max_seq_len`)."""
    examples = [
        Example(t[0], t[1], 0) if isinstance(t, tuple) else Example(t, None, 0) for t in texts
    ]
    return collate(encode(examples, tokenizer, max_seq_len), int(tokenizer.pad_token_id or 0))


class ServingError(AutoPruMuxError):
    """A request that could not be answered; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Prediction:
    """Answers to one request: a label, class probabilities and what served it ("k=2" for the
    first two students, or a configuration's name) per text."""

    labels: list[int]
    probabilities: list[list[float]]
    configurations: list[str]

    @property
    def configuration(self) -> str:
        """What served the request: one name, or the names joined by " + " in text order when
        its texts went to batches served differently."""
        return " + ".join(dict.fromkeys(self.configurations))

    @property
    def active_students(self) -> int | None:
        """The smallest k among the student batches that served it (None: none did)."""
        ks = [int(c[2:]) for c in self.configurations if c.startswith("k=") and c[2:].isdigit()]
        return min(ks) if ks else None


class _Request:
    """One caller's texts; filled slot by slot by the worker."""

    __slots__ = ("texts", "arrived", "done", "labels", "probs", "served", "error", "remaining")

    def __init__(self, texts: Sequence[Text], arrived: float):
        self.texts = list(texts)
        self.arrived = arrived
        self.done = threading.Event()
        self.labels: list[int] = [0] * len(texts)
        self.probs: list[list[float]] = [[] for _ in texts]
        self.served: list[str] = [""] * len(texts)
        self.error: ServingError | None = None
        self.remaining = len(texts)

    def fill(self, i: int, label: int, probs: list[float], served_by: str) -> None:
        self.labels[i] = label
        self.probs[i] = probs
        self.served[i] = served_by
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()

    def fail(self, error: ServingError) -> None:
        if self.error is None:
            self.error = error
        self.done.set()


class DynamicBatcher:
    """Serves a `StudentEnsemble` (any prefix of its students) and named whole models (e.g.
    multiplexed configurations of the same task) from one worker thread, with a
    `ServingPolicy` choosing among them per batch.

    `predict(texts)` may be called from any number of threads. Only the worker touches the models
    and the tokenizer."""

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
        tick_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ):
        config = config or ServingConfig()
        models = dict(models or {})
        if ensemble is None and not models:
            raise ConfigError("nothing to serve: give a student ensemble or at least one model")
        students = ensemble.k if ensemble is not None else 0
        for key in policy.keys:
            if isinstance(key, str) and key not in models:
                raise ConfigError(
                    f"the policy may serve {key!r} but no model of that name is loaded "
                    f"(loaded: {sorted(models) or 'none'}); load it or drop it from the table"
                )
            if isinstance(key, int) and not 1 <= key <= students:
                raise ConfigError(
                    f"the policy may serve k={key} students but the ensemble has {students}"
                )
        served: list[nn.Module] = [*models.values(), *([ensemble] if ensemble else [])]
        positions = min(_max_positions(m) for m in served)
        if config.max_seq_len > positions:
            raise ConfigError(
                f"max_seq_len ({config.max_seq_len}) exceeds the model's {positions} positions; "
                f"use at most {positions}"
            )
        self.ensemble = ensemble.to(device).eval() if ensemble is not None else None
        self.models = {name: m.to(device).eval() for name, m in models.items()}
        self.tokenizer = tokenizer
        self.policy = policy
        self.config = config
        self.max_batch = config.max_batch
        self.max_wait_s = config.max_wait_ms / 1000.0
        self.pair = pair
        self.device = torch.device(device)
        self.tick_s = tick_s
        self.clock = clock
        self._cond = threading.Condition()
        self._queue: deque[tuple[_Request, int]] = deque()
        self._arrivals: deque[tuple[float, int]] = deque()  # (time, examples), the last second
        self._full_batch_rate: float | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._key: PointKey = policy.current
        self._start = clock()
        self._counts = {"batches": 0, "examples": 0, "failed_batches": 0}

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> DynamicBatcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="student-batcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker; requests still queued are answered with 503."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            while self._queue:
                req, _ = self._queue.popleft()
                req.fail(ServingError("the server is shutting down; retry elsewhere", 503))

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---- callers -----------------------------------------------------------------------------
    def submit(self, texts: Sequence[Text]) -> _Request:
        """Queue `texts` (already validated); wait on the returned request's `done` event."""
        if not texts:
            raise ServingError("no texts to classify", 400)
        for i, t in enumerate(texts):
            if isinstance(t, tuple) != self.pair:
                want = "a (first, second) sentence pair" if self.pair else "one string"
                raise ServingError(f"text {i} must be {want}, got {type(t).__name__}", 400)
        now = self.clock()
        req = _Request(texts, now)
        with self._cond:
            if self._stopping:
                raise ServingError("the server is shutting down; retry elsewhere", 503)
            if len(self._queue) + len(texts) > self.config.max_queue:
                raise ServingError(
                    f"the queue holds {len(self._queue)} texts (limit {self.config.max_queue}); "
                    "the server is overloaded, retry later",
                    503,
                )
            self._queue.extend((req, i) for i in range(len(texts)))
            self._arrivals.append((now, len(texts)))
            self._cond.notify_all()
        return req

    def predict(self, texts: Sequence[Text], timeout: float | None = None) -> Prediction:
        """Classify `texts`, blocking until the worker has answered (or `timeout` seconds)."""
        req = self.submit(texts)
        if not req.done.wait(timeout):
            err = ServingError(f"no answer within {timeout} s; the server is overloaded", 503)
            req.fail(err)  # its slots still queued are skipped, not computed
            raise err
        if req.error is not None:
            raise req.error
        return Prediction(req.labels, req.probs, list(req.served))

    def stats(self) -> dict:
        """Queue length, what serves now, counts and the recent changes (times in seconds since
        start)."""
        with self._cond:
            return {
                "queue_length": len(self._queue),
                "serving": point_name(self._key),
                "active_students": self._key if isinstance(self._key, int) else None,
                "students": self.ensemble.k if self.ensemble is not None else 0,
                "depth": self.ensemble.depth if self.ensemble is not None else None,
                "configurations": sorted(self.models),
                "max_batch": self.max_batch,
                "max_wait_ms": self.max_wait_s * 1000.0,
                "worker_alive": self.alive,
                "uptime_s": self.clock() - self._start,
                **self._counts,
                "changes": self.policy.change_count,
                "recent_changes": [
                    {**c.to_dict(), "t": c.t - self._start} for c in self.policy.changes
                ],
                "policy": self.policy.describe(),
            }

    # ---- the worker --------------------------------------------------------------------------
    def _arrival_rate(self, now: float) -> float:
        while self._arrivals and self._arrivals[0][0] < now - 1.0:
            self._arrivals.popleft()
        return float(sum(n for _, n in self._arrivals))  # examples in the last second

    def _next_batch(self) -> tuple[list[tuple[_Request, int]], PointKey] | None:
        """Wait for work (or a tick), consult the policy; None when stopping."""
        with self._cond:
            if not self._queue and not self._stopping:
                self._cond.wait(self.tick_s)
            if self._queue and not self._stopping:
                deadline = self._queue[0][0].arrived + self.max_wait_s
                while len(self._queue) < self.max_batch and not self._stopping:
                    left = deadline - self.clock()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            if self._stopping:
                return None
            now = self.clock()
            obs = Observation(
                queue_length=len(self._queue),
                oldest_wait_s=now - self._queue[0][0].arrived if self._queue else 0.0,
                arrival_rate=self._arrival_rate(now),
                service_rate=self._full_batch_rate,
            )
            self._full_batch_rate = None
            key = self.policy.observe(obs, now)
            self._key = key
            batch: list[tuple[_Request, int]] = []
            while self._queue and len(batch) < self.max_batch:
                slot = self._queue.popleft()
                if slot[0].error is None:  # a failed or abandoned request is not computed
                    batch.append(slot)
            return batch, key

    def _run(self) -> None:
        while True:
            nxt = self._next_batch()
            if nxt is None:
                return
            batch, key = nxt
            if batch:
                self._serve(batch, key)

    def _logits(self, key: PointKey, b: dict[str, torch.Tensor]) -> torch.Tensor:
        ids, mask, types = (
            b[n].to(self.device) for n in ("input_ids", "attention_mask", "token_type_ids")
        )
        if isinstance(key, str):
            return self.models[key](ids, mask, types)
        assert self.ensemble is not None  # checked against the policy's keys at start
        return self.ensemble(ids, mask, types, active=key)

    def _serve(self, batch: list[tuple[_Request, int]], key: PointKey) -> None:
        """Answer every slot of `batch` with the point `key`. When the batch fails and holds
        several requests, each request is retried alone, so one request's failure cannot fail
        the others."""
        t0 = time.perf_counter()
        try:
            b = tokenize(
                [req.texts[i] for req, i in batch], self.tokenizer, self.config.max_seq_len
            )
            with torch.inference_mode():
                logits = self._logits(key, b)
                probs = torch.softmax(logits.float(), dim=-1).cpu()
        except Exception as e:  # noqa: BLE001 - the worker must survive any failure
            groups: dict[int, list[tuple[_Request, int]]] = {}
            for slot in batch:
                groups.setdefault(id(slot[0]), []).append(slot)
            if len(groups) > 1:
                for slots in groups.values():
                    self._serve(slots, key)
                return
            log.exception("inference failed for a request of %d texts", len(batch))
            with self._cond:
                self._counts["failed_batches"] += 1
            batch[0][0].fail(ServingError(f"inference failed: {type(e).__name__}: {e}", 500))
            return
        seconds = time.perf_counter() - t0
        labels = probs.argmax(-1).tolist()
        rows = probs.tolist()
        with self._cond:
            self._counts["batches"] += 1
            self._counts["examples"] += len(batch)
            if len(batch) >= self.max_batch:
                self._full_batch_rate = len(batch) / seconds
        name = point_name(key)
        for (req, i), label, row in zip(batch, labels, rows, strict=True):
            req.fill(i, label, row, name)


def _max_positions(model: nn.Module) -> int:
    """Positions the model embeds (an ensemble's, or a whole model's encoder's)."""
    cfg: Any = getattr(model, "encoder_config", None) or model.get_submodule("encoder").config
    return int(cfg.max_position_embeddings)
