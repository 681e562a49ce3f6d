"""The default operating-point table: measured at start-up on the serving device.

Throughput per k is timed for the server's whole batch step (tokenise + one ensemble call) at
its max batch, on real texts, k = 1..K side by side (`time_interleaved`), so the table reflects
the machine the server runs on. Accuracy loss per k, when wanted, comes from the dev set
(`student_accuracy_losses`) or from the meta-model's predictions (`meta_accuracy_losses`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING

import torch

from autoprumux.errors import ConfigError
from autoprumux.evaluation import ThroughputConfig, time_interleaved
from autoprumux.models import StudentEnsemble
from autoprumux.student_server._batcher import Text, tokenize
from autoprumux.student_server._policy import OperatingPoint

if TYPE_CHECKING:
    from autoprumux.meta import Recommender
    from autoprumux.pipeline import PruMuxPipeline


def profile_operating_points(
    ensemble: StudentEnsemble,
    tokenizer,
    texts: Sequence[Text],
    *,
    max_batch: int,
    max_seq_len: int,
    device: str = "cpu",
    repeats: int = 5,
    warmup: int = 2,
    accuracy_loss: Mapping[int, float] | None = None,
) -> dict[int, OperatingPoint]:
    """{k: OperatingPoint} for k = 1..K: examples/second of a full batch of `texts` (cycled to
    `max_batch`), with `accuracy_loss[k]` (points) when given."""
    if not texts:
        raise ConfigError("profiling needs at least one text")
    if accuracy_loss is not None and set(accuracy_loss) != set(range(1, ensemble.k + 1)):
        raise ConfigError(
            f"accuracy loss is given for k={sorted(accuracy_loss)}; give it for every k in "
            f"1..{ensemble.k}"
        )
    batch = [texts[i % len(texts)] for i in range(max_batch)]
    dev = torch.device(device)
    ensemble.to(dev).eval()

    def step(k: int) -> torch.Tensor:
        b = tokenize(batch, tokenizer, max_seq_len)
        return ensemble(
            b["input_ids"].to(dev),
            b["attention_mask"].to(dev),
            b["token_type_ids"].to(dev),
            active=k,
        )

    ks = range(1, ensemble.k + 1)
    cfg = ThroughputConfig(
        batch_size=max_batch, seq_len=max_seq_len, warmup=warmup, repeats=repeats, device=device
    )
    timed = time_interleaved({str(k): (partial(step, k), max_batch) for k in ks}, cfg=cfg)
    return {
        k: OperatingPoint(
            k=k,
            examples_per_second=timed[str(k)].examples_per_second,
            accuracy_loss=None if accuracy_loss is None else float(accuracy_loss[k]),
        )
        for k in ks
    }


def student_accuracy_losses(pipe: PruMuxPipeline, ensemble: StudentEnsemble) -> dict[int, float]:
    """{k: baseline dev metric - dev metric of the first k students}, in points."""
    base = pipe.baseline_metrics()["metric"]
    keep = ensemble.active_students
    try:
        out = {}
        for k in range(1, ensemble.k + 1):
            ensemble.active_students = k
            out[k] = base - pipe.dev_metrics(ensemble)["metric"]
    finally:
        ensemble.active_students = keep
    return out


def meta_accuracy_losses(
    recommender: Recommender,
    *,
    k: int,
    depth: int,
    task: str,
    model: str | None = None,
    device: str | None = None,
    pessimistic: bool = True,
) -> dict[int, float]:
    """{k: the meta-model's accuracy loss for k students of `depth`} for k = 1..K, in the
    context of the study on `task` (the top of the interval when `pessimistic`)."""
    from autoprumux.config import Candidate

    configs = [
        Candidate(technique="students", students=j, student_depth=depth) for j in range(1, k + 1)
    ]
    med, _, hi = recommender.predict(configs, task, model=model, device=device)
    pick = hi if pessimistic else med
    return {j: float(pick[j - 1, 0]) for j in range(1, k + 1)}
