"""The default operating-point table: measured at start-up on the serving device.

Throughput per point (k = 1..K students, and each served model such as a multiplexed
configuration) is timed for the server's whole batch step (tokenise + one model call) at its max
batch, on real texts, all points side by side (`time_interleaved`), so the table reflects the
machine the server runs on. Accuracy losses per point, when wanted, are measured
(`student_accuracy_losses`, `model_accuracy_losses`: on the validation split, which chooses, and
on dev, which reports; on dev alone without a split, which then chooses) or predicted by the
meta-model (`meta_accuracy_losses`, chosen on as they are: `PointLosses.predicted`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from autoprumux.errors import ConfigError
from autoprumux.evaluation import ThroughputConfig, time_interleaved
from autoprumux.models import AnyModel, StudentEnsemble
from autoprumux.student_server._batcher import Text, tokenize
from autoprumux.student_server._policy import OperatingPoint, PointKey, PointLosses, point_name

if TYPE_CHECKING:
    from autoprumux.config import Candidate
    from autoprumux.meta import Recommender
    from autoprumux.pipeline import PruMuxPipeline


def profile_operating_points(
    ensemble: StudentEnsemble | None,
    tokenizer,
    texts: Sequence[Text],
    *,
    max_batch: int,
    max_seq_len: int,
    models: Mapping[str, nn.Module] | None = None,
    device: str = "cpu",
    repeats: int = 5,
    warmup: int = 2,
    accuracy_loss: Mapping[PointKey, float | PointLosses] | None = None,
) -> dict[PointKey, OperatingPoint]:
    """{key: OperatingPoint} for k = 1..K students and each named model: examples/second of a
    full batch of `texts` (cycled to `max_batch`), with `accuracy_loss[key]` when given: its
    `PointLosses` (dev and validation losses, or a prediction), or a plain dev loss (points)."""
    if not texts:
        raise ConfigError("profiling needs at least one text")
    models = dict(models or {})
    keys: list[PointKey] = [*range(1, (ensemble.k if ensemble else 0) + 1), *models]
    if not keys:
        raise ConfigError("nothing to profile: give a student ensemble or at least one model")
    if accuracy_loss is not None and set(accuracy_loss) != set(keys):
        missing = [point_name(k) for k in keys if k not in accuracy_loss]
        extra = [point_name(k) for k in accuracy_loss if k not in keys]
        raise ConfigError(
            f"accuracy loss must be given for every served point; missing: {missing or 'none'}, "
            f"not served: {extra or 'none'}"
        )
    batch = [texts[i % len(texts)] for i in range(max_batch)]
    dev = torch.device(device)
    if ensemble is not None:
        ensemble.to(dev).eval()
    for m in models.values():
        m.to(dev).eval()

    def step(key: PointKey) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            b = tokenize(batch, tokenizer, max_seq_len)
            ids, mask, types = (
                b[n].to(dev) for n in ("input_ids", "attention_mask", "token_type_ids")
            )
            if isinstance(key, str):
                return models[key](ids, mask, types)
            assert ensemble is not None
            return ensemble(ids, mask, types, active=key)

        return run

    cfg = ThroughputConfig(
        batch_size=max_batch, seq_len=max_seq_len, warmup=warmup, repeats=repeats, device=device
    )
    timed = time_interleaved({point_name(k): (step(k), max_batch) for k in keys}, cfg=cfg)

    def point(key: PointKey) -> OperatingPoint:
        given = None if accuracy_loss is None else accuracy_loss[key]
        losses = given if isinstance(given, PointLosses) else None
        return OperatingPoint(
            k=None if isinstance(key, str) else key,
            config=key if isinstance(key, str) else None,
            examples_per_second=timed[point_name(key)].examples_per_second,
            accuracy_loss=None
            if given is None
            else float(losses.accuracy_loss if losses else cast(float, given)),
            validation_loss=None if losses is None else losses.validation_loss,
            chosen_on=None if losses is None else losses.chosen_on,
        )

    return {key: point(key) for key in keys}


def model_accuracy_losses(
    pipe: PruMuxPipeline, models: Mapping[str, nn.Module]
) -> dict[PointKey, PointLosses]:
    """{name: the model's losses}: baseline metric minus the model's on dev (reported) and on
    the validation split (chooses; None without a split), in points (`measured_losses`)."""
    return {name: measured_losses(pipe, cast(AnyModel, m)) for name, m in models.items()}


def student_accuracy_losses(
    pipe: PruMuxPipeline, ensemble: StudentEnsemble
) -> dict[PointKey, PointLosses]:
    """{k: the first k students' losses}: baseline metric minus theirs on dev (reported) and on
    the validation split (chooses; None without a split), in points (`measured_losses`)."""
    keep = ensemble.active_students
    try:
        out: dict[PointKey, PointLosses] = {}
        for k in range(1, ensemble.k + 1):
            ensemble.active_students = k
            out[k] = measured_losses(pipe, ensemble)
    finally:
        ensemble.active_students = keep
    return out


def measured_losses(pipe: PruMuxPipeline, model: AnyModel) -> PointLosses:
    """`model`'s dev loss (baseline dev metric minus its own) and validation loss (the same on
    the validation split, scored as an evaluation scores it: `pipeline.validation_loss`), in
    points; chosen on validation, or on dev without a split."""
    from autoprumux.pipeline import DEV_PAIRINGS, validation_loss

    dev = pipe.baseline_metrics()["metric"] - pipe.dev_metrics(model)["metric"]
    return PointLosses(dev, validation_loss(pipe, model, DEV_PAIRINGS))


def meta_accuracy_losses(
    recommender: Recommender,
    *,
    k: int,
    depth: int,
    task: str,
    configs: Mapping[str, Candidate] | None = None,
    model: str | None = None,
    device: str | None = None,
    pessimistic: bool = True,
) -> dict[PointKey, float]:
    """{k: the meta-model's accuracy loss for k students of `depth`} for k = 1..K, and
    {name: its loss} for each of `configs`, in the context of the study on `task` (the top of
    the interval when `pessimistic`). No split measures them: the table is chosen on them as
    they are (`PointLosses.predicted`, chosen_on "meta-model")."""
    from autoprumux.config import Candidate

    keys: list[PointKey] = [*range(1, k + 1), *(configs or {})]
    candidates = [
        Candidate(technique="students", students=j, student_depth=depth) for j in range(1, k + 1)
    ] + list((configs or {}).values())
    med, _, hi = recommender.predict(candidates, task, model=model, device=device)
    pick = hi if pessimistic else med
    return {key: float(pick[i, 0]) for i, key in enumerate(keys)}
