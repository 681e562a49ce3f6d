"""Dynamic batching: many callers, one worker thread, one ensemble call per batch.

Each request's texts enter a queue as separate slots. The worker takes up to `max_batch` slots,
waiting at most `max_wait_ms` after the oldest slot arrived for the batch to fill; asks the
policy for the active students k (showing it the queue); tokenises the batch exactly as the
training data was tokenised (`encode`, truncation to `max_seq_len`) and runs the ensemble once.
A request is answered when all its slots are. A failed batch fails its requests (HTTP 500) and
the worker goes on. While idle the worker wakes every `tick_s` so the policy can restore k.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from autoprumux.data import Example, collate, encode
from autoprumux.errors import AutoPruMuxError, ConfigError
from autoprumux.models import StudentEnsemble
from autoprumux.student_server._config import ServingConfig
from autoprumux.student_server._policy import KPolicy, Observation

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
    """Answers to one request: a label and class probabilities per text, and the active students
    (the smallest k among the batches that served it)."""

    labels: list[int]
    probabilities: list[list[float]]
    active_students: int


class _Request:
    """One caller's texts; filled slot by slot by the worker."""

    __slots__ = ("texts", "arrived", "done", "labels", "probs", "k", "error", "remaining")

    def __init__(self, texts: Sequence[Text], arrived: float):
        self.texts = list(texts)
        self.arrived = arrived
        self.done = threading.Event()
        self.labels: list[int] = [0] * len(texts)
        self.probs: list[list[float]] = [[] for _ in texts]
        self.k: float = math.inf  # the smallest k that served a slot
        self.error: ServingError | None = None
        self.remaining = len(texts)

    def fill(self, i: int, label: int, probs: list[float], k: int) -> None:
        self.labels[i] = label
        self.probs[i] = probs
        self.k = min(self.k, k)
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()

    def fail(self, error: ServingError) -> None:
        if self.error is None:
            self.error = error
        self.done.set()


class DynamicBatcher:
    """Serves a `StudentEnsemble` from one worker thread with a `KPolicy` choosing k.

    `predict(texts)` may be called from any number of threads. Only the worker touches the model
    and the tokenizer."""

    def __init__(
        self,
        ensemble: StudentEnsemble,
        tokenizer,
        policy: KPolicy,
        *,
        config: ServingConfig | None = None,
        pair: bool = False,
        device: str | torch.device = "cpu",
        tick_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ):
        config = config or ServingConfig()
        positions = ensemble.encoder_config.max_position_embeddings
        if config.max_seq_len > positions:
            raise ConfigError(
                f"max_seq_len ({config.max_seq_len}) exceeds the model's {positions} positions; "
                f"use at most {positions}"
            )
        if not 1 <= policy.k <= ensemble.k:
            raise ConfigError(
                f"the policy starts at k={policy.k} but the ensemble has {ensemble.k} students"
            )
        self.ensemble = ensemble.to(device).eval()
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
        self._k = policy.k
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
        return Prediction(req.labels, req.probs, int(req.k))

    def stats(self) -> dict:
        """Queue length, active k, counts and the recent k changes (times in seconds since start)."""
        with self._cond:
            return {
                "queue_length": len(self._queue),
                "active_students": self._k,
                "students": self.ensemble.k,
                "depth": self.ensemble.depth,
                "max_batch": self.max_batch,
                "max_wait_ms": self.max_wait_s * 1000.0,
                "worker_alive": self.alive,
                "uptime_s": self.clock() - self._start,
                **self._counts,
                "k_changes": self.policy.change_count,
                "recent_k_changes": [
                    {**c.to_dict(), "t": c.t - self._start} for c in self.policy.changes
                ],
                "policy": self.policy.describe(),
            }

    # ---- the worker --------------------------------------------------------------------------
    def _arrival_rate(self, now: float) -> float:
        while self._arrivals and self._arrivals[0][0] < now - 1.0:
            self._arrivals.popleft()
        return float(sum(n for _, n in self._arrivals))  # examples in the last second

    def _next_batch(self) -> tuple[list[tuple[_Request, int]], int] | None:
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
            k = self.policy.observe(obs, now)
            self._k = k
            batch: list[tuple[_Request, int]] = []
            while self._queue and len(batch) < self.max_batch:
                slot = self._queue.popleft()
                if slot[0].error is None:  # a failed or abandoned request is not computed
                    batch.append(slot)
            return batch, k

    def _run(self) -> None:
        while True:
            nxt = self._next_batch()
            if nxt is None:
                return
            batch, k = nxt
            if batch:
                self._serve(batch, k)

    def _serve(self, batch: list[tuple[_Request, int]], k: int) -> None:
        """Answer every slot of `batch` at k. When the batch fails and holds several requests,
        each request is retried alone, so one request's failure cannot fail the others."""
        t0 = time.perf_counter()
        try:
            b = tokenize(
                [req.texts[i] for req, i in batch], self.tokenizer, self.config.max_seq_len
            )
            with torch.inference_mode():
                logits = self.ensemble(
                    b["input_ids"].to(self.device),
                    b["attention_mask"].to(self.device),
                    b["token_type_ids"].to(self.device),
                    active=k,
                )
                probs = torch.softmax(logits.float(), dim=-1).cpu()
        except Exception as e:  # noqa: BLE001 - the worker must survive any failure
            groups: dict[int, list[tuple[_Request, int]]] = {}
            for slot in batch:
                groups.setdefault(id(slot[0]), []).append(slot)
            if len(groups) > 1:
                for slots in groups.values():
                    self._serve(slots, k)
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
        for (req, i), label, row in zip(batch, labels, rows, strict=True):
            req.fill(i, label, row, k)
